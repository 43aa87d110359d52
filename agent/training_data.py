"""What the student trains on for one document, in the configured regime, and the untouched model's
references that keep it close to where it started.

Regimes (`continual.train_on`):
  self-edit    the teacher's grounded self-edit lines + the passage, as raw text (the paper's inner loop)
  passage      the passage alone, as raw text
  qa           question -> short answer pairs built from the passage's own sentences (teacher/cloze.py), in
               the chat format the student is asked in; loss on the answers only (`train.loss: nll`), or
               matched to the untouched model *reading the passage* (`distill`: context distillation), or both
  qa+passage   the qa pairs plus the passage as raw text (`continual.passage_copies` copies)
  masked+passage  the passage as raw text plus copies of it with a random share of its words blanked, each
               trained to restore the whole passage (masked reconstruction, arXiv 2510.09885)

`continual.masked_copies` adds the masked-reconstruction copies to any regime.

Units are stored per document (memory sequences) so replay and redelivered jobs reuse them: raw text as is,
a QA pair as `QA_PREFIX + json`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from core.documents import QA, Passage
from evaluation.closed_book import OPEN_BOOK, question_prompt
from student.generation import render_prompt
from student.soft_targets import ReferenceItem, SoftTarget, reference_targets, token_ids
from teacher.cloze import cloze_pairs
from teacher.passages import passage_texts  # noqa: F401  (re-exported: agent.prepare and the tests use it here)

QA_PREFIX = "\x1eqa:"
MASK_PREFIX = "\x1emask:"
BLANK = "___"


@dataclass(frozen=True)
class Masked:
    """A passage with words blanked (`masked`), to be restored whole (`full`)."""

    title: str
    masked: str
    full: str

    def pair(self) -> tuple[str, str]:
        """Raw text like passage training (no chat template): the gapped copy, then the passage restored."""
        return f"{self.title} (with gaps)\n{self.masked}\n\n{self.title}\n", self.full


def masked_units(passage: Passage, copies: int, low: float, high: float, seed: int,
                 window_words: int = 160) -> list[str]:
    """`copies` gapped copies of the passage, each with its own share of words blanked, drawn uniformly from
    [low, high] (the paper's 5-95%); words, not tokens, so a blank never splits a name mid-token. A passage
    longer than `window_words` is taken a window at a time (copies cycle through the windows), so the gapped
    copy and its restoration fit one training sequence together."""
    import random

    rng = random.Random(seed)
    words = passage.context.split()
    windows = [words[i:i + window_words] for i in range(0, len(words), window_words)] or [[]]
    out = []
    for c in range(copies):
        win = windows[c % len(windows)]
        if not win:
            break
        share = rng.uniform(low, high)
        k = max(1, round(share * len(win)))
        hidden = set(rng.sample(range(len(win)), min(k, len(win))))
        masked = " ".join(BLANK if i in hidden else w for i, w in enumerate(win))
        out.append(MASK_PREFIX + json.dumps({"t": passage.title, "m": masked, "f": " ".join(win)}))
    return out


def encode_qa(qa: QA) -> str:
    return QA_PREFIX + json.dumps({"q": qa.question, "a": qa.answer})


def without_probes(units: list[str], probes: list[QA]) -> list[str]:
    """The units minus any that asks one of the gate's probe questions (a QA unit with that question, or raw
    text holding it, e.g. a self-qa self-edit line): the gate must measure what training taught about the
    document, never recall of its own questions. Disjoint by construction, whatever wrote the units."""
    from evaluation.graders import normalize

    asked = {normalize(p.question) for p in probes if normalize(p.question)}
    if not asked:
        return list(units)
    out = []
    for u in units:
        d = decode_unit(u)
        text = d.question if isinstance(d, QA) else d.masked if isinstance(d, Masked) else d
        norm = normalize(text)
        if not any(q == norm or q in norm for q in asked):
            out.append(u)
    return out


def decode_unit(unit: str) -> str | QA | Masked:
    if unit.startswith(QA_PREFIX):
        d = json.loads(unit[len(QA_PREFIX):])
        return QA(d["q"], d["a"])
    if unit.startswith(MASK_PREFIX):
        d = json.loads(unit[len(MASK_PREFIX):])
        return Masked(d["t"], d["m"], d["f"])
    return unit


@dataclass
class TrainingMix:
    """The arguments of Student.train_adapter for one document (plus replayed units of earlier ones)."""

    texts: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    soft: list[SoftTarget] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts) + len(self.pairs) + len(self.soft)


def qa_units(passage: Passage, max_pairs: int, seed: int, kinds: tuple[str, ...] | list[str] = ("cloze",)) -> list[str]:
    return [encode_qa(c.qa) for c in cloze_pairs(passage, max_pairs=max_pairs, seed=seed, kinds=tuple(kinds))]


def render_pair(tokenizer, qa: QA) -> tuple[str, str]:
    """(chat prompt, answer): the exact shape the closed-book path asks questions in."""
    return render_prompt(tokenizer, question_prompt(qa.question)), qa.answer


def document_units(passage: Passage, c, seed: int) -> list[str] | None:
    """The units of the regimes that need no teacher (`c`: ContinualSettings); None for `self-edit`, whose units
    the teacher writes. Masked copies are added to every regime that asks for them."""
    text = passage_texts(passage)
    if c.train_on == "self-edit":
        return None
    if c.train_on == "passage":
        units = text * c.passage_copies
    elif c.train_on in ("qa", "qa+passage"):
        units = qa_units(passage, c.qa_pairs, seed, c.qa_kinds)
        if c.train_on == "qa+passage" or not units:
            units += text * c.passage_copies
    else:  # masked+passage
        units = text * c.passage_copies
    return units + with_masked(passage, c, seed)


def with_masked(passage: Passage, c, seed: int) -> list[str]:
    return masked_units(passage, c.masked_copies, c.mask_min, c.mask_max, seed) if c.masked_copies else []


def distill_targets(model, tokenizer, passage: Passage, qas: list[QA], k: int = 64,
                    temperature: float = 1.0) -> list[SoftTarget]:
    """Context distillation: the reference is `model` with the passage in its prompt; the student sees the
    question alone. Compared on the answer's tokens (+ end of turn)."""
    eos = tokenizer.eos_token_id
    items = []
    for qa in qas:
        completion = token_ids(tokenizer, qa.answer) + (eos,)
        ref = token_ids(tokenizer, render_prompt(tokenizer, OPEN_BOOK.format(context=passage.context, q=qa.question)))
        stu = token_ids(tokenizer, render_prompt(tokenizer, question_prompt(qa.question)))
        items.append(ReferenceItem(ref, stu, completion))
    return reference_targets(model, items, tokenizer.pad_token_id, k=k, temperature=temperature)


def build_mix(units: list[str], tokenizer, loss: str, passage: Passage | None = None, model=None,
              k: int = 64, temperature: float = 1.0) -> TrainingMix:
    """Split stored units into raw texts and QA pairs; with loss distill/both, the current document's pairs
    (those of `passage`) become soft targets against `model` reading it. Replayed pairs stay hard."""
    mix = TrainingMix()
    qas: list[QA] = []
    for u in units:
        d = decode_unit(u)
        if isinstance(d, QA):
            qas.append(d)
        elif isinstance(d, Masked):
            mix.pairs.append(d.pair())
        else:
            mix.texts.append(d)
    if loss != "nll" and passage is not None and model is not None and qas:
        mix.soft = distill_targets(model, tokenizer, passage, qas, k, temperature)
    else:
        mix.pairs += [render_pair(tokenizer, qa) for qa in qas]
    return mix
