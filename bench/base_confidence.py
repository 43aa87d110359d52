"""Should the untouched model keep the questions it is sure of? (issue 27's near-topic safety, issue 26's canary)

A general question that shares words with a learned document is routed to that document and answered from the
adapter's recitation, which can cost a right answer ("What language is mainly spoken in Brazil?" read from a
recitation of the Normans passage). One remedy the issue names: compare by likelihood. Here the untouched model
answers every question closed-book and its own answer's mean log-probability per token (end of text included) is
its confidence; a policy keeps a routed question on the untouched model when that confidence is at least tau.

This bench measures, without changing the service, what each tau would do:
- general questions (the canary, held out; the near-topic set): how many the router sends to a document, and how
  many of those the policy gives back to the untouched model;
- the documents' own questions (SQuAD's and the reworded ones) of an eval run, as served there: how many the policy
  would move to the untouched model, and the served accuracy after the move (the untouched model's answer is graded
  for those), against the run as it is.
tau is set from the routing calibration's general questions (never the canary): the confidence that a given share
of them reaches.

    python bench/base_confidence.py --run results/eval-lean-64 --condition passage-repeat+recite

Writes OUT/questions.jsonl (every question's base answer and confidence) and OUT/summary.json; ends with
RESULT tau_share=... canary_routed=... canary_routed_after=... own_served=... own_served_after=...
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def confidences(student, questions: list[str], max_new_tokens: int, batch_size: int) -> list[tuple[str, float]]:
    """The untouched model's greedy closed-book answer to each question and its mean log-probability per token."""
    from evaluation.closed_book import answer, question_prompt
    from student.generation import render_prompt
    from student.likelihood import answer_logprobs

    answers = answer(student, None, questions, max_new_tokens, batch_size)
    pairs = [(render_prompt(student.tokenizer, question_prompt(q)), a) for q, a in zip(questions, answers)]
    with student.use(None) as m:
        lp = answer_logprobs(m, student.tokenizer, pairs, batch_size)
    return list(zip(answers, lp))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a `seal eval` run (its records give the served answers)")
    ap.add_argument("--condition", default="passage-repeat+recite", help="the served condition of the run")
    ap.add_argument("--passages", type=Path, default=ROOT.parent / "shared/data/squad/dev-other-articles.json")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--near-topic", type=Path, default=ROOT / "evaluation/data/near_topic.json")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/default.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 0.95],
                    help="tau = the confidence this share of the calibration's general questions reaches")
    ap.add_argument("--out", type=Path, default=ROOT / "results/base-confidence")
    args = ap.parse_args(argv)

    from core.config import apply_sets, load_config
    from core.documents import load_passages
    from core.io import append_jsonl, read_jsonl
    from evaluation.canary import load_canary
    from evaluation.graders import contains
    from serving.routing import build_routing, general_texts
    from student.runtime import open_runtime

    cfg = apply_sets(load_config(args.config), args.sets)
    ps = load_passages(args.passages)[:: args.every][: args.limit]
    docs = {p.doc_id: f"{p.title}\n{p.context}" for p in ps}
    routing = build_routing({d: d for d in docs}, docs, cfg.continual.routing, cfg.continual.canary)
    _, calibration = general_texts(cfg.continual.canary)
    canary = load_canary(cfg.continual.canary.file)
    near = json.loads(args.near_topic.read_text())["questions"]
    recs = [r for r in read_jsonl(args.run / "records.jsonl")]
    served = {(r["doc_id"], r["set"], r["q"]): r for r in recs if r["condition"] == args.condition}
    if not served:
        raise SystemExit(f"{args.run}: no records of condition {args.condition!r}")
    own = [r for r in served.values()]
    asked = {"calibration": list(calibration), "canary": [c.question for c in canary],
             "near": [q["question"] for q in near], "own": [r["question"] for r in own]}

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "questions.jsonl"
    have = {(r["kind"], r["question"]): r for r in read_jsonl(path)} if path.exists() else {}
    rt = open_runtime(cfg)
    for kind, qs in asked.items():
        todo = [q for q in dict.fromkeys(qs) if (kind, q) not in have]
        for i in range(0, len(todo), 32):  # written as it goes: a rerun resumes
            chunk = todo[i:i + 32]
            for q, (a, lp) in zip(chunk, confidences(rt.student, chunk, cfg.eval.max_new_tokens, cfg.eval.batch_size)):
                row = {"kind": kind, "question": q, "answer": a, "logprob": lp}
                append_jsonl(path, row)
                have[(kind, q)] = row
            print(f"  {kind}: {min(i + 32, len(todo))}/{len(todo)}", flush=True)

    conf = {k: [have[(k, q)]["logprob"] for q in qs] for k, qs in asked.items()}
    cal = sorted(conf["calibration"], reverse=True)
    canary_ok = [c.correct(have[("canary", c.question)]["answer"]) for c in canary]
    near_ok = [contains(have[("near", q["question"])]["answer"], q["answer"]) > 0 for q in near]
    route = lambda q: routing.router.route(q).doc_id  # noqa: E731
    canary_routed = [route(c.question) is not None for c in canary]
    near_routed = [route(q["question"]) is not None for q in near]
    own_base_ok = [contains(have[("own", r["question"])]["answer"], r["gold"]) > 0 for r in own]
    # served as the configured router serves it (the run may have been routed by another): own -> the adapter's
    # answer (the run's oracle), none -> the untouched model's, another document -> a miss (bench/reroute.py)
    own_route = [route(r["question"]) for r in own]
    own_routed_own = [d == r["doc_id"] for d, r in zip(own_route, own)]
    own_served_ok = [(r["oracle_contains"] > 0) if d == r["doc_id"] else b if d is None else False
                     for d, r, b in zip(own_route, own, own_base_ok)]
    rows = []
    for share in [None, *args.shares]:
        tau = float("inf") if share is None else cal[min(len(cal) - 1, int(share * len(cal)) - 1)]
        keep = lambda lp: lp >= tau  # noqa: E731
        c_after = [r and not keep(lp) for r, lp in zip(canary_routed, conf["canary"])]
        n_after = [r and not keep(lp) for r, lp in zip(near_routed, conf["near"])]
        moved = [ro and keep(lp) for ro, lp in zip(own_routed_own, conf["own"])]
        after = [b if m else s for m, b, s in zip(moved, own_base_ok, own_served_ok)]
        rows.append({"share": share, "tau": tau, "canary_routed": sum(c_after), "near_routed": sum(n_after),
                     "canary_routed_wrong_base": sum(r and not ok for r, ok in zip(c_after, canary_ok)),
                     "near_routed_base_right": sum(r and ok for r, ok in zip(n_after, near_ok)),
                     "own_moved": sum(moved), "own_served": sum(after), "own": len(own),
                     "own_moved_base_right": sum(m and b for m, b in zip(moved, own_base_ok)),
                     "own_moved_served_right": sum(m and s for m, s in zip(moved, own_served_ok))})
    summary = {"run": str(args.run), "condition": args.condition, "passages": len(ps), "rows": rows,
               "canary": len(canary), "near": len(near), "calibration": len(cal),
               "mean_logprob": {k: sum(v) / len(v) for k, v in conf.items()}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nMean confidence (log-prob per token of its own answer): " +
          ", ".join(f"{k} {v:.2f}" for k, v in summary["mean_logprob"].items()))
    print(f"\n| keep on base when confidence >= | tau | canary routed (of {len(canary)}) | near-topic routed "
          f"(of {len(near)}; base right) | own questions moved to base (base right / served right) | own served "
          f"right (of {len(own)}) |\n|---|---|---|---|---|---|")
    for r in rows:
        name = "never (today)" if r["share"] is None else f"{100 * r['share']:.0f}% of general questions"
        print(f"| {name} | {r['tau']:.3f} | {r['canary_routed']} | {r['near_routed']} ({r['near_routed_base_right']}) | "
              f"{r['own_moved']} ({r['own_moved_base_right']} / {r['own_moved_served_right']}) | "
              f"{r['own_served']} ({100 * r['own_served'] / max(1, r['own']):.1f}%) |")
    for r in rows[1:]:
        print(f"RESULT tau_share={r['share']} tau={r['tau']:.3f} canary_routed={rows[0]['canary_routed']} "
              f"canary_routed_after={r['canary_routed']} near_routed={rows[0]['near_routed']} "
              f"near_routed_after={r['near_routed']} own_served={rows[0]['own_served']}/{len(own)} "
              f"own_served_after={r['own_served']}/{len(own)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
