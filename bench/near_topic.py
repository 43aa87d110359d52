"""Near-topic safety, routing half (issue 27): how many general questions that share words with learned documents
the served router sends to a document's adapter (where they would be answered from that document), against the
canary's general questions, with every passage of the eval run in the router.

    python bench/near_topic.py [--passages ../shared/data/squad/dev-other-articles.json --every 2 --limit 64]

Prints each routed near-topic question with the document it went to, writes results/near-topic/routing.json and
ends with RESULT near_topic=N routed=... canary_routed=...

With --answers (SmolLM2 by default config; trains one adapter per document that a near-topic question routes to,
with the configured recipe) it also measures the answer half as served: every near-topic question answered by the
untouched model and by the service (routed questions by the configured serving.answer, recite-then-read by
default; the rest meet the untouched weights), counted where the untouched model answers it; and beside it the
same documents' own gold questions as served against the untouched model. Rows go to OUT/answers.jsonl as each
document finishes (a rerun resumes); ends with
RESULT near_topic_answered=... of_base=... own_served=... own_base=...
"""
from __future__ import annotations

import argparse
import json
import sys
import time
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
    ap.add_argument("--answers", action="store_true", help="also train the routed documents and measure answers")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/default.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override KEY=VALUE")
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
    if args.answers:
        answers(args, ps, routing.router)
    return 0


def answers(args, ps, router) -> None:
    """The answer half: adapters for the documents near-topic questions reach, then base against served."""
    from agent.training_data import build_mix, document_units
    from core.config import apply_sets, load_config, recipe_config
    from core.documents import QA
    from core.io import append_jsonl, read_jsonl
    from evaluation.closed_book import answer, answer_routed_recite, grade_answers
    from serving.routing import AdapterRouting
    from student.runtime import open_runtime
    from teacher.passages import recitation_parts

    cfg = apply_sets(load_config(args.config), args.sets)
    if cfg.continual.routing.scorer != args.scorer:
        cfg = apply_sets(cfg, [f"continual.routing.scorer={args.scorer}"])
    rc = recipe_config(cfg, cfg.continual.recipe) if cfg.continual.recipe else cfg
    near = json.loads(args.questions.read_text())["questions"]
    by_id = {p.doc_id: p for p in ps}
    targets: dict[str, list[int]] = {}
    for i, q in enumerate(near):
        r = router.route(q["question"])
        if r.doc_id is not None:
            targets.setdefault(r.doc_id, []).append(i)
    rt = open_runtime(cfg)
    st, ev = rt.student, cfg.eval
    path = args.out / "answers.jsonl"
    done = {r["doc_id"]: r for r in read_jsonl(path)} if path.exists() else {}
    base_near = answer(st, None, [q["question"] for q in near], ev.max_new_tokens, ev.batch_size)
    base_ok = [g.contains for g in grade_answers([QA(q["question"], q["answer"]) for q in near],
                                                 base_near)]
    for n, (doc_id, idx) in enumerate(sorted(targets.items())):
        if doc_id in done:
            continue
        p = by_id[doc_id]
        t0 = time.perf_counter()
        units = document_units(p, rc.continual, cfg.seed + n)
        if units is None:
            raise SystemExit("the configured recipe needs the teacher (self-edit): run with a teacher-free recipe")
        with st.use(None) as m:
            mix = build_mix(units, st.tokenizer, rc.train.loss, passage=p, model=m, k=rc.train.retain.topk,
                            temperature=rc.train.distill_temperature)
        if rc.train.retain.weight > 0:
            raise SystemExit(f"recipe {cfg.continual.recipe!r} trains with retention: this bench trains without it")
        st.train_adapter(mix.texts, "near", settings=rc.train, pairs=mix.pairs or None, soft=mix.soft or None,
                         seed=cfg.seed + n)
        train_s = time.perf_counter() - t0
        routing = AdapterRouting(router, {doc_id: "near"})
        qs = [near[i]["question"] for i in idx]
        own = [qa.question for qa in p.questions]
        if cfg.serving.answer == "recite":
            memo: dict = {}
            served = answer_routed_recite(st, routing, qs + own, lambda _d: recitation_parts(p), ev.max_new_tokens,
                                          ev.batch_size, memo, cfg.serving.recite_parts)
        else:
            served = answer(st, routing, qs + own, ev.max_new_tokens, ev.batch_size)
        own_base = answer(st, None, own, ev.max_new_tokens, ev.batch_size)
        st.drop("near")
        g_near = grade_answers([QA(near[i]["question"], near[i]["answer"]) for i in idx],
                               served[:len(qs)])
        g_own = grade_answers(list(p.questions), served[len(qs):])
        g_own_base = grade_answers(list(p.questions), own_base)
        row = {"doc_id": doc_id, "title": p.title, "train_s": round(train_s, 1),
               "near": [{"question": near[i]["question"], "answer": near[i]["answer"], "base": base_near[i],
                         "base_ok": base_ok[i], "served": a, "served_ok": g.contains}
                        for i, a, g in zip(idx, served[:len(qs)], g_near)],
               "own_served": [g.contains for g in g_own], "own_base": [g.contains for g in g_own_base],
               "routes_own": [r.doc_id == doc_id for r in routing.routes(own)]}
        append_jsonl(path, row)
        done[doc_id] = row
        print(f"  {p.title}: near {int(sum(x['served_ok'] for x in row['near']))}/{len(idx)} served vs "
              f"{sum(x['base_ok'] for x in row['near'])} base; own {sum(row['own_served'])}/{len(own)} served vs "
              f"{sum(row['own_base'])} base ({train_s:.0f}s)", flush=True)
    served_ok = list(base_ok)  # unrouted questions meet the untouched weights: the base's answer is the served one
    for row in done.values():
        for x in row["near"]:
            served_ok[next(i for i, q in enumerate(near) if q["question"] == x["question"])] = x["served_ok"]
    counted = [i for i, ok in enumerate(base_ok) if ok]
    kept = sum(served_ok[i] for i in counted)
    own_s = [v for r in done.values() for v in r["own_served"]]
    own_b = [v for r in done.values() for v in r["own_base"]]
    res = {"near_topic": len(near), "base_answers": len(counted), "served_answers_of_those": kept,
           "of_base": kept / max(1, len(counted)), "served_all": sum(served_ok) / len(near),
           "base_all": sum(base_ok) / len(near), "routed_documents": len(done),
           "own_served": sum(own_s) / max(1, len(own_s)), "own_base": sum(own_b) / max(1, len(own_b)),
           "own_questions": len(own_s), "serving_answer": cfg.serving.answer, "recipe": cfg.continual.recipe}
    (args.out / "answers.json").write_text(json.dumps(res, indent=2))
    print(f"RESULT near_topic_answered={kept}/{len(counted)} of_base={res['of_base']:.3f} "
          f"own_served={res['own_served']:.3f} own_base={res['own_base']:.3f} documents={len(done)}")


if __name__ == "__main__":
    sys.exit(main())
