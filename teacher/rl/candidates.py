"""One ReST-EM candidate, measured wherever it runs: in the RL process, or on a Celery worker.

A candidate is a pure function of the student's base weights, the settings and the job (seeded), so it may run
in any process that loaded the same model with the same settings; a job delivered twice gives the same row,
and the driver records each (round, context, k) once. The digest in the job makes a worker started with other
settings fail loudly instead of measuring something else.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import time
import zlib
from dataclasses import asdict, dataclass

from core.config import SealConfig
from core.documents import Passage, passage_from_dict
from evaluation.closed_book import answer_likelihood, evaluate_passage
from teacher.rewards import reward
from teacher.self_edit import build_self_edit

CANDIDATE = "rl-candidate"


class CandidateSettingsMismatch(RuntimeError):
    pass


def seed_of(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode()) & 0x7FFFFFFF


def settings_digest(cfg: SealConfig) -> str:
    """What a candidate's row depends on besides the job: the model, the inner loop, the probes, the seed."""
    keep = {"model": cfg.model.model_dump(), "train": cfg.train.model_dump(), "eval": cfg.eval.model_dump(),
            "format": cfg.teacher.format, "grounding": cfg.teacher.grounding.model_dump(), "seed": cfg.seed, "lambda": cfg.rl.retention_lambda,
            "reward": cfg.rl.reward, "drift_lambda": cfg.rl.drift_lambda, "canary_lambda": cfg.rl.canary_lambda,
            "regime": cfg.rl.regime, "measure_general": cfg.rl.measure_general}
    if cfg.rl.regime == "product":  # the retention set and the canary shape what a candidate learns
        keep["canary"] = cfg.continual.canary.model_dump()
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def passage_json(p: Passage) -> dict:
    return {"title": p.title, "context": p.context,
            "questions": [{"question": q.question, "answer": q.answer} for q in p.questions]}


@dataclass(frozen=True)
class CandidateJob:
    round: int
    teacher: int
    k: int
    raw: str
    passage: dict  # passage_json of the context
    before: float  # the untouched student's probe accuracy on it
    others: list  # [[passage_json, before], ...]: documents whose probes measure forgetting
    gen_each: float  # this candidate's share of the batched sampling call, seconds
    digest: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "CandidateJob":
        return cls(**d)


def probe_accuracy(student, cfg: SealConfig, adapter: str | None, p: Passage) -> float:
    g = evaluate_passage(student, adapter, p, cfg.eval.max_new_tokens, cfg.eval.batch_size)
    return sum(x.contains for x in g) / len(g)


def measures_general(cfg: SealConfig) -> bool:
    r = cfg.rl
    return r.measure_general != "none" or r.drift_lambda > 0 or r.canary_lambda > 0


def candidate_monitor(cfg: SealConfig, student):
    """The general-ability references built on the untouched student once per process: drift targets and the
    base's canary for a retention-aware reward, the retention set for the product regime; None if unused."""
    product = cfg.rl.regime == "product" and cfg.train.retain.weight > 0
    if not (measures_general(cfg) or product):
        return None
    from evaluation.canary import GeneralMonitor

    mon = GeneralMonitor(cfg.continual.canary, cfg.train.retain, cfg.model.cache_dir)
    mon.prepare(student, retain=product)
    return mon


def evaluate_candidate(student, cfg: SealConfig, job: CandidateJob, general=None) -> dict:
    """Train the self-edit into a fresh adapter on the live student (no reload, no new PEFT wrapper), answer
    the context's and the guarded documents' probes in batches, drop the adapter, return the row."""
    if job.digest != settings_digest(cfg):
        raise CandidateSettingsMismatch(
            f"candidate job was made with settings {job.digest}, this process has {settings_digest(cfg)}: start "
            "the workers with the RL run's config (model, train, eval, teacher format/grounding, seed, lambda)")
    p = passage_from_dict(job.passage, "candidate passage")
    t0 = time.perf_counter()
    dense_before = statistics.mean(answer_likelihood(student, None, p.questions))
    se = build_self_edit(p, [job.raw], cfg.teacher.format, cfg.teacher.grounding)
    texts = se.sequences(p, cfg.train.passage_in_training)
    student.drop(CANDIDATE)  # a previous attempt killed between train and drop in this process
    seed = seed_of(cfg.seed, "train", job.round, p.doc_id, job.k)
    if cfg.rl.regime == "product":  # as the continual learner trains: retention against the untouched model
        retain = general.retain_targets if general is not None and cfg.train.retain.weight > 0 else None
        if cfg.train.retain.weight > 0 and retain is None:
            raise ValueError("rl.regime product trains with retention: build the monitor with candidate_monitor()")
        stats = student.train_adapter(texts, CANDIDATE, seed=seed, settings=cfg.train, retain=retain)
    else:  # the paper's inner loop: next-token loss on the self-edit alone
        plain = cfg.train.model_copy(update={"retain": cfg.train.retain.model_copy(update={"weight": 0.0})})
        stats = student.train_adapter(texts, CANDIDATE, seed=seed, settings=plain)
    t1 = time.perf_counter()
    try:
        after = probe_accuracy(student, cfg, CANDIDATE, p)
        dense_after = statistics.mean(answer_likelihood(student, CANDIDATE, p.questions))
        measured = general is not None and measures_general(cfg)
        drift = general.drift(student, [CANDIDATE]) if measured else None
        canary_drop = None  # the adapter answering every general question: its cost in the weights, unrouted
        if measured and (cfg.rl.measure_general == "canary" or cfg.rl.canary_lambda > 0):
            canary_drop = general.canary(student, None).accuracy - general.canary(student, [CANDIDATE]).accuracy
        drops = [max(0.0, before - probe_accuracy(student, cfg, CANDIDATE, passage_from_dict(q, "guarded passage")))
                 for q, before in job.others]
    finally:
        student.drop(CANDIDATE)
    t2 = time.perf_counter()
    forgetting = statistics.mean(drops) if drops else 0.0
    gain = after - job.before
    dense_gain = dense_after - dense_before
    total = time.perf_counter() - t0 + job.gen_each
    return {"round": job.round, "teacher": job.teacher, "doc_id": p.doc_id, "title": p.title, "k": job.k,
            "raw": job.raw, "units": se.units, "dropped": len(se.dropped), "parsed": se.parsed,
            "before": job.before, "after": after, "gain": gain, "forgetting": forgetting,
            "dense_before": dense_before, "dense_after": dense_after, "dense_gain": dense_gain,
            "drift": drift, "canary_drop": canary_drop,
            "reward": reward(dense_gain if cfg.rl.reward == "likelihood" else gain, forgetting,
                             cfg.rl.retention_lambda, drift or 0.0, cfg.rl.drift_lambda, canary_drop or 0.0,
                             cfg.rl.canary_lambda),
            "seconds": {"generate": round(job.gen_each, 3), "train": round(stats.seconds, 3),
                        "evaluate": round(t2 - t1, 3), "total": round(total, 3),
                        "overhead": round(max(0.0, total - job.gen_each - stats.seconds - (t2 - t1)), 3)}}
