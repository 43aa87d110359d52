"""What one routed-adapter swap costs the server (issue 27: query p95 with thousands of documents).

Routed serving meets a different adapter on almost every query once there are thousands of documents. Two
costs sit on that path: loading an adapter that is not live, and activating the batch's adapter. This bench
measures each both ways in one process, with `--live` adapters already loaded (the state of a warm cache):

- load: peft's `load_adapter` (new LoRA modules in every target layer) against refilling a free slot (an
  evicted adapter's modules; `Student.release` then `Student.load`), each including the checksum a server
  verifies on load;
- activate: peft's `set_adapter` (walks every module and parameter) against `Student.use` (points the LoRA
  layers at the name);
- the untouched model for a batch of unrouted questions: peft's `disable_adapter()` against `Student.use(None)`.

Answers are checked equal: the logits of a slot-filled adapter and of a freshly built one on the same prompt.

    python bench/adapter_swap.py [--live 16] [--repeats 8] [--set runtime.threads=1]

Writes OUT/summary.json and ends with
RESULT live=N load_built_ms=... load_filled_ms=... load_ratio=... activate_peft_ms=... activate_ms=...
activate_ratio=... disable_peft_ms=... disable_ms=... same_logits=true|false
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--live", type=int, default=16, help="adapters loaded before measuring (a warm cache)")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", type=Path, default=ROOT / "configs/default.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", type=Path, default=ROOT / "results/adapter-swap")
    args = ap.parse_args(argv)

    import torch

    from core.config import apply_sets, load_config
    from student.runtime import open_runtime
    from student.stack import sha256_file

    cfg = apply_sets(load_config(args.config), args.sets)
    rt = open_runtime(cfg)
    st = rt.student
    tmp = Path(tempfile.mkdtemp(prefix="adapter-swap-"))
    probe = st.tokenizer("The river flows into the sea near the town of", return_tensors="pt")
    with torch.no_grad():
        base_logits = st.base(**probe).logits  # the untouched model, before any adapter exists
    st.add_adapter("template", seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():  # LoRA starts with B = 0 (no delta): give it one, so equal logits mean something
        for n, prm in st.peft.named_parameters():
            if ".template." in n and "lora_B" in n:
                prm.copy_(torch.randn(prm.shape, generator=g) * 1e-2)
    folder = st.save("template", tmp / "template")
    st.drop("template")
    files = sorted(folder.glob("*.safetensors"))

    def load(name: str) -> float:
        t = time.perf_counter()
        for f in files:
            sha256_file(f)  # the server verifies every adapter it loads
        st.load(folder, name)
        return 1000 * (time.perf_counter() - t)

    for i in range(args.live):
        load(f"live{i}")
    built, filled = [], []
    for r in range(args.repeats):
        built.append(load(f"built{r}"))  # no free slot: new modules
        st.drop(f"built{r}")
    for r in range(args.repeats):
        st.release(f"live{r % args.live}" if r < args.live else f"filled{r - args.live}")
        filled.append(load(f"filled{r}"))
    assert st.load_counts["filled"] >= args.repeats, st.load_counts

    ids = st.tokenizer("The river flows into the sea near the town of", return_tensors="pt")
    with torch.no_grad(), st.use("filled0") as m:
        via_slot = m(**ids).logits
    st.load(folder, "fresh")  # no free slot left: built the usual way
    with torch.no_grad(), st.use("fresh") as m:
        via_build = m(**ids).logits
    same = bool(torch.equal(via_slot, via_build))

    names = [a for a in st.adapters() if a.startswith(("live", "filled"))]
    peft_act, fast_act = [], []
    for r in range(args.repeats):
        target = st.peft_name(names[r % len(names)])
        t = time.perf_counter()
        st.peft.base_model.set_adapter([target], inference_mode=True)
        peft_act.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        with st.use(names[(r + 1) % len(names)]):
            pass
        fast_act.append(1000 * (time.perf_counter() - t))

    peft_off, fast_off = [], []
    for r in range(args.repeats):  # the untouched model for a batch (unrouted questions), adapters live
        t = time.perf_counter()
        with st.peft.disable_adapter():
            pass
        peft_off.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        with st.use(None):
            pass
        fast_off.append(1000 * (time.perf_counter() - t))
    with torch.no_grad(), st.use(None) as m:
        off_same = bool(torch.equal(m(**ids).logits, base_logits))
    same = same and off_same

    med = statistics.median
    row = {"live": args.live, "repeats": args.repeats, "adapter_mib": round(sum(f.stat().st_size for f in files) / 2**20, 2),
           "load_built_ms": round(med(built), 1), "load_filled_ms": round(med(filled), 1),
           "load_ratio": round(med(built) / med(filled), 1), "activate_peft_ms": round(med(peft_act), 1),
           "activate_ms": round(med(fast_act), 2), "activate_ratio": round(med(peft_act) / med(fast_act), 1),
           "disable_peft_ms": round(med(peft_off), 1), "disable_ms": round(med(fast_off), 2),
           "disable_ratio": round(med(peft_off) / med(fast_off), 1), "same_logits": same,
           "threads": torch.get_num_threads()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(row, indent=2))
    print(f"\nOne adapter swap with {args.live} adapters live (median of {args.repeats}; file {row['adapter_mib']} MiB, "
          "checksum included in loads)\n")
    print("| step | peft | seal-agent | ratio |\n|---|---|---|---|")
    print(f"| load an adapter | {row['load_built_ms']} ms (new modules) | {row['load_filled_ms']} ms (free slot) | "
          f"{row['load_ratio']}x |")
    print(f"| activate for a batch | {row['activate_peft_ms']} ms (set_adapter) | {row['activate_ms']} ms | "
          f"{row['activate_ratio']}x |")
    print(f"| untouched model for a batch | {row['disable_peft_ms']} ms (disable_adapter) | {row['disable_ms']} ms | "
          f"{row['disable_ratio']}x |")
    print(f"\nslot-filled adapter's logits equal a freshly built one's, and adapters off equal the untouched "
          f"model's: {same}")
    print(f"RESULT live={args.live} load_built_ms={row['load_built_ms']} load_filled_ms={row['load_filled_ms']} "
          f"load_ratio={row['load_ratio']} activate_peft_ms={row['activate_peft_ms']} activate_ms={row['activate_ms']} "
          f"activate_ratio={row['activate_ratio']} disable_peft_ms={row['disable_peft_ms']} "
          f"disable_ms={row['disable_ms']} same_logits={str(same).lower()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
