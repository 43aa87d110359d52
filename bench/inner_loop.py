"""Inner-loop efficiency: our adapter training vs. a minimal hand-written torch+peft loop, same run.

Both train a fresh LoRA adapter (same config, seed, sequences, epochs, lr) on the training sequences of a
self-edit (examples/self_edits.json: implications + passage). Runs alternate (ours, baseline, ours, ...) so
machine noise hits both; the median tokens/s of each is compared. Prints a table, writes JSON incrementally,
and ends with `RESULT tokens_per_s_ratio=... padding_fraction=...`.

    python bench/inner_loop.py --config configs/default.yaml
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def baseline_loop(base, tokenizer, texts: list[str], s, seed: int) -> dict:
    """The plainest correct loop: batch 1, no padding, AdamW, linear decay, clip. Nothing of ours is used."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout,
                                                           target_modules=s.target_modules, task_type="CAUSAL_LM"))
    eos = tokenizer.eos_token_id
    seqs = [tokenizer(t, add_special_tokens=False)["input_ids"][: s.max_seq_len - 1] + [eos] for t in texts]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    total = len(seqs) * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 - k / total)
    rng = random.Random(seed)
    model.train()
    tokens = 0
    t0 = time.perf_counter()
    for _ in range(s.epochs):
        order = list(range(len(seqs)))
        rng.shuffle(order)
        for i in order:
            ids = torch.tensor([seqs[i]])
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm or math.inf)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += ids.numel()
    sec = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": sec, "tokens_per_s": tokens / sec, "final_loss": float(loss.detach())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--edits", default=str(ROOT / "examples/self_edits.json"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs (shorter bench)")
    ap.add_argument("--out", default=None, help="output folder (default runs/bench-inner-loop-<time>)")
    args = ap.parse_args(argv)

    from core.config import load_config
    from student.runtime import open_runtime
    from core.documents import load_passages
    from teacher.external import ExternalEdits

    cfg = load_config(args.config)
    if args.epochs:
        cfg = cfg.with_overrides(train={"epochs": args.epochs})
    out = Path(args.out or Path(cfg.runs_dir) / f"bench-inner-loop-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    rt = open_runtime(cfg)
    ext = ExternalEdits(args.edits)
    p = load_passages(args.edits)[0]
    texts = ext.self_edit(p, cfg.teacher.format, cfg.teacher.grounding).sequences(p)
    base = copy.deepcopy(rt.student.base)  # pristine copy, before our Student injects any LoRA layer into it
    baseline_loop(base, rt.student.tokenizer, texts[:1], cfg.train.model_copy(update={"epochs": 1}), cfg.seed)
    rt.student.drop(rt.student.train_adapter(texts[:1], "warmup", seed=0, settings=cfg.train.model_copy(
        update={"epochs": 1})).adapter)  # warm-up: first-call allocations are not what we compare
    rows = []
    results = out / "inner_loop.json"
    for r in range(args.repeats):
        for kind in (("ours", "baseline") if r % 2 == 0 else ("baseline", "ours")):
            if kind == "ours":
                st = rt.student.train_adapter(texts, f"bench{r}", seed=cfg.seed)
                rt.student.drop(f"bench{r}")
                row = {"kind": kind, "repeat": r, "tokens": st.real_tokens + st.pad_tokens, "seconds": st.seconds,
                       "tokens_per_s": st.tokens_per_s, "padding_fraction": st.padding_fraction,
                       "final_loss": st.losses[-1]}
            else:
                row = {"kind": kind, "repeat": r, **baseline_loop(base, rt.student.tokenizer, texts, cfg.train, cfg.seed),
                       "padding_fraction": 0.0}
            rows.append(row)
            print(f"{kind:9s} repeat {r}: {row['tokens_per_s']:8.1f} tok/s  {row['seconds']:6.1f}s  "
                  f"loss {row['final_loss']:.3f}", flush=True)
            results.write_text(json.dumps({"config": args.config, "sequences": len(texts), "rows": rows}, indent=2))
    # Padding at a larger batch shows what dynamic padding + length grouping costs when batching is on.
    b4 = cfg.train.model_copy(update={"batch_size": 4})
    st4 = rt.student.train_adapter(texts, "bench-b4", seed=cfg.seed, settings=b4)
    rt.student.drop("bench-b4")
    ours = statistics.median(r["tokens_per_s"] for r in rows if r["kind"] == "ours")
    base_tps = statistics.median(r["tokens_per_s"] for r in rows if r["kind"] == "baseline")
    pad = statistics.median(r["padding_fraction"] for r in rows if r["kind"] == "ours")
    summary = {"ours_tokens_per_s": ours, "baseline_tokens_per_s": base_tps, "tokens_per_s_ratio": ours / base_tps,
               "padding_fraction": pad, "padding_fraction_batch4": st4.padding_fraction,
               "tokens_per_s_batch4": st4.tokens_per_s}
    results.write_text(json.dumps({"config": args.config, "sequences": len(texts), "rows": rows,
                                   "summary": summary}, indent=2))
    print(f"\n| loop | tokens/s (median of {args.repeats}) | padding |\n|---|---|---|")
    print(f"| hand-written torch+peft | {base_tps:.1f} | 0.000 |")
    print(f"| seal-agent (batch {cfg.train.batch_size}) | {ours:.1f} | {pad:.3f} |")
    print(f"| seal-agent (batch 4, length-grouped) | {st4.tokens_per_s:.1f} | {st4.padding_fraction:.3f} |")
    print(f"\nwrote {results}")
    print(f"RESULT tokens_per_s_ratio={ours / base_tps:.3f} padding_fraction={pad:.3f} "
          f"padding_fraction_batch4={st4.padding_fraction:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
