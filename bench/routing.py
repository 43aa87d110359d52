"""How well the adapter router (memory/router.py) sends a document's questions to that document and keeps
general questions away from every document, as the number of learned documents grows.

For N learned documents (dev passages drawn with a seed, several draws), the router is built as the product
builds it (idf over the documents + the shipped general background, threshold calibrated on the 240 general
retention questions at `--quantile`), then asked every gold question of the N documents (routed to its own
document = hit) and the 151 canary questions (held out from calibration: routed anywhere = a false route).
`--dense` also scores the alternative the product does not use: the untouched model's mean-pooled last hidden
state (cosine, centred), top-1 only.

    python bench/routing.py --out results/routing [--docs 1,8,32,128] [--draws 3] [--dense]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", default=str(ROOT.parent / "shared/data/squad/dev.json"))
    ap.add_argument("--out", default="results/routing")
    ap.add_argument("--docs", default="1,8,32,128")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--quantile", type=float, default=0.98)
    ap.add_argument("--min-score", type=float, default=None, help="floor (default: the scorer's)")
    ap.add_argument("--scorer", choices=("bm25", "cosine"), default="bm25")
    ap.add_argument("--dense", action="store_true")
    a = ap.parse_args(argv)

    from evaluation.canary import load_canary
    from core.config import CanarySettings, RoutingSettings
    from serving.routing import build_routing
    from core.documents import load_passages

    pool = [p for p in load_passages(a.passages) if p.questions]
    canary = [c.question for c in load_canary()]
    rs = RoutingSettings(quantile=a.quantile, min_score=a.min_score, scorer=a.scorer)
    rows = []
    for n in map(int, a.docs.split(",")):
        hits, top1, false, thr = [], [], [], []
        for draw in range(a.draws):
            ps = random.Random(draw).sample(pool, n)
            docs = {p.doc_id: f"{p.title}\n{p.context}" for p in ps}
            r = build_routing({d: d for d in docs}, docs, rs, CanarySettings())
            thr.append(r.router.threshold)
            for p in ps:
                for q in p.questions:
                    s = r.router.scores(q.question)
                    top1.append(r.router.ids[max(range(len(s)), key=s.__getitem__)] == p.doc_id)
                    hits.append(r.router.route(q.question).doc_id == p.doc_id)
            false += [x.doc_id is not None for x in r.routes(canary)]
        row = {"docs": n, "draws": a.draws, "threshold": statistics.mean(thr), "top1_own": statistics.mean(top1),
               "routed_to_own": statistics.mean(hits), "canary_routed": statistics.mean(false),
               "questions": len(hits)}
        rows.append(row)
        print(f"docs={n:4d} threshold={row['threshold']:.3f} top1-own={row['top1_own']:.3f} "
              f"routed-to-own={row['routed_to_own']:.3f} canary-routed={row['canary_routed']:.3f}", flush=True)
    dense = _dense(pool, canary, a) if a.dense else None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"quantile": a.quantile, "min_score": a.min_score, "scorer": a.scorer, "rows": rows,
                                                  "dense_top1_own": dense}, indent=2))
    print("\n| documents learned | threshold | top-1 own document | routed to own document | canary routed |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['docs']} | {r['threshold']:.3f} | {100 * r['top1_own']:.1f}% | {100 * r['routed_to_own']:.1f}% "
              f"| {100 * r['canary_routed']:.1f}% |")
    if dense is not None:
        print(f"dense (mean-pooled hidden state) top-1 own document at 64 documents: {100 * dense:.1f}%")
    for r in rows:
        print(f"RESULT docs={r['docs']} routed_to_own={r['routed_to_own']:.4f} canary_routed={r['canary_routed']:.4f}")
    return 0


def _dense(pool, canary, a) -> float:
    """Top-1 own-document rate of the untouched model's mean-pooled last hidden state, 64 documents."""
    import numpy as np
    import torch

    from core.config import load_config
    from student.runtime import open_runtime
    from student.embedding import embed

    torch.set_num_threads(1)
    cfg = load_config(ROOT / "configs/default.yaml")
    st = open_runtime(cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"threads": 1})})).student
    ps = random.Random(0).sample(pool, 64)
    d = embed(st, [f"{p.title}\n{p.context}" for p in ps])
    mu = d.mean(0)
    d = (d - mu) / np.linalg.norm(d - mu, axis=1, keepdims=True)
    own, qs = zip(*[(i, q.question) for i, p in enumerate(ps) for q in p.questions])
    e = embed(st, list(qs))
    e = (e - mu) / np.linalg.norm(e - mu, axis=1, keepdims=True)
    return float(np.mean((e @ d.T).argmax(1) == np.array(own)))


if __name__ == "__main__":
    raise SystemExit(main())
