"""bfloat16 weights against float32 on this CPU, in one run: speed, agreement and learning.

Loads the student twice (float32 and bfloat16 weights; LoRA parameters stay float32 in both, peft's default) and
measures, alternating the two so machine noise hits both alike:
  forward     tokens/s of a forward pass over a batch of real text (what drift, distillation and training read)
  generate    closed-book answers to the canary (the probe-answering path): generated tokens/s, canary accuracy,
              and how often the greedy replies equal float32's
  read        SQuAD questions answered with the passage in context: accuracy and agreement
  train       the inner loop on passage text (the same passages, seeds and settings): training tokens/s, then the
              closed-book accuracy on the passage's gold questions with the new adapter (what was learned) and
              the canary with the adapter on (what it cost)
Rows go to results.jsonl as they finish (a rerun skips them); the summary prints a table with bf16/fp32 ratios.

    python bench/bf16.py --out results/bf16 [--passages ../shared/data/squad/dev.json] [--learn 6] [--threads 1]
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

DTYPES = ("float32", "bfloat16")


def load(cfg, dtype: str):
    from student.runtime import open_runtime

    c = cfg.with_overrides(model={**cfg.model.model_dump(), "dtype": dtype})
    return open_runtime(c).student


def n_tokens(tok, texts: list[str]) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def forward_rate(st, texts: list[str], batch: int = 8, max_len: int = 160, reps: int = 3) -> float:
    import torch

    enc = st.tokenizer(texts[:batch], return_tensors="pt", padding="max_length", truncation=True, max_length=max_len)
    best = float("inf")
    with torch.inference_mode(), st.use(None) as m:
        m(**enc)  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            m(**enc)
            best = min(best, time.perf_counter() - t0)
    return enc["input_ids"].numel() / best


def timed_answers(st, adapter, questions: list[str], max_new: int, batch: int) -> tuple[list[str], float]:
    from evaluation.closed_book import answer

    t0 = time.perf_counter()
    replies = answer(st, adapter, questions, max_new, batch)
    dt = time.perf_counter() - t0
    return replies, n_tokens(st.tokenizer, replies) / dt if dt else 0.0


def reading(st, passages, max_new: int, batch: int) -> list[str]:
    from student.generation import SamplingParams, generate

    prompts = [f"{p.context}\n\nAnswer the question with a short phrase from the text above.\nQuestion: {q.question}"
               for p in passages for q in p.questions]
    with st.use(None) as m:
        return [o[0] for o in generate(m, st.tokenizer, prompts, SamplingParams(max_new_tokens=max_new),
                                       batch_size=batch)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--passages", default=str(ROOT.parent / "shared" / "data" / "squad" / "dev.json"))
    ap.add_argument("--out", default="results/bf16")
    ap.add_argument("--read", type=int, default=12, help="passages answered with the passage in context")
    ap.add_argument("--learn", type=int, default=6, help="passages learned (inner loop) per dtype")
    ap.add_argument("--offset", type=int, default=200, help="first passage used (away from the eval/continual draws)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    import torch

    from evaluation.canary import load_canary
    from evaluation.closed_book import answer
    from core.config import load_config
    from evaluation.graders import contains
    from core.documents import load_passages

    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    cfg = cfg.with_overrides(runtime={**cfg.runtime.model_dump(), "threads": a.threads})
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    done = {(r["kind"], r["dtype"], r.get("i")) for r in rows}

    def put(row: dict) -> None:
        rows.append(row)
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "replies"}), flush=True)

    pool = [p for p in load_passages(a.passages) if p.questions][a.offset:]
    read_set, learn_set = pool[: a.read], pool[a.read: a.read + a.learn]
    canary = load_canary(cfg.continual.canary.file)
    cq = [c.question for c in canary]
    ev = cfg.eval
    students = {d: load(cfg, d) for d in DTYPES}
    texts = [p.context for p in pool[:8]]

    for rep in range(3):  # alternate: noise falls on both
        for d in DTYPES:
            if ("forward", d, rep) not in done:
                put({"kind": "forward", "dtype": d, "i": rep, "tokens_per_s": forward_rate(students[d], texts)})
    for rep in range(3):  # alternate here too: generation is the most noise-sensitive measure
        for d in DTYPES:
            if ("generate", d, rep) not in done:
                replies, rate = timed_answers(students[d], None, cq, cfg.continual.canary.max_new_tokens,
                                              cfg.continual.canary.batch_size)
                put({"kind": "generate", "dtype": d, "i": rep, "tokens_per_s": rate, "replies": replies,
                     "accuracy": statistics.mean(c.correct(r) for c, r in zip(canary, replies))})
    for d in DTYPES:
        if ("read", d, None) not in done:
            replies = reading(students[d], read_set, ev.max_new_tokens, ev.batch_size)
            golds = [q for p in read_set for q in p.questions]
            put({"kind": "read", "dtype": d, "i": None, "replies": replies,
                 "accuracy": statistics.mean(contains(r, q.answer) for q, r in zip(golds, replies))})
    for i, p in enumerate(learn_set):
        for d in DTYPES:
            if ("train", d, i) in done:
                continue
            st = students[d]
            name = f"bf16bench{i}"
            stats = st.train_adapter([f"{p.title}\n{p.context}"], name, seed=cfg.seed + i)
            got = answer(st, name, [q.question for q in p.questions], ev.max_new_tokens, ev.batch_size)
            can, _ = timed_answers(st, name, cq, cfg.continual.canary.max_new_tokens, cfg.continual.canary.batch_size)
            st.drop(name)
            put({"kind": "train", "dtype": d, "i": i, "doc": p.doc_id, "tokens_per_s": stats.tokens_per_s,
                 "seconds": stats.seconds, "loss_last": stats.losses[-1] if stats.losses else None,
                 "learned": statistics.mean(contains(r, q.answer) for q, r in zip(p.questions, got)),
                 "canary_on": statistics.mean(c.correct(r) for c, r in zip(canary, can)), "replies": got})
    summarize(rows, out)
    return 0


def resummarize(out: str) -> None:
    """Print the table again from a finished run's rows (no model loaded)."""
    p = Path(out)
    summarize([json.loads(x) for x in (p / "results.jsonl").read_text().splitlines()], p)


def summarize(rows: list[dict], out: Path) -> dict:
    def of(kind, d, key):
        return [r[key] for r in rows if r["kind"] == kind and r["dtype"] == d and r.get(key) is not None]

    def med(xs):
        return statistics.median(xs) if xs else float("nan")

    def mean(xs):
        return statistics.mean(xs) if xs else float("nan")

    s: dict = {}
    for kind, key in [("forward", "tokens_per_s"), ("generate", "tokens_per_s"), ("train", "tokens_per_s"),
                      ("generate", "accuracy"), ("read", "accuracy"), ("train", "learned"), ("train", "canary_on")]:
        agg = med if key == "tokens_per_s" else mean  # speeds: the median of repeats; accuracies: the mean
        f, b = agg(of(kind, "float32", key)), agg(of(kind, "bfloat16", key))
        s[f"{kind}.{key}"] = {"float32": f, "bfloat16": b, "ratio": b / f if f else float("nan")}
        if key == "tokens_per_s":  # the ratio of each alternated pair (same moment, same machine load)
            pairs = [b_ / f_ for f_, b_ in zip(of(kind, "float32", key), of(kind, "bfloat16", key)) if f_]
            s[f"{kind}.{key}"]["pair_ratios"] = [round(x, 2) for x in pairs]
    for kind in ("generate", "read"):
        reps = {d: next((r["replies"] for r in rows if r["kind"] == kind and r["dtype"] == d), None) for d in DTYPES}
        if all(reps.values()):
            s[f"{kind}.agreement"] = statistics.mean(x == y for x, y in zip(reps["float32"], reps["bfloat16"]))
    print(f"{'measure':<24} {'float32':>10} {'bfloat16':>10} {'bf16/fp32':>10}")
    for k, v in s.items():
        if isinstance(v, dict):
            extra = f"  pairs {v['pair_ratios']}" if "pair_ratios" in v else ""
            print(f"{k:<24} {v['float32']:>10.3f} {v['bfloat16']:>10.3f} {v['ratio']:>10.2f}{extra}")
        else:
            print(f"{k:<24} {'':>10} {v:>10.3f} {'(agree)':>10}")
    (out / "summary.json").write_text(json.dumps(s, indent=2))
    return s


if __name__ == "__main__":
    raise SystemExit(main())
