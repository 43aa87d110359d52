"""Build the shipped canary: keep the questions of a source file that the untouched model answers correctly
through the closed-book path (so the canary starts at 100% and every miss after an update is a loss).

    .venv/bin/python scripts/filter_canary.py [--source evaluation/data/canary_source.json] [--out evaluation/data/canary.json]
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
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--source", default=str(ROOT / "evaluation/data/canary_source.json"))
    ap.add_argument("--out", default=str(ROOT / "evaluation/data/canary.json"))
    args = ap.parse_args(argv)
    from evaluation.canary import load_canary, score_canary
    from core.config import load_config
    from student.runtime import open_runtime

    cfg = load_config(args.config)
    rt = open_runtime(cfg)
    items = load_canary(args.source)
    t0 = time.perf_counter()
    score = score_canary(rt.student, None, items)
    missed = {q for q, _ in score.wrong}
    kept = [{"kind": c.kind, "question": c.question, "answers": list(c.answers)} for c in items if c.question not in missed]
    Path(args.out).write_text(json.dumps(kept, indent=1) + "\n")
    print(f"{rt.model_name}: {score.correct}/{score.total} answered correctly in {time.perf_counter() - t0:.1f}s; "
          f"kept {len(kept)} -> {args.out}")
    for k, (c, n) in sorted(score.by_kind.items()):
        print(f"  {k:13s} {c}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
