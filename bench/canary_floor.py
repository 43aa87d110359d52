"""The canary's noise floor: how many canary answers change under perturbations that carry no knowledge at all.

Each trial adds Gaussian noise (eps x the tensor's std) to every linear weight of the untouched model, measures
drift and the canary, and restores the weights. A drop that random noise of the same drift also causes is the
instrument's floor, not forgetting of anything in particular; items that flip under the smallest noise are
"fragile" (answered right by a hair). Rows go to results.jsonl as they finish (a rerun skips them).

    python bench/canary_floor.py --out results/canary-floor [--eps 0.002,0.005,0.01] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def perturb(model, eps: float, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    saved = {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                w = mod.weight
                saved[name] = w.detach().clone()
                w.add_(torch.randn(w.shape, generator=g) * (eps * w.float().std().item()))
    return saved


def restore(model, saved: dict) -> None:
    import torch

    mods = dict(model.named_modules())
    with torch.no_grad():
        for name, w in saved.items():
            mods[name].weight.copy_(w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--out", default="results/canary-floor")
    ap.add_argument("--eps", default="0.001,0.002,0.005,0.01")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    import torch

    from evaluation.canary import GeneralMonitor
    from core.config import load_config
    from student.runtime import open_runtime

    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"threads": a.threads})})
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    done = {(r["eps"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())} if path.exists() else set()
    rt = open_runtime(cfg)
    st = rt.student
    mon = GeneralMonitor(cfg.continual.canary, cfg.train.retain, cfg.model.cache_dir)
    mon.prepare(st, retain=False)
    trials = [(0.0, 0)] + [(float(e), s) for e in a.eps.split(",") for s in range(a.seeds)]
    for eps, seed in trials:
        if (eps, seed) in done:
            continue
        with st.use(None) as m:
            saved = perturb(m, eps, seed) if eps else {}
            try:
                g = mon.measure(st, None)
            finally:
                restore(m, saved)
        wrong = [q for q, _ in g.canary.wrong]
        row = {"eps": eps, "seed": seed, "canary": g.canary.accuracy, "drift": g.drift, "wrong": wrong}
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"eps={eps:g} seed={seed} canary={g.canary.accuracy:.3f} drift={g.drift:.5f} lost={len(wrong)}",
              flush=True)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    n = len(mon.items)
    print(f"{'eps':>7} {'n':>3} {'drift':>9} {'canary drop (pts)':>18} {'items flipped':>14}")
    summary = {}
    for eps in sorted({r["eps"] for r in rows}):
        rs = [r for r in rows if r["eps"] == eps]
        drop = statistics.mean(100 * (1 - r["canary"]) for r in rs)
        flipped = sorted({q for r in rs for q in r["wrong"]})
        summary[str(eps)] = {"n": len(rs), "drift": statistics.mean(r["drift"] for r in rs), "drop_pts": drop,
                             "items_flipped_any": len(flipped)}
        print(f"{eps:>7g} {len(rs):>3} {summary[str(eps)]['drift']:>9.5f} {drop:>18.2f} {len(flipped):>14}")
    (out / "summary.json").write_text(json.dumps({"items": n, "by_eps": summary}, indent=2))
    for eps, s in summary.items():
        print(f"RESULT eps={eps} drift={s['drift']:.5f} canary_drop_pts={s['drop_pts']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
