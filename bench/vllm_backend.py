"""Answering probe questions: the in-process transformers backend vs a vLLM server, on the same adapter.

One adapter is trained on a passage and exported exactly as serving does (folded into one PEFT folder), then
--questions closed-book questions (greedy, --tokens new tokens at most) are answered by
  transformers  the in-process model with the adapter active, batched by eval.batch_size
  vllm          the vLLM server with the adapter loaded under its immutable name, all questions in one request
alternating, --repeats rounds (median used). Reports generated tokens/s, the ratio vllm/transformers, and how
many answers agree exactly. JSON is written after every measurement. Ends with `RESULT ...`.

On a CPU machine (after bash scripts/setup_vllm_cpu.sh):
    python bench/vllm_backend.py --questions 100 --set backend.vllm.memory_utilization=0.3 \
        --set backend.vllm.cpu_kvcache_gib=2
On a GPU machine, point at a running server (its model must be the configured one):
    python bench/vllm_backend.py --questions 100 --url http://127.0.0.1:8001
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--passages", default=str(ROOT.parent / "shared/data/squad/dev.json"))
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--url", default=None, help="an existing vLLM server (default: start one from .venv-vllm)")
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"))
    ap.add_argument("--out", default=str(ROOT / "results/bench-vllm"))
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    args = ap.parse_args(argv)

    from core.config import apply_sets
    from evaluation.closed_book import answer
    from core.config import load_config
    from student.runtime import open_runtime
    from serving.vllm_server import VLLMServer, default_command, server_env
    from core.documents import load_passages
    from serving.backend import VLLMBackend, VLLMClient
    from student.export import fold_folders
    from student.models import resolve_folder

    cfg = apply_sets(load_config(args.config), args.set)
    if args.url:
        cfg = cfg.with_overrides(backend={"kind": "vllm", "vllm": {**cfg.backend.vllm.model_dump(), "url": args.url}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ps = [p for p in load_passages(args.passages) if p.questions]
    questions = [qa.question for p in ps for qa in p.questions][:args.questions]
    rt = open_runtime(cfg)
    st, tok = rt.student, rt.student.tokenizer
    print(f"training one adapter on {ps[0].title!r} ...", file=sys.stderr)
    st.train_adapter([f"{ps[0].title}\n{ps[0].context}"], "bench", seed=cfg.seed)
    st.save("bench", out / "adapter-raw")
    rep = fold_folders([out / "adapter-raw"], out / "adapter", cfg.backend.vllm.max_lora_rank)
    st.drop("bench")
    st.load(out / "adapter", "bench")  # both engines run the exported folder

    server = None
    if not args.url:
        folder, _ = resolve_folder(cfg.model)
        server = VLLMServer(default_command(cfg, folder, args.vllm_python), cfg.backend.vllm.url,
                            out / "vllm-server.log", cfg.backend.vllm.startup_timeout_s, env=server_env(cfg))
        t0 = time.perf_counter()
        server.start()
        print(f"vLLM server healthy after {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    client = VLLMClient(cfg.backend.vllm.url, timeout_s=cfg.backend.vllm.timeout_s)
    name = f"bench-{int(time.time())}"  # a fresh name per run: never a reload under a used name
    try:
        client.load_lora(name, str((out / "adapter").resolve()))
        backend = VLLMBackend(client, tok, lambda: [m["id"] for m in client.models() if not m.get("parent")][0])
        runs = {"transformers": [], "vllm": []}
        answers = {}
        result = {"questions": len(questions), "max_tokens": args.tokens, "threads": cfg.runtime.threads,
                  "export": {"rank_in": rep.rank_in, "rank_out": rep.rank_out}, "runs": runs}
        answer(st, "bench", questions[:2], args.tokens, cfg.eval.batch_size)  # warm-up, untimed
        answer(st, name, questions[:2], args.tokens, cfg.eval.batch_size, backend=backend)
        for r in range(args.repeats):
            for kind in ("transformers", "vllm"):
                t0 = time.perf_counter()
                if kind == "transformers":
                    got = answer(st, "bench", questions, args.tokens, cfg.eval.batch_size)
                else:
                    got = answer(st, name, questions, args.tokens, cfg.eval.batch_size, backend=backend)
                s = time.perf_counter() - t0
                n = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in got)
                runs[kind].append({"round": r, "seconds": round(s, 3), "tokens": n, "tokens_per_s": round(n / s, 2)})
                answers[kind] = got
                print(f"round {r} {kind:12s} {s:7.1f}s {n:5d} tokens {n / s:7.1f} tok/s", file=sys.stderr)
                (out / "result.json").write_text(json.dumps(result, indent=2))
        med = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in runs.items()}
        agree = sum(a == b for a, b in zip(answers["transformers"], answers["vllm"]))
        result |= {"median_tokens_per_s": med, "ratio_vllm_over_transformers": round(med["vllm"] / med["transformers"], 3),
                   "answers_identical": agree}
        (out / "result.json").write_text(json.dumps(result, indent=2))
        (out / "answers.json").write_text(json.dumps({"questions": questions, **answers}, indent=1))
        client.unload_lora(name)
    finally:
        if server:
            server.stop()
    print(f"| backend | median tokens/s | ratio |\n|---|---|---|\n"
          f"| transformers (in-process, batch {cfg.eval.batch_size}) | {med['transformers']:.1f} | 1.00 |\n"
          f"| vLLM server (one request) | {med['vllm']:.1f} | {result['ratio_vllm_over_transformers']:.2f} |")
    print(f"answers identical: {agree}/{len(questions)}")
    print(f"RESULT questions={len(questions)} transformers_tok_s={med['transformers']:.1f} "
          f"vllm_tok_s={med['vllm']:.1f} ratio={result['ratio_vllm_over_transformers']:.2f} identical={agree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
