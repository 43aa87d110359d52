"""Test-time training data from a task's demonstrations: leave-one-out and leave-two-out sub-tasks, each
augmented by the spec's transforms, deduplicated, kept within 30x30 and the model's context, capped.

A sub-task hides one demonstration and asks for its output from the others, so the model practises the
task's own rule on the task's own data; transforms multiply those views of the rule.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from tasks.arc.augment import all_pairs, catalogue, reorder
from tasks.arc.grids import Example, Grid, Task, fits, grid_text
from tasks.arc.spec import ToolSpec


@dataclass(frozen=True)
class TTTExample:
    prompt: str
    completion: str
    source: str  # which sub-task and transform made it


@dataclass
class TTTData:
    examples: list[TTTExample]
    candidates: int  # sub-task views before dedup, size and length limits, and the cap
    duplicates: int
    too_big: int  # a grid over 30x30 after the transform
    too_long: int  # over the token limit
    capped: int


def task_prompt(demos: tuple[Example, ...] | list[Example], query: Grid) -> str:
    """Demonstrations then the query, raw text (no chat template): the student completes the output grid."""
    parts = [f"Input:\n{grid_text(d.input)}\nOutput:\n{grid_text(d.output)}" for d in demos]
    parts.append(f"Input:\n{grid_text(query)}\nOutput:\n")
    return "\n\n".join(parts)


def sub_tasks(task: Task, leave_two_out: bool = True) -> list[tuple[str, tuple[Example, ...], Example]]:
    ex = task.train
    out = []
    if len(ex) >= 2:
        for i in range(len(ex)):
            out.append((f"loo{i}", ex[:i] + ex[i + 1:], ex[i]))
    if leave_two_out and len(ex) >= 3:
        for i, j in all_pairs(len(ex)):
            rest = tuple(e for k, e in enumerate(ex) if k not in (i, j))
            out.append((f"l2o{i}{j}>{i}", rest, ex[i]))
            out.append((f"l2o{i}{j}>{j}", rest, ex[j]))
    return out


def build(task: Task, spec: ToolSpec, count_tokens, max_examples: int, max_tokens: int, seed: int,
          leave_two_out: bool = True) -> TTTData:
    a = spec.augmentations
    transforms = catalogue(a.basic, a.size, a.chain, a.repeat, a.colours)
    orders = [None, *range(1, 3)] if a.reorder else [None]
    seen, kept = set(), []
    stats = dict(candidates=0, duplicates=0, too_big=0, too_long=0)
    for name, demos, query in sub_tasks(task, leave_two_out):
        for order in orders:
            base = Task(name, demos, (query.input,), (query.output,))
            if order is not None:
                base = reorder(base, seed * 1000 + order)
            for t in transforms:
                stats["candidates"] += 1
                view = t.task(base)
                grids = [g for e in view.train for g in (e.input, e.output)] + [view.test_inputs[0],
                                                                                view.test_outputs[0]]
                if not all(fits(g) for g in grids):
                    stats["too_big"] += 1
                    continue
                prompt, completion = task_prompt(view.train, view.test_inputs[0]), grid_text(view.test_outputs[0])
                if (prompt, completion) in seen:
                    stats["duplicates"] += 1
                    continue
                seen.add((prompt, completion))
                if count_tokens(prompt + completion) + 1 > max_tokens:
                    stats["too_long"] += 1
                    continue
                kept.append(TTTExample(prompt, completion, f"{name}{'|order' if order else ''}|{t.name}"))
    random.Random(seed).shuffle(kept)
    capped = max(0, len(kept) - max_examples)
    return TTTData(kept[:max_examples], capped=capped, **stats)
