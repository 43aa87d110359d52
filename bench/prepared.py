"""What a prepared base (`seal prepare`) costs the model: its canary and drift against the untouched model.

General questions meet the prepared weights once `model.prepared` is set, so the preparation must keep the
canary within the same 2-point budget as any update. The prepared adapter is applied to the untouched base (the
same delta `model.prepared` folds in) and measured with the untouched model's references.

    python bench/prepared.py results/prepared-v1 [--config configs/default.yaml]

Writes DIR/cost.json and ends with `RESULT prepared=DIR canary=... canary_base=... canary_drop=... drift=...`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prepared", type=Path)
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)

    from core.config import apply_sets, load_config
    from evaluation.canary import GeneralMonitor
    from student.prepared import read_manifest
    from student.runtime import open_runtime

    manifest = read_manifest(args.prepared)
    cfg = apply_sets(load_config(args.config), [*args.set, "model.prepared=null"])
    rt = open_runtime(cfg)
    general = GeneralMonitor(cfg.continual.canary, cfg.train.retain, cfg.model.cache_dir)
    general.prepare(rt.student, retain=False)
    base = general.measure(rt.student, None)
    rt.student.load(args.prepared / "adapter", "prepared")
    prep = general.measure(rt.student, ["prepared"])
    row = {"prepared": str(args.prepared), "checksum": manifest["checksum"], "passages": manifest["passages"],
           "qa_pairs": manifest["qa_pairs"], "canary_base": base.canary.accuracy, "canary": prep.canary.accuracy,
           "canary_drop": base.canary.accuracy - prep.canary.accuracy, "drift": prep.drift,
           "wrong": [list(w) for w in prep.canary.wrong[:20]]}
    (args.prepared / "cost.json").write_text(json.dumps(row, indent=2))
    print(f"| prepared base | passages | QA pairs | canary | untouched | drop (points) | drift (nats/token) |\n"
          f"|---|---|---|---|---|---|---|\n| {args.prepared} | {row['passages']} | {row['qa_pairs']} | "
          f"{100 * row['canary']:.1f}% | {100 * row['canary_base']:.1f}% | {100 * row['canary_drop']:+.1f} | "
          f"{row['drift']:.4f} |")
    print(f"RESULT prepared={args.prepared} canary={row['canary']:.4f} canary_base={row['canary_base']:.4f} "
          f"canary_drop={row['canary_drop']:.4f} drift={row['drift']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
