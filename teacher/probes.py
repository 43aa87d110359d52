"""Probes for documents that arrive without QA: the teacher writes question/answer pairs, and only pairs
that are grounded and answerable are kept.

A pair is kept if (1) its answer is a short span that occurs verbatim (normalized) in the passage, so the
probe cannot test an invented fact, and (2) the base model, *given the passage in context*, answers the
question with text containing that answer, so the probe is answerable at all. What remains measures
whether the student learned the passage, which is what the forgetting monitor needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.documents import QA, Passage
from core.settings.teacher import TeacherSettings
from evaluation.closed_book import OPEN_BOOK
from evaluation.graders import contains, normalize
from student.generation import SamplingParams, generate
from teacher.parse import parse_qa
from teacher.prompts import self_edit_prompt



@dataclass
class ProbeResult:
    kept: list[QA]
    dropped: list[tuple[QA, str]] = field(default_factory=list)


def _pairs(units: list[str]) -> list[QA]:
    out = []
    for u in units:
        q, _, a = u.partition("\nAnswer: ")
        out.append(QA(q.removeprefix("Question: ").strip(), a.strip().rstrip(".")))
    return out


def candidate_probes(passage: Passage, raw: list[str], max_answer_words: int = 8) -> ProbeResult:
    """Grounding filter on the teacher's raw QA text: answers must be short spans of the passage."""
    seen, candidates, dropped = set(), [], []
    for text in raw:
        for qa in _pairs(parse_qa(text)):
            key = normalize(qa.question)
            if key in seen:
                continue
            seen.add(key)
            if not qa.answer or len(qa.answer.split()) > max_answer_words:
                dropped.append((qa, "answer missing or too long"))
            elif not contains(passage.context, qa.answer):
                dropped.append((qa, "answer not in passage"))
            elif contains(qa.question, qa.answer):
                dropped.append((qa, "question gives the answer away"))
            else:
                candidates.append(qa)
    return ProbeResult(candidates, dropped)


def write_probes(model, tokenizer, passage: Passage, settings: TeacherSettings, seed: int,
                 max_probes: int = 5, max_answer_words: int = 8) -> ProbeResult:
    params = SamplingParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                            top_p=settings.top_p, repetition_penalty=settings.repetition_penalty, n=settings.samples)
    raw = generate(model, tokenizer, [self_edit_prompt(passage, "self-qa")], params, seed=seed)[0]
    cand = candidate_probes(passage, raw, max_answer_words)
    return answerable(model, tokenizer, passage, cand.kept, max_probes, cand.dropped)


def sentence_probes(model, tokenizer, passage: Passage, seed: int, max_probes: int = 5,
                    exclude: list[QA] | None = None) -> ProbeResult:
    """Probes built from the passage's own sentences (a span asked for), kept when the model reading the passage
    answers them: what a document without questions gets when the teacher writes too few usable ones (a 135M
    teacher rarely follows the question-answer format). Nothing invented; training units that ask one of them
    are removed before training (agent/training_data.without_probes)."""
    from teacher.cloze import cloze_pairs

    taken = {normalize(q.question) for q in exclude or []}
    pool = [c.qa for c in cloze_pairs(passage, 64, seed, kinds=("cloze",))
            if c.kind != "phrase" and len(c.qa.answer.split()) <= 5 and normalize(c.qa.question) not in taken]
    return answerable(model, tokenizer, passage, pool, max_probes, [])


def answerable(model, tokenizer, passage: Passage, candidates: list[QA], max_probes: int,
               dropped: list[tuple[QA, str]]) -> ProbeResult:
    """Keep the candidates the model answers with the passage in context (up to `max_probes`)."""
    dropped = list(dropped)
    if not candidates:
        return ProbeResult([], dropped)
    prompts = [OPEN_BOOK.format(context=passage.context, q=qa.question) for qa in candidates]
    answers = generate(model, tokenizer, prompts, SamplingParams(max_new_tokens=24), batch_size=4)
    kept = []
    for qa, a in zip(candidates, answers):
        if contains(a[0], qa.answer) and len(kept) < max_probes:
            kept.append(qa)
        else:
            dropped.append((qa, "not answerable with the passage in context" if len(kept) < max_probes else "over budget"))
    return ProbeResult(kept, dropped)
