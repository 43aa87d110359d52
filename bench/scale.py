"""Routing at scale (issue 27): build time, p50/p95 routing latency, the router's memory and routed-to-own accuracy
at 100, 1,000 and 10,000 documents, on real SQuAD text.

Documents are SQuAD passages: dev.json's (whose gold questions are asked: up to 300 passages), then prep.json's
(other articles), and past those 1,041 the rest are windows of three consecutive prep.json sentences (real text;
distractors, never copies of a passage that is asked about). Routed-to-own is the share of the asked passages'
gold questions that reach their own passage. The routing threshold is calibrated as served (held-out general
questions, serving's quantile and floor).

    python bench/scale.py --docs 100 1000 10000 [--queries 500]

Writes results/scale/summary.json (incrementally, one row per size) and ends with one line per size:
RESULT docs=N build_s=... route_p50_ms=... route_p95_ms=... router_mib=... routed_own=...
Each size is measured with BM25 (the default, reported in the RESULT lines) and tf-idf cosine (the baseline) on
the same documents and questions. The serving half of the issue's bench (resident memory with N adapters, query latency against a one-document
service) is not measured here yet.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def corpus(n: int, seed: int = 0):
    """n documents (doc_id -> text) and the gold questions asked of them. The asked passages are dev.json's; the
    other documents are prep.json passages and then windows of three consecutive prep.json sentences (real text,
    other articles): distractors, never duplicates of a passage that is asked about."""
    from teacher.cloze import sentences

    shared = ROOT.parent / "shared/data/squad"
    dev = json.loads((shared / "dev.json").read_text())
    prep = json.loads((shared / "prep.json").read_text())
    docs, questions = {}, []
    for i, p in enumerate(dev[: min(n, len(dev))]):
        docs[f"d{i}"] = f"{p['title']}\n{p['context']}"
        questions += [(q["question"], f"d{i}") for q in p["questions"]]
    for i, p in enumerate(prep[: max(0, n - len(docs))]):
        docs[f"p{i}"] = f"{p['title']}\n{p['context']}"
    rng = random.Random(seed)
    k = 0
    while len(docs) < n:
        p = prep[k % len(prep)]
        sents = sentences(p["context"]) or [p["context"]]
        a = rng.randrange(len(sents))
        docs[f"x{k}"] = f"{p['title']} ({k // len(prep) + 1})\n" + " ".join(sents[a:a + 3])
        k += 1
    return docs, questions


def measure(n: int, queries: int, seed: int, scorer: str, corpus_: tuple | None = None) -> dict:
    from core.config import CanarySettings, RoutingSettings
    from evaluation.canary import load_canary
    from memory.router import DocumentRouter
    from serving.routing import general_texts

    docs, qs = corpus_ or corpus(n, seed)
    background, calibration = general_texts(CanarySettings())
    held_out = [c.question for c in load_canary()]  # general questions the calibration never saw
    rs = RoutingSettings(scorer=scorer)
    tracemalloc.start()
    t = time.perf_counter()
    router = DocumentRouter(docs, background, rs.floor, scorer=scorer, k1=rs.k1, b=rs.b)
    router.calibrate(calibration, rs.quantile, rs.floor)
    build = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rng = random.Random(seed)
    asked = rng.sample(qs, min(queries, len(qs)))
    lat, own, none, top1 = [], 0, 0, 0
    for q, want in asked:
        t = time.perf_counter()
        r = router.route(q)
        lat.append(1000 * (time.perf_counter() - t))
        own += r.doc_id == want
        none += r.doc_id is None
        s = router.scores(q)
        top1 += router.ids[max(range(len(s)), key=s.__getitem__)] == want
    general = [router.route(q).doc_id is not None for q in held_out]
    lat.sort()
    return {"docs": n, "scorer": scorer, "asked_passages": sum(d.startswith("d") for d in docs),
            "build_s": round(build, 3), "router_mib": round(peak / 2**20, 1),
            "route_p50_ms": round(statistics.median(lat), 3), "route_p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 3),
            "questions": len(asked), "routed_own": round(own / max(1, len(asked)), 4),
            "top1_own": round(top1 / max(1, len(asked)), 4), "routed_none": round(none / max(1, len(asked)), 4),
            "threshold": round(router.threshold, 4), "general_routed_held_out": round(sum(general) / len(general), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scorers", nargs="+", default=["bm25", "cosine"],
                    help="the first is reported in RESULT lines; the others are baselines in the same run")
    ap.add_argument("--out", type=Path, default=ROOT / "results/scale")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.docs:
        c = corpus(n, args.seed)
        for scorer in args.scorers:
            row = measure(n, args.queries, args.seed, scorer, c)
            rows.append(row)
            (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
            print(json.dumps(row), flush=True)
    print("\nRouted to own: the asked passages' gold questions that reach their own passage (top-1 own: before the "
          "threshold). General routed: the canary's general questions (held out from calibration) sent to an "
          "adapter.")
    print("\n| docs | scorer | build s | router MiB (peak) | route p50 ms | route p95 ms | routed to own | top-1 own | "
          "to none | general routed |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['docs']} | {r['scorer']} | {r['build_s']} | {r['router_mib']} | {r['route_p50_ms']} | "
              f"{r['route_p95_ms']} | {100 * r['routed_own']:.1f}% | {100 * r['top1_own']:.1f}% | "
              f"{100 * r['routed_none']:.1f}% | {100 * r['general_routed_held_out']:.1f}% |")
    main_scorer = args.scorers[0]
    for r in rows:
        if r["scorer"] != main_scorer:
            continue
        base = {x["scorer"]: x for x in rows if x["docs"] == r["docs"] and x["scorer"] != main_scorer}
        vs = " ".join(f"routed_own_vs_{k}={r['routed_own'] / max(v['routed_own'], 1e-9):.2f}" for k, v in base.items())
        print(f"RESULT docs={r['docs']} scorer={main_scorer} build_s={r['build_s']} route_p50_ms={r['route_p50_ms']} "
              f"route_p95_ms={r['route_p95_ms']} router_mib={r['router_mib']} routed_own={r['routed_own']} {vs}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
