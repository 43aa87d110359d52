"""What the student trains on for one document, in the configured regime, and the untouched model's
references that keep it close to where it started.

Regimes (`continual.train_on`):
  self-edit    the teacher's grounded self-edit lines + the passage, as raw text (the paper's inner loop)
  passage      the passage alone, as raw text
  qa           question -> short answer pairs built from the passage's own sentences (teacher/cloze.py), in
               the chat format the student is asked in; loss on the answers only (`train.loss: nll`), or
               matched to the untouched model *reading the passage* (`distill`: context distillation), or both
  qa+passage   the qa pairs plus the passage as raw text

Units are stored per document (memory sequences) so replay and redelivered jobs reuse them: raw text as is,
a QA pair as `QA_PREFIX + json`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from core.documents import QA, Passage
from evaluation.closed_book import question_prompt
from student.generation import render_prompt
from student.soft_targets import ReferenceItem, SoftTarget, reference_targets, token_ids
from teacher.cloze import cloze_pairs
from teacher.probes import OPEN_BOOK

QA_PREFIX = "\x1eqa:"


def encode_qa(qa: QA) -> str:
    return QA_PREFIX + json.dumps({"q": qa.question, "a": qa.answer})


def decode_unit(unit: str) -> str | QA:
    if unit.startswith(QA_PREFIX):
        d = json.loads(unit[len(QA_PREFIX):])
        return QA(d["q"], d["a"])
    return unit


@dataclass
class TrainingMix:
    """The arguments of Student.train_adapter for one document (plus replayed units of earlier ones)."""

    texts: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    soft: list[SoftTarget] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts) + len(self.pairs) + len(self.soft)


def qa_units(passage: Passage, max_pairs: int, seed: int) -> list[str]:
    return [encode_qa(c.qa) for c in cloze_pairs(passage, max_pairs=max_pairs, seed=seed)]


def render_pair(tokenizer, qa: QA) -> tuple[str, str]:
    """(chat prompt, answer): the exact shape the closed-book path asks questions in."""
    return render_prompt(tokenizer, question_prompt(qa.question)), qa.answer


def distill_targets(model, tokenizer, passage: Passage, qas: list[QA], k: int = 64) -> list[SoftTarget]:
    """Context distillation: the reference is `model` with the passage in its prompt; the student sees the
    question alone. Compared on the answer's tokens (+ end of turn)."""
    eos = tokenizer.eos_token_id
    items = []
    for qa in qas:
        completion = token_ids(tokenizer, qa.answer) + (eos,)
        ref = token_ids(tokenizer, render_prompt(tokenizer, OPEN_BOOK.format(context=passage.context, q=qa.question)))
        stu = token_ids(tokenizer, render_prompt(tokenizer, question_prompt(qa.question)))
        items.append(ReferenceItem(ref, stu, completion))
    return reference_targets(model, items, tokenizer.pad_token_id, k=k)


def build_mix(units: list[str], tokenizer, loss: str, passage: Passage | None = None, model=None,
              k: int = 64) -> TrainingMix:
    """Split stored units into raw texts and QA pairs; with loss distill/both, the current document's pairs
    (those of `passage`) become soft targets against `model` reading it. Replayed pairs stay hard."""
    mix = TrainingMix()
    qas: list[QA] = []
    for u in units:
        d = decode_unit(u)
        if isinstance(d, QA):
            qas.append(d)
        else:
            mix.texts.append(d)
    if loss != "nll" and passage is not None and model is not None and qas:
        mix.soft = distill_targets(model, tokenizer, passage, qas, k)
    else:
        mix.pairs = [render_pair(tokenizer, qa) for qa in qas]
    return mix
