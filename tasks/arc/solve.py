"""Solve a task: test-time training from a spec (LoRA), then prediction by voting over invertible views.

Each view transforms the whole task (demonstrations and test input), the model writes the output grid
greedily, the inverse maps it back; answers that fail to parse or to invert drop out. The two most-voted
grids are the two attempts (ties: the identity view's answer first, then the order of the views).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from core.settings.student import TrainSettings
from tasks.arc.augment import Transform, voting_transforms
from tasks.arc.grids import Grid, Task, grid_text, parse_grid
from tasks.arc.spec import ToolSpec, check_budget
from tasks.arc.ttt_data import build, task_prompt


@dataclass
class Attempt:
    spec: dict | None
    solved: bool
    predictions: list[list[list[list[int]]]]  # per test input, up to `attempts` grids
    ttt_examples: int = 0
    steps: int = 0
    seconds: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    rejected: str = ""  # why the spec was not run (over budget, no data)


def majority(answers: list[Grid | None], attempts: int = 2) -> list[Grid]:
    """The `attempts` most frequent grids; a tie keeps the earlier answer first."""
    counts = Counter(a for a in answers if a is not None)
    first = {}
    for i, a in enumerate(answers):
        if a is not None and a not in first:
            first[a] = i
    return sorted(counts, key=lambda g: (-counts[g], first[g]))[:attempts]


@torch.inference_mode()
def _generate_raw(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = []
    try:
        model.eval()
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = old
    return out


def _answer_budget(task: Task, tokenizer) -> int:
    """Enough new tokens for the largest grid a demonstration shows (x2 for size changes), plus slack."""
    biggest = max(len(tokenizer(grid_text(g), add_special_tokens=False)["input_ids"])
                  for e in task.train for g in (e.input, e.output))
    return min(2 * biggest + 8, 1024)


def predict(student, adapter, task: Task, views: list[Transform] | None = None, attempts: int = 2,
            batch_size: int = 4) -> list[list[Grid]]:
    views = views or voting_transforms()
    tok = student.tokenizer
    budget = _answer_budget(task, tok)
    out = []
    for x in task.test_inputs:
        prompts, kept = [], []
        for v in views:
            t = v.task(task)
            prompts.append(task_prompt(t.train, v.forward(x)))
            kept.append(v)
        with student.use(adapter) as m:
            texts = _generate_raw(m, tok, prompts, budget, batch_size)
        answers = []
        for v, text in zip(kept, texts):
            g = parse_grid(text)
            answers.append(None if g is None else v.inverse(g))
        out.append(majority(answers, attempts))
    return out


def run_spec(student, task: Task, spec: ToolSpec | None, s, seed: int, name: str = "arc-ttt") -> Attempt:
    """One self-edit on one task: build data, train a fresh adapter, predict, check; the adapter is dropped.
    `spec=None` is in-context only (no training). `s`: ArcSettings."""
    t0 = time.perf_counter()
    if spec is None:
        preds = predict(student, None, task, attempts=s.attempts, batch_size=s.batch_size)
        return Attempt(None, task.solved_by(preds), _jsonable(preds),
                       seconds={"predict": round(time.perf_counter() - t0, 2)})
    tok = student.tokenizer
    data = build(task, spec, lambda text: len(tok(text, add_special_tokens=False)["input_ids"]),
                 s.max_examples, s.max_seq_len, seed, s.leave_two_out)
    info = {k: getattr(data, k) for k in ("candidates", "duplicates", "too_big", "too_long", "capped")}
    t_build = time.perf_counter() - t0
    if not data.examples:
        return Attempt(spec.model_dump(), False, [], data=info, rejected="no training example fits the limits")
    try:
        check_budget(spec, len(data.examples), s.max_steps)
    except ValueError as e:
        return Attempt(spec.model_dump(), False, [], len(data.examples), data=info, rejected=str(e))
    tr = spec.training
    settings = TrainSettings(rank=s.rank, alpha=2 * s.rank, learning_rate=tr.learning_rate, epochs=tr.epochs,
                             batch_size=1, max_seq_len=s.max_seq_len)
    if tr.loss == "output_tokens":
        stats = student.train_adapter([], name, seed=seed, settings=settings,
                                      pairs=[(e.prompt, e.completion) for e in data.examples])
    else:
        stats = student.train_adapter([e.prompt + e.completion for e in data.examples], name, seed=seed,
                                      settings=settings)
    t_train = time.perf_counter()
    try:
        preds = predict(student, name, task, attempts=s.attempts, batch_size=s.batch_size)
    finally:
        student.drop(name)
    t_pred = time.perf_counter()
    return Attempt(spec.model_dump(), task.solved_by(preds), _jsonable(preds), len(data.examples), stats.steps,
                   {"build": round(t_build, 2), "train": round(t_train - t0 - t_build, 2),
                    "predict": round(t_pred - t_train, 2)}, info)


def _jsonable(preds: list[list[Grid]]) -> list:
    return [[[list(r) for r in g] for g in attempts] for attempts in preds]
