"""`seal prepare`: learning to learn, once. The student trains one adapter on documents of its own (never the
ones it will be evaluated on) together with closed-book questions about them, in the exact question format it is
asked in later, so that afterwards a document it trains on becomes answerable (Self-Tuning, arXiv 2406.06326;
Physics of LMs 3.1). The adapter ships as a checksummed folder (student/prepared.py) and is folded into the base
at load with `model.prepared`."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from core.documents import Passage
from core.io import atomic_dir
from student.prepared import write_manifest

ADAPTER = "prepared"


def prepare_units(passages: list[Passage], qa_share: float, seed: int) -> tuple[list[str], list[tuple[str, str]]]:
    """(raw passage texts, (question, answer) pairs): every passage once, and a seeded sample of their questions
    sized so that pairs are `qa_share` of all units."""
    from agent.training_data import passage_texts

    texts = [t for p in passages for t in passage_texts(p)]  # a long passage in titled parts, never cut
    qas = [(q.question, q.answer) for p in passages for q in p.questions]
    n = min(len(qas), round(qa_share / (1 - qa_share) * len(texts))) if qa_share > 0 else 0  # share of all units
    rng = random.Random(seed)
    return texts, sorted(rng.sample(qas, n), key=qas.index) if n else []


def data_digest(passages: list[Passage]) -> str:
    h = hashlib.sha256()
    for p in passages:
        h.update(json.dumps([p.title, p.context, [[q.question, q.answer] for q in p.questions]]).encode())
    return h.hexdigest()


def build_prepared(rt, passages: list[Passage], out: Path, general=None, progress: bool = False,
                   command: str = "") -> dict:
    """Train the prepared adapter and write `out` (adapter/ + manifest.json) atomically; returns the manifest."""
    from agent.training_data import render_pair
    from core.documents import QA

    cfg, st = rt.cfg, rt.student
    ps = cfg.prepare
    passages = passages[: ps.max_passages] if ps.max_passages else passages
    texts, qas = prepare_units(passages, ps.qa_share, cfg.seed)
    pairs = [render_pair(st.tokenizer, QA(q, a)) for q, a in qas]
    settings = cfg.train.model_copy(update={"learning_rate": ps.learning_rate, "epochs": ps.epochs,
                                            "batch_size": ps.batch_size, "loss": "nll"})
    retain = general.retain_targets if (ps.retain and general is not None and settings.retain.weight > 0) else None
    stats = st.train_adapter(texts, ADAPTER, seed=cfg.seed, settings=settings, pairs=pairs or None, retain=retain,
                             progress=progress, desc="preparing")
    try:
        with atomic_dir(out) as tmp:
            st.save(ADAPTER, tmp / "adapter")
            manifest = write_manifest(tmp, {
                "command": command, "seed": cfg.seed, "model": cfg.model.source, "data_sha256": data_digest(passages),
                "passages": len(passages), "qa_pairs": len(pairs), "titles": sorted({p.title for p in passages}),
                "settings": settings.model_dump(mode="json") | {"qa_share": ps.qa_share, "retain": retain is not None},
                # no timings in the artifact: a rebuild must be identical byte for byte
                "train": {k: v for k, v in stats.summary().items()
                          if k in ("sequences", "steps", "real_tokens", "loss_first", "loss_last")}})
    finally:
        st.drop(ADAPTER)
    return manifest | {"seconds": stats.seconds}
