"""Near-topic safety, routing half (issue 27): how many general questions that share words with learned documents
the served router sends to a document's adapter (where they would be answered from that document), against the
canary's general questions, with every passage of the eval run in the router.

    python bench/near_topic.py [--passages ../shared/data/squad/dev-other-articles.json --every 2 --limit 64]

Prints each routed near-topic question with the document it went to, writes results/near-topic/routing.json and
ends with RESULT near_topic=N routed=... canary_routed=... The answer half (base against prod on these questions,
with adapters trained) is not measured here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=Path, default=ROOT.parent / "shared/data/squad/dev-other-articles.json")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--questions", type=Path, default=ROOT / "evaluation/data/near_topic.json")
    ap.add_argument("--out", type=Path, default=ROOT / "results/near-topic")
    ap.add_argument("--scorer", choices=("bm25", "cosine"), default="bm25", help="the router's scorer (config default bm25)")
    args = ap.parse_args(argv)

    from core.config import CanarySettings, RoutingSettings
    from core.documents import load_passages
    from evaluation.canary import load_canary
    from serving.routing import build_routing

    ps = load_passages(args.passages)[:: args.every][: args.limit]
    docs = {p.doc_id: f"{p.title}\n{p.context}" for p in ps}
    titles = {p.doc_id: p.title for p in ps}
    routing = build_routing({d: d for d in docs}, docs, RoutingSettings(scorer=args.scorer), CanarySettings())
    near = [q["question"] for q in json.loads(args.questions.read_text())["questions"]]
    canary = [q.question for q in load_canary(None)]
    routed = [(q, r) for q, r in zip(near, routing.routes(near)) if r.doc_id is not None]
    canary_routed = sum(r.doc_id is not None for r in routing.routes(canary))
    for q, r in routed:
        print(f"{r.score:.3f}  {q!r} -> {titles[r.doc_id]!r}")
    res = {"scorer": args.scorer, "passages": len(ps), "threshold": routing.router.threshold, "near_topic": len(near),
           "routed": len(routed) / len(near), "canary": len(canary), "canary_routed": canary_routed / len(canary),
           "examples": [{"question": q, "document": titles[r.doc_id], "score": r.score} for q, r in routed]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing.json").write_text(json.dumps(res, indent=2))
    print(f"RESULT scorer={args.scorer} near_topic={len(near)} routed={res['routed']:.3f} canary_routed={res['canary_routed']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
