"""Query latency of the student vs. number of documents learned, with and without consolidation.

Latency does not depend on what the adapters learned, only on their shapes, so the stack is built from
randomly initialised rank-r adapters (B non-zero so no kernel can skip them). For each depth D it measures
greedy generation of --tokens tokens for one question:
  base        the bare model (the reference, measured in the same run)
  stack       D adapters active (one LoRA matmul pair per adapter per module)
  fold-exact  the D adapters folded into one adapter of rank D*r (same function)
  fold-svd    folded and SVD-compressed to --svd-rank (the consolidation policy with a rank)
  merged      the fold merged into the served weights (consolidation `into: base`): no adapter left
All conditions of a depth are timed in turn, round after round (the median of --repeats rounds is used), so
that drift on a busy machine hits them alike. On a shared machine use --clock cpu with runtime.threads=1:
process CPU time counts this process's work only.
Ratios are to the base, all in one run; the median of --repeats is used. Ends with `RESULT ...`.

    python bench/latency.py --config configs/default.yaml --depths 1 8 32 64
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
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--svd-rank", type=int, default=None, help="default: the adapter rank (train.rank)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time (with runtime.threads=1, robust to other load on the machine)")
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    args = ap.parse_args(argv)

    import torch

    from evaluation.closed_book import question_prompt
    from core.config import load_config
    from student.runtime import open_runtime
    from student.consolidate import fold
    from student.generation import render_prompt

    from core.config import apply_sets

    cfg = apply_sets(load_config(args.config), args.set)
    rt = open_runtime(cfg)
    st = rt.student
    tok = st.tokenizer
    enc = tok([render_prompt(tok, question_prompt("Who recorded the song Walking Into Fresno?"))],
              return_tensors="pt", add_special_tokens=False)
    svd_rank = args.svd_rank or cfg.train.rank
    out = Path(args.out or Path(cfg.runs_dir) / f"bench-latency-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)

    import copy

    bare = copy.deepcopy(st.base)  # the plain model, before any LoRA layer is injected

    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    def once(model) -> float:
        with torch.inference_mode():
            t = clock()
            model.generate(**enc, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id)
            return clock() - t

    def round_robin(conds: dict) -> dict:
        """Time every condition once per round, in turn, so drift on a busy machine hits them all alike."""
        xs = {k: [] for k in conds}
        for r in range(args.repeats + 1):  # round 0 warms up
            for k, (model, names) in conds.items():
                if names is not None:
                    with st.use(names) as m:
                        x = once(m)
                else:
                    x = once(model)
                if r:
                    xs[k].append(x)
        return {k: statistics.median(v) for k, v in xs.items()}

    rows = []
    for depth in sorted(args.depths):
        built = []
        for i in range(depth):
            name = f"lat{i}"
            st.add_adapter(name, seed=i)
            with torch.no_grad():
                for mod in st.peft.modules():
                    if hasattr(mod, "lora_B") and name in mod.lora_B:
                        torch.nn.init.normal_(mod.lora_B[name].weight, std=1e-3)
            built.append(name)
        fold(st, built, "lat-exact")
        fold(st, built, "lat-svd", rank=svd_rank)
        merged = copy.deepcopy(bare)  # consolidation `into: base`: the fold's delta added to plain weights
        plain = dict(merged.named_modules())
        with torch.no_grad():
            for mname, mod in st.peft.named_modules():
                if hasattr(mod, "lora_A") and "lat-exact" in mod.lora_A:
                    key = mname.split("base_model.model.", 1)[-1]
                    w = plain[key].weight
                    w.add_((mod.lora_B["lat-exact"].weight @ mod.lora_A["lat-exact"].weight
                            * mod.scaling["lat-exact"]).to(w.dtype))
        # inactive adapters cost nothing in peft's forward, so all conditions can live side by side
        row = {"depth": depth} | round_robin({"base": (bare, None), "stack": (None, built),
                                              "fold-exact": (None, "lat-exact"), "fold-svd": (None, "lat-svd"),
                                              "merged": (merged, None)})
        for n in [*built, "lat-exact", "lat-svd"]:
            st.drop(n)
        del merged
        row |= {f"{k}_ratio": row[k] / row["base"] for k in ("stack", "fold-exact", "fold-svd", "merged")}
        rows.append(row)
        print(f"depth {depth:3d}: base {row['base'] * 1000:7.1f} ms | stack x{row['stack_ratio']:.2f} | "
              f"fold-exact x{row['fold-exact_ratio']:.2f} | fold-svd(r{svd_rank}) x{row['fold-svd_ratio']:.2f} | "
              f"merged x{row['merged_ratio']:.2f}",
              flush=True)
        (out / "latency.json").write_text(json.dumps({"tokens": args.tokens, "svd_rank": svd_rank, "clock": args.clock, "rows": rows},
                                                     indent=2))
    print(f"\n| documents | base ms | stack | fold exact (rank D*{cfg.train.rank}) | fold SVD (rank {svd_rank}) | merged into base |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['depth']} | {r['base'] * 1000:.0f} | {r['stack_ratio']:.2f}x | {r['fold-exact_ratio']:.2f}x | "
              f"{r['fold-svd_ratio']:.2f}x | {r['merged_ratio']:.2f}x |")
    worst = max(r["fold-svd_ratio"] for r in rows)
    worst_merged = max(r["merged_ratio"] for r in rows)
    print(f"wrote {out / 'latency.json'}")
    print("RESULT " + " ".join(f"stack_d{r['depth']}={r['stack_ratio']:.3f}" for r in rows)
          + f" fold_svd_max={worst:.3f} merged_max={worst_merged:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
