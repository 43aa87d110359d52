"""ARC tasks and grids: loading the Kaggle challenge/solution files, grid <-> text, exact match.

Text encoding: one row per line, one digit per cell, no separators ("012\n300"). Digits are single tokens
in Llama-family tokenizers, so a cell costs one token and a row one more (the newline): the most compact
encoding that still tokenizes cell by cell.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

Grid = tuple[tuple[int, ...], ...]
MAX_SIDE = 30


class ArcFormatError(ValueError):
    pass


def as_grid(rows) -> Grid:
    g = tuple(tuple(int(c) for c in r) for r in rows)
    if not g or not g[0] or any(len(r) != len(g[0]) for r in g):
        raise ArcFormatError("a grid must be a non-empty rectangle")
    if any(not 0 <= c <= 9 for r in g for c in r):
        raise ArcFormatError("grid cells must be colours 0-9")
    return g


def shape(g: Grid) -> tuple[int, int]:
    return len(g), len(g[0])


def fits(g: Grid, side: int = MAX_SIDE) -> bool:
    h, w = shape(g)
    return h <= side and w <= side


def grid_text(g: Grid) -> str:
    return "\n".join("".join(str(c) for c in r) for r in g)


def parse_grid(text: str) -> Grid | None:
    """The first rectangle of digit rows in `text`, or None (a model's malformed answer)."""
    rows = []
    for line in text.strip().splitlines():
        s = line.strip()
        if s and s.isdigit():
            rows.append(s)
        elif rows:
            break
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        return None
    return tuple(tuple(int(c) for c in r) for r in rows)


@dataclass(frozen=True)
class Example:
    input: Grid
    output: Grid


@dataclass(frozen=True)
class Task:
    id: str
    train: tuple[Example, ...]  # the demonstrations
    test_inputs: tuple[Grid, ...]
    test_outputs: tuple[Grid, ...] | None = None  # the solutions, when known

    def solved_by(self, predictions: list[list[Grid | None]]) -> bool:
        """Solved only if every test input has its exact output among its attempts."""
        if self.test_outputs is None:
            raise ArcFormatError(f"task {self.id} has no solutions to check against")
        return len(predictions) == len(self.test_outputs) and all(
            want in attempts for want, attempts in zip(self.test_outputs, predictions))


def load_tasks(challenges: str | Path, solutions: str | Path | None = None) -> list[Task]:
    try:
        ch = json.loads(Path(challenges).read_text())
        sol = json.loads(Path(solutions).read_text()) if solutions else {}
    except (OSError, json.JSONDecodeError) as e:
        raise ArcFormatError(f"cannot read ARC files: {e}") from e
    tasks = []
    for tid, t in sorted(ch.items()):
        try:
            train = tuple(Example(as_grid(x["input"]), as_grid(x["output"])) for x in t["train"])
            tests = tuple(as_grid(x["input"]) for x in t["test"])
            outs = tuple(as_grid(o) for o in sol[tid]) if tid in sol else None
        except (KeyError, TypeError, ArcFormatError) as e:
            raise ArcFormatError(f"task {tid}: {e}") from e
        tasks.append(Task(tid, train, tests, outs))
    if not tasks:
        raise ArcFormatError(f"{challenges}: no tasks")
    return tasks


def solutions_beside(challenges: Path) -> Path | None:
    """`..._challenges....json` -> the `..._solutions....json` next to it, if present."""
    p = challenges.with_name(challenges.name.replace("challenges", "solutions"))
    return p if p != challenges and p.is_file() else None
