"""Grid transforms with exact inverses: the tools a spec picks from.

A transform is applied to every grid of a task (inputs and outputs alike), so the rule it hides changes
form but stays learnable. At inference, the test input is transformed, the output predicted, and the
prediction mapped back with the inverse; `invert` returns None when a prediction cannot have come from
the forward map (e.g. a "2x upscaled" grid with odd height), so broken answers drop out of the vote.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

from tasks.arc.grids import Example, Grid, Task

Fn = Callable[[Grid], Grid]
InvFn = Callable[[Grid], "Grid | None"]


def as_grid(rows) -> Grid:
    return tuple(tuple(r) for r in rows)


def rot90(g: Grid) -> Grid:  # clockwise
    return as_grid(zip(*g[::-1]))


def rot180(g: Grid) -> Grid:
    return as_grid(r[::-1] for r in g[::-1])


def rot270(g: Grid) -> Grid:
    return as_grid(zip(*g))[::-1]


def flip_h(g: Grid) -> Grid:  # mirror left-right
    return as_grid(r[::-1] for r in g)


def flip_v(g: Grid) -> Grid:  # mirror top-bottom
    return g[::-1]


def transpose(g: Grid) -> Grid:
    return as_grid(zip(*g))


def anti_transpose(g: Grid) -> Grid:  # reflect across the anti-diagonal
    return rot180(transpose(g))


def upscale(g: Grid, fy: int, fx: int) -> Grid:
    return as_grid(tuple(c for c in r for _ in range(fx)) for r in g for _ in range(fy))


def downscale(g: Grid, fy: int, fx: int) -> Grid | None:
    h, w = len(g), len(g[0])
    if h % fy or w % fx:
        return None
    small = as_grid(tuple(g[y][x] for x in range(0, w, fx)) for y in range(0, h, fy))
    return small if upscale(small, fy, fx) == g else None


def tile(g: Grid, ny: int, nx: int) -> Grid:
    return as_grid(tuple(r) * nx for _ in range(ny) for r in g)


def untile(g: Grid, ny: int, nx: int) -> Grid | None:
    h, w = len(g), len(g[0])
    if h % ny or w % nx:
        return None
    first = as_grid(r[:w // nx] for r in g[:h // ny])
    return first if tile(first, ny, nx) == g else None


@dataclass(frozen=True)
class Transform:
    name: str
    kind: str  # basic | size | chain | repeat | colour | identity
    forward: Fn
    inverse: InvFn

    def task(self, t: Task) -> Task:
        return Task(f"{t.id}|{self.name}", tuple(Example(self.forward(e.input), self.forward(e.output))
                                                 for e in t.train),
                    tuple(self.forward(g) for g in t.test_inputs),
                    None if t.test_outputs is None else tuple(self.forward(g) for g in t.test_outputs))


def _inv(f: Fn) -> InvFn:
    return lambda g: f(g)


IDENTITY = Transform("identity", "identity", lambda g: g, lambda g: g)
BASIC = [
    Transform("rot90", "basic", rot90, _inv(rot270)),
    Transform("rot180", "basic", rot180, _inv(rot180)),
    Transform("rot270", "basic", rot270, _inv(rot90)),
    Transform("flip_h", "basic", flip_h, _inv(flip_h)),
    Transform("flip_v", "basic", flip_v, _inv(flip_v)),
    Transform("transpose", "basic", transpose, _inv(transpose)),
    Transform("anti_transpose", "basic", anti_transpose, _inv(anti_transpose)),
]
SIZE = [Transform(f"up{fy}x{fx}", "size", (lambda g, a=fy, b=fx: upscale(g, a, b)),
                  (lambda g, a=fy, b=fx: downscale(g, a, b))) for fy, fx in ((2, 2), (2, 1), (1, 2))]
REPEAT = [Transform(f"tile{ny}x{nx}", "repeat", (lambda g, a=ny, b=nx: tile(g, a, b)),
                    (lambda g, a=ny, b=nx: untile(g, a, b))) for ny, nx in ((1, 2), (2, 1), (2, 2))]


def chain(a: Transform, b: Transform) -> Transform:
    """`a` then `b` (a geometric transform then a size change); inverted in the reverse order."""
    def inverse(g: Grid) -> Grid | None:
        x = b.inverse(g)
        return None if x is None else a.inverse(x)
    return Transform(f"{a.name}+{b.name}", "chain", lambda g: b.forward(a.forward(g)), inverse)


CHAIN = [chain(a, b) for a in BASIC[:3] + BASIC[5:6] for b in SIZE[:1]]


def colour_permutation(seed: int) -> Transform:
    """Permute colours 1-9 (0 stays the background)."""
    perm = list(range(1, 10))
    random.Random(seed).shuffle(perm)
    fwd = {0: 0, **{i + 1: p for i, p in enumerate(perm)}}
    back = {v: k for k, v in fwd.items()}
    return Transform(f"colour{seed}", "colour", lambda g: as_grid(tuple(fwd[c] for c in r) for r in g),
                     lambda g: as_grid(tuple(back[c] for c in r) for r in g))


def reorder(t: Task, seed: int) -> Task:
    """The demonstrations in another order (a task-level augmentation: nothing to invert)."""
    ex = list(t.train)
    random.Random(seed).shuffle(ex)
    return Task(f"{t.id}|order{seed}", tuple(ex), t.test_inputs, t.test_outputs)


def catalogue(basic: bool, size: bool, chain_: bool, repeat: bool, colours: int = 0) -> list[Transform]:
    out = [IDENTITY]
    out += BASIC if basic else []
    out += SIZE if size else []
    out += CHAIN if chain_ else []
    out += REPEAT if repeat else []
    out += [colour_permutation(s) for s in range(colours)]
    return out


def voting_transforms() -> list[Transform]:
    """Inference-time views: identity and the seven symmetries of the square (all exactly invertible)."""
    return [IDENTITY, *BASIC]


def all_pairs(n: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n), 2))
