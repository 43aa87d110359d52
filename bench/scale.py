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
the same documents and questions. 
The serving half (--serving, on by default): a StudentServer in this process on the configured model, with N
documents in memory and one version holding N rank-`train.rank` adapters (synthetic: random deltas, `--distinct`
distinct files hard-linked under N ids, so 10,000 adapters fit on disk; each is still checksummed and loaded on its
own when routed). `--serve-queries` gold questions of the asked passages are answered closed-book through the
router and the LRU adapter cache (serving.adapter_cache_mib); the same prompts are answered by a one-document
service whose one adapter every prompt meets (the baseline, in the same run). Reported: resident memory above the
base model (mem_gib), query p50/p95 and their ratio to the baseline, adapter loads. Answers are direct (the
routed adapter answers); recite-then-read adds one recitation per (adapter, part) on top, cached.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
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


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def build_service(rt, docs: dict[str, str], state: Path, distinct: int, seed: int):
    """A memory store with `docs` and a stack whose prod version has one adapter per document: `distinct` random
    adapters saved once, hard-linked under every other id (same bytes, same checksum, loaded separately)."""
    import hashlib
    import os
    import shutil

    import torch

    from core.documents import Passage
    from memory.store import MemoryStore
    from student.stack import AdapterRef, StackStore

    shutil.rmtree(state, ignore_errors=True)
    mem, store = MemoryStore(state / "memory.sqlite"), StackStore(state / "stack")
    st = rt.student
    templates = []
    for j in range(min(distinct, len(docs))):
        name = f"synthetic{j}"
        st.add_adapter(name, seed=seed + j)
        g = torch.Generator().manual_seed(seed + j)
        with torch.no_grad():
            for n, prm in st.peft.named_parameters():
                if f".{name}." in n and "lora_B" in n:  # LoRA starts with B = 0 (no delta): give it one
                    prm.copy_(torch.randn(prm.shape, generator=g) * 1e-3)
        folder = st.save(name, state / "templates" / name)
        st.drop(name)
        files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir()) if f.is_file()}
        templates.append((folder, files))
    own, refs = {}, []
    with store.writer():
        for i, (key, text) in enumerate(docs.items()):
            title, _, context = text.partition("\n")
            p = Passage(title, context or title)
            mem.add_document(p, [])
            own[key] = p.doc_id
            folder, files = templates[i % len(templates)]
            dest = store.adapter_dir(f"a{i + 1:06d}")
            dest.mkdir(parents=True)
            for f in folder.iterdir():
                os.link(f, dest / f.name)
            refs.append(AdapterRef(f"a{i + 1:06d}", (p.doc_id,), st.settings.rank, "lora", files))
        store.commit(refs, parent=None, move=("prod",))
    return mem, store, own


def serve_queries(rt, cfg, docs: dict[str, str], prompts: list[tuple[str, str]], state: Path, distinct: int,
                  max_tokens: int, seed: int, warmup: list[tuple[str, str]] = ()) -> dict:
    """Answer `prompts` ((question, text routed by)) through a StudentServer over `docs`: latencies, loads. The
    `warmup` prompts are answered first and not timed: a long-running service is measured in its steady state
    (adapter slots built), not while it builds its first ones."""
    from evaluation.closed_book import question_prompt
    from serving.routing import RoutingCache
    from serving.server import StudentServer

    mem, store, _ = build_service(rt, docs, state, distinct, seed)
    settings = cfg.serving.model_copy(update={"max_wait_ms": 0.0})
    srv = StudentServer(rt.student, store, "base", settings=settings,
                        routing=RoutingCache(mem, cfg.continual.routing, cfg.continual.canary))
    tok = rt.student.tokenizer
    lat, routed = [], 0
    try:
        srv.warm_routing("seal-student@prod")
        for timed, batch in ((False, warmup), (True, prompts)):
            if timed:
                counts = dict(rt.student.load_counts)
            for q, route_by in batch:
                prompt = tok.apply_chat_template([{"role": "user", "content": question_prompt(q)}],
                                                 add_generation_prompt=True, tokenize=False)
                t = time.perf_counter()
                g = srv.generate("seal-student@prod", prompt, max_tokens, route_text=route_by)
                if timed:
                    lat.append(1000 * (time.perf_counter() - t))
                    routed += bool(g.adapters)
        loaded = len(srv.cache.ids())
        loads = {k: v - counts[k] for k, v in rt.student.load_counts.items()}
    finally:
        srv.close()
        for a in list(rt.student.adapters()):
            rt.student.drop(a)
        mem.close()
    lat.sort()
    return {"query_p50_ms": round(statistics.median(lat), 1), "query_p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 1),
            "routed_share": round(routed / max(1, len(prompts)), 3), "adapters_loaded_at_end": loaded,
            "loads_built": loads["built"], "loads_filled": loads["filled"], "warmup": len(warmup)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scorers", nargs="+", default=["bm25", "cosine"],
                    help="the first is reported in RESULT lines; the others are baselines in the same run")
    ap.add_argument("--out", type=Path, default=ROOT / "results/scale")
    ap.add_argument("--serving", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the serving half (memory and query latency with N adapters)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/default.yaml", help="the config the serving half loads (default: defaults)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override KEY=VALUE")
    ap.add_argument("--serve-queries", type=int, default=100, help="questions answered per size (and by the baseline)")
    ap.add_argument("--warmup", type=int, default=40, help="untimed questions answered first (other passages' "
                    "questions): the steady state of a long-running service, its adapter slots built")
    ap.add_argument("--distinct", type=int, default=16, help="distinct synthetic adapter files (hard-linked to N ids)")
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rt = cfg = None
    serving_rows: dict[int, dict] = {}
    if args.serving:
        import tempfile

        from agent.worker import release_freed_memory
        from core.config import apply_sets, load_config
        from student.runtime import open_runtime

        cfg = apply_sets(load_config(args.config), args.sets)
        rt = open_runtime(cfg)
        tmp = Path(tempfile.mkdtemp(prefix="scale-serving-", dir=args.out))
        base_rss = rss_gib()
        dev = corpus(1, args.seed)
        one_doc = next(iter(dev[0].values()))
        _, qs_all = corpus(min(args.docs), args.seed)  # questions whose passages every size holds
        rng = random.Random(args.seed + 1)
        picked = rng.sample(qs_all, min(args.serve_queries + args.warmup, len(qs_all)))
        asked, warm = picked[:args.serve_queries], picked[args.serve_queries:]
        # the baseline: a one-document service whose adapter every prompt meets (routed by its document's text)
        baseline = serve_queries(rt, cfg, dev[0], [(q, one_doc) for q, _ in asked], tmp / "n1", 1,
                                 args.max_tokens, args.seed, warmup=[(q, one_doc) for q, _ in warm])
        release_freed_memory()
        baseline["mem_gib"] = round(rss_gib() - base_rss, 3)
        print(json.dumps({"baseline": baseline}), flush=True)
    rows = []
    for n in args.docs:
        c = corpus(n, args.seed)
        for scorer in args.scorers:
            row = measure(n, args.queries, args.seed, scorer, c)
            if args.serving and scorer == args.scorers[0]:
                sv = serve_queries(rt, cfg, c[0], [(q, q) for q, _ in asked], tmp / f"n{n}", args.distinct,
                                   args.max_tokens, args.seed, warmup=[(q, q) for q, _ in warm])
                release_freed_memory()
                sv["mem_gib"] = round(rss_gib() - base_rss, 3)
                sv["query_p95_ratio"] = round(sv["query_p95_ms"] / baseline["query_p95_ms"], 3)
                sv["query_p50_ratio"] = round(sv["query_p50_ms"] / baseline["query_p50_ms"], 3)
                row |= {"serving": sv, "baseline": baseline}
                shutil.rmtree(tmp / f"n{n}", ignore_errors=True)
            rows.append(row)
            (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
            print(json.dumps(row), flush=True)
    if args.serving:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nRouted to own: the asked passages' gold questions that reach their own passage (top-1 own: before the "
          "threshold). General routed: the canary's general questions (held out from calibration) sent to an "
          "adapter.")
    print("\n| docs | scorer | build s | router MiB (peak) | route p50 ms | route p95 ms | routed to own | top-1 own | "
          "to none | general routed |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['docs']} | {r['scorer']} | {r['build_s']} | {r['router_mib']} | {r['route_p50_ms']} | "
              f"{r['route_p95_ms']} | {100 * r['routed_own']:.1f}% | {100 * r['top1_own']:.1f}% | "
              f"{100 * r['routed_none']:.1f}% | {100 * r['general_routed_held_out']:.1f}% |")
    if args.serving:
        b = baseline
        print(f"\nServing (one version with N synthetic rank-{cfg.train.rank} adapters, cache "
              f"{cfg.serving.adapter_cache_mib} MiB, {cfg.serving.adapter_slots} slots, {len(asked)} questions after "
              f"{len(warm)} untimed, {args.max_tokens} tokens, direct answers); "
              f"baseline one-document service: p50 {b['query_p50_ms']} ms, p95 {b['query_p95_ms']} ms\n")
        print("| docs | mem GiB above base | query p50 ms | query p95 ms | p95 ratio | routed | adapters loaded | "
              "loads built / slot-filled |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            if "serving" in r:
                v = r["serving"]
                print(f"| {r['docs']} | {v['mem_gib']} | {v['query_p50_ms']} | {v['query_p95_ms']} | "
                      f"{v['query_p95_ratio']} | {100 * v['routed_share']:.0f}% | {v['adapters_loaded_at_end']} | "
                      f"{v['loads_built']} / {v['loads_filled']} |")
    main_scorer = args.scorers[0]
    for r in rows:
        if r["scorer"] != main_scorer:
            continue
        base = {x["scorer"]: x for x in rows if x["docs"] == r["docs"] and x["scorer"] != main_scorer}
        vs = " ".join(f"routed_own_vs_{k}={r['routed_own'] / max(v['routed_own'], 1e-9):.2f}" for k, v in base.items())
        sv = r.get("serving")
        mem = f"mem_gib={sv['mem_gib']} " if sv else ""
        ratio = f" query_p95_ratio={sv['query_p95_ratio']}" if sv else ""
        print(f"RESULT docs={r['docs']} scorer={main_scorer} {mem}build_s={r['build_s']} route_p50_ms={r['route_p50_ms']} "
              f"route_p95_ms={r['route_p95_ms']}{ratio} router_mib={r['router_mib']} routed_own={r['routed_own']} "
              f"{vs}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
