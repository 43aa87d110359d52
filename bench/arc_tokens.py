"""Tokens per ARC task with our grid encoding vs. a JSON-list baseline, in the same run.

Ours: one digit per cell, one row per line ("012\n300"). Baseline: the grids as JSON lists ("[[0, 1, 2], ...]"),
the form the Kaggle files use. Counted with the configured model's tokenizer over each task's full prompt
(demonstrations + test input) plus its test output. Ends with `RESULT ...`.

    python bench/arc_tokens.py --tasks ../shared/data/arc/arc-agi_training_challenges_filtered_1B_training_set.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=str(ROOT.parent / "shared/data/arc/"
                                           "arc-agi_training_challenges_filtered_1B_training_set.json"))
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--out", default=str(ROOT / "results/bench-arc-tokens"))
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from core.config import load_config
    from student.models import resolve_folder
    from tasks.arc.grids import load_tasks, solutions_beside
    from tasks.arc.ttt_data import task_prompt

    cfg = load_config(args.config)
    folder, name = resolve_folder(cfg.model)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tasks = load_tasks(Path(args.tasks), solutions_beside(Path(args.tasks)))

    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def as_json(g) -> str:
        return json.dumps([list(r) for r in g])

    rows = []
    for t in tasks:
        ours = n(task_prompt(t.train, t.test_inputs[0]) + "\n".join("".join(map(str, r)) for r in t.test_outputs[0]))
        parts = [f"Input:\n{as_json(e.input)}\nOutput:\n{as_json(e.output)}" for e in t.train]
        parts.append(f"Input:\n{as_json(t.test_inputs[0])}\nOutput:\n{as_json(t.test_outputs[0])}")
        base = n("\n\n".join(parts))
        cells = sum(len(g) * len(g[0]) for e in t.train for g in (e.input, e.output)) + \
            sum(len(g) * len(g[0]) for g in (t.test_inputs[0], t.test_outputs[0]))
        rows.append({"task": t.id, "cells": cells, "ours": ours, "json": base, "ratio": round(ours / base, 3)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"model": name, "tasks": rows, "mean_ours": statistics.mean(r["ours"] for r in rows),
           "mean_json": statistics.mean(r["json"] for r in rows),
           "max_ours": max(r["ours"] for r in rows),
           "tokens_per_cell": sum(r["ours"] for r in rows) / sum(r["cells"] for r in rows)}
    res["ratio"] = res["mean_ours"] / res["mean_json"]
    (out / "result.json").write_text(json.dumps(res, indent=2))
    print("| task | cells | ours | JSON lists | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['cells']} | {r['ours']} | {r['json']} | {r['ratio']:.2f} |")
    print(f"RESULT tasks={len(rows)} mean_tokens={res['mean_ours']:.0f} max_tokens={res['max_ours']} "
          f"json_mean={res['mean_json']:.0f} ratio={res['ratio']:.2f} tokens_per_cell={res['tokens_per_cell']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
