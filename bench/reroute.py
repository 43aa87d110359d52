"""An eval run's served figures under another router, without training anything again.

`seal eval` records, for every question of every trained condition, the route it took (own, none, other), the
answer as served, and the answer of the passage's own adapter (oracle). Served is a function of the route alone:
own -> the adapter's answer, none -> the untouched model's answer (the `none` condition's row for the same
question), other -> a miss. So a run measured with one router can be read as served by another router built over
the same passages: this script rebuilds the router from a config's `continual.routing` (e.g. BM25 where the run
used cosine), re-routes every question, and writes a copy of the run whose records carry the new routes, for
`seal report` (paired intervals included).

    python bench/reroute.py results/eval-recite-64 --passages ../shared/data/squad/dev-other-articles.json \\
        --every 2 --limit 64 --set continual.routing.scorer=bm25 --out results/eval-recite-64-bm25 [--complete-only]

--passages/--every/--offset/--limit must select the run's passages (the router holds all of them, as in the run).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAME_ROUTE = ("base", "open-book", "unrouted")  # rows that never meet the router


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--passages", required=True)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--config", type=Path, default=None, help="default: the run's config.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. continual.routing.scorer=bm25")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--complete-only", action="store_true", help="keep only passages with every condition on record")
    ap.add_argument("--conditions", default=None, help="comma list: keep only these conditions (and with "
                    "--complete-only, passages complete for them: a condition measured on fewer passages is left out)")
    args = ap.parse_args(argv)

    from core.config import apply_sets, load_config
    from core.documents import load_passages
    from evaluation.graders import contains, exact_match, f1, recites_other
    from serving.routing import build_routing

    cfg = apply_sets(load_config(args.config or args.run / "config.yaml"), args.set)
    ps = load_passages(args.passages)[args.offset::args.every]
    ps = ps[: args.limit] if args.limit else ps
    docs = {p.doc_id: f"{p.title}\n{p.context}" for p in ps}
    records = [json.loads(line) for line in (args.run / "records.jsonl").read_text().splitlines() if line.strip()]
    missing = {r["doc_id"] for r in records} - set(docs)
    if missing:
        print(f"error: {len(missing)} passage(s) of the run are not in the selected passages: pass the run's "
              "--passages/--every/--offset/--limit", file=sys.stderr)
        return 2
    router = build_routing({d: d for d in docs}, docs, cfg.continual.routing, cfg.continual.canary).router
    print(f"router: {cfg.continual.routing.scorer} over {len(docs)} passages, threshold {router.threshold:.4f}")

    base = {(r["doc_id"], r["set"], r["q"]): r for r in records if r["condition"] == "none"}
    golds = {(r["doc_id"], r["set"], r["q"]): r["gold"] for r in records}
    if args.conditions:
        wanted = {c.strip() for c in args.conditions.split(",") if c.strip()}
        missing = wanted - {r["condition"] for r in records}
        if missing:
            print(f"{args.run}: no records for {', '.join(sorted(missing))}", file=sys.stderr)
            return 2
        records = [r for r in records if r["condition"] in wanted]
    conds = {r["condition"] for r in records}
    by_doc = defaultdict(set)
    for r in records:
        by_doc[r["doc_id"]].add(r["condition"])
    keep = {d for d, c in by_doc.items() if c == conds} if args.complete_only else set(by_doc)
    routes: dict[str, str] = {}
    moved = defaultdict(int)
    out_rows = []
    for r in records:
        if r["doc_id"] not in keep:
            continue
        r = dict(r)
        if r["route"] not in SAME_ROUTE:
            if r["question"] not in routes:
                got = router.route(r["question"]).doc_id
                routes[r["question"]] = got
            got = routes[r["question"]]
            new = "own" if got == r["doc_id"] else "none" if got is None else "other"
            moved[(r["route"], new)] += 1
            if new != r["route"]:
                answer = (r["oracle_answer"] if new == "own" else
                          base[(r["doc_id"], r["set"], r["q"])]["answer"] if new == "none" else "")
                others = [g for (d, s_, q), g in golds.items() if d == r["doc_id"] and s_ == r["set"] and q != r["q"]]
                r.update(answer=answer, em=exact_match(answer, r["gold"]), f1=f1(answer, r["gold"]),
                         contains=contains(answer, r["gold"]),
                         recite=recites_other(answer, r["gold"], others, r["question"]), judge=None, judged=False)
            r["route"] = new
        out_rows.append(r)

    args.out.mkdir(parents=True, exist_ok=True)
    for f in ("self_edits.jsonl", "meta.json"):
        if (args.run / f).is_file():
            shutil.copy(args.run / f, args.out / f)
    if (args.run / "units.jsonl").is_file():  # the kept passages' units of the kept conditions
        with (args.run / "units.jsonl").open() as src, (args.out / "units.jsonl").open("w") as dst:
            for line in src:
                u = json.loads(line)
                if u["doc_id"] in keep and u["condition"] in conds:
                    dst.write(line)
    (args.out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    with (args.out / "records.jsonl").open("w") as f:
        for r in out_rows:
            f.write(json.dumps(r) + "\n")
    (args.out / "reroute.json").write_text(json.dumps(
        {"from": str(args.run), "scorer": cfg.continual.routing.scorer, "threshold": router.threshold,
         "passages_kept": len(keep), "moves": {f"{a}->{b}": n for (a, b), n in sorted(moved.items())}}, indent=2))
    print(f"kept {len(keep)} passages; route moves (old -> new, rows): "
          + ", ".join(f"{a}->{b}: {n}" for (a, b), n in sorted(moved.items())))
    print(f"wrote {args.out}; summarise with: seal report {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
