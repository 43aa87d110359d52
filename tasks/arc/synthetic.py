"""Tasks solvable by construction (a fixed geometric rule on random grids), in the Kaggle file format: the
check that test-time training works when the model cannot do a task in context."""
from __future__ import annotations

import json
import random
from pathlib import Path

from tasks.arc import augment as A

RULES = {"flip_h": A.flip_h, "flip_v": A.flip_v, "rot90": A.rot90, "transpose": A.transpose,
         "rot180": A.rot180}


def synthetic_tasks(rule: str, n_tasks: int, demos: int = 3, side: int = 3, colours: int = 4,
                    seed: int = 0) -> tuple[dict, dict]:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} (one of {', '.join(RULES)})")
    rng = random.Random(seed)
    f = RULES[rule]
    challenges, solutions = {}, {}

    def grid():
        return [[rng.randint(0, colours) for _ in range(side)] for _ in range(side)]

    for i in range(n_tasks):
        tid = f"synth-{rule}-{i}"
        train = []
        for _ in range(demos):
            g = grid()
            train.append({"input": g, "output": [list(r) for r in f(A.as_grid(g))]})
        x = grid()
        challenges[tid] = {"train": train, "test": [{"input": x}]}
        solutions[tid] = [[list(r) for r in f(A.as_grid(x))]]
    return challenges, solutions


def write_synthetic(out_dir: Path, rule: str, n_tasks: int, **kw) -> tuple[Path, Path]:
    ch, sol = synthetic_tasks(rule, n_tasks, **kw)
    out_dir.mkdir(parents=True, exist_ok=True)
    a, b = out_dir / f"synthetic-{rule}_challenges.json", out_dir / f"synthetic-{rule}_solutions.json"
    a.write_text(json.dumps(ch))
    b.write_text(json.dumps(sol))
    return a, b
