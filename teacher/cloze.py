"""Question-answer pairs built from the document's own sentences, for chat-formatted training.

A 135M teacher writes poor questions (mostly invented facts, rarely the asked format), but every passage
already holds its answers: names, numbers, dates and titled phrases. Each such span becomes an answer, and
the sentence around it, with the span asked for, becomes the question. Nothing is invented, so nothing false
is planted, and the student learns the facts in the same question -> short answer shape it is asked in.
"""
from __future__ import annotations

import random
import re
from itertools import zip_longest
from dataclasses import dataclass

from core.documents import QA, Passage

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_NUMBER = re.compile(r"(?<![\d:.,–-])\b\d[\d,.]*(?:\s?(?:%|percent|million|billion|thousand|hundred))?(?![\d:–])")
# Capitalised runs ("Jonathan Stewart", "Super Bowl 50", "University of Chicago")
_NAME = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:of|the|de|and|for|von|van|la)?\s*[A-Z0-9][\w'’.-]*)*")
_STOP_START = {"The", "A", "An", "In", "On", "At", "It", "He", "She", "They", "This", "That", "These", "Those",
               "His", "Her", "Its", "Their", "As", "After", "Before", "During", "When", "While", "However", "But",
               "And", "Although", "Since", "For", "By", "With", "From", "Of", "To", "There", "Some", "Many", "Most",
               "Other", "Both", "Each", "All", "If", "Because", "Also", "Then", "Thus", "Its", "One", "Two", "We", "I"}


@dataclass(frozen=True)
class ClozePair:
    qa: QA
    kind: str  # year | number | name | phrase
    sentence: str


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if len(s.split()) >= 5]


def _tail(sentence: str) -> list[tuple[str, str]]:
    """A sentence with no name or number: ask for its last words (usually the object of the main verb)."""
    body = sentence.rstrip(" .!?;:")
    clause = re.split(r",|;|\bthat\b|\bwhich\b", body)[-1].split()
    words = clause[-3:] if len(clause) > 4 else []
    return [(" ".join(words), "phrase")] if words else []


def _spans(sentence: str, capitalised: set[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _YEAR.finditer(sentence):
        out.append((m.group(0), "year"))
    for m in _NUMBER.finditer(sentence):
        s = m.group(0).rstrip(".,")
        if s and not _YEAR.fullmatch(s):
            out.append((s, "number"))
    for m in _NAME.finditer(sentence):
        words = m.group(0).rstrip(".,").split()
        if words and m.start() == 0 and words[0] not in capitalised:
            words = words[1:]  # capitalised only because it starts the sentence
        while words and words[0] in _STOP_START:
            words = words[1:]
        if words and words[-1].endswith(("'s", "’s")):
            words[-1] = words[-1][:-2]
        while words and words[-1].lower() in {"of", "the", "de", "and", "for", "von", "van", "la"}:
            words = words[:-1]
        span = " ".join(words)
        if span and (len(words) > 1 or m.start() > 0) and not _YEAR.fullmatch(span):
            out.append((span, "name"))
    seen, uniq = set(), []
    for s, k in out:
        if s.lower() not in seen and len(s) >= 2:
            seen.add(s.lower())
            uniq.append((s, k))
    return uniq


_ASK = {"year": "what year", "number": "how many", "name": "what", "phrase": "what"}
KINDS = ("cloze", "complete", "about")
_CLAUSE = re.compile(r"(?<=[,;:])\s+")


def _around(sentence: str, idx: int, span: str, min_words: int = 8, max_words: int = 22) -> str:
    """The clause holding the span, widened by its neighbours until it has `min_words`: a long sentence asked
    whole buries the question (SQuAD asks in about ten words)."""
    if len(sentence.split()) <= max_words:
        return sentence
    parts, pos, spans = _CLAUSE.split(sentence), 0, []
    for part in parts:
        start = sentence.find(part, pos)
        spans.append((start, start + len(part)))
        pos = start + len(part)
    hit = next((i for i, (a, b) in enumerate(spans) if a <= idx < b), None)
    if hit is None or not spans[hit][0] <= idx + len(span) <= spans[hit][1]:
        return sentence
    lo = hi = hit
    while len(sentence[spans[lo][0]:spans[hi][1]].split()) < min_words and (lo > 0 or hi < len(spans) - 1):
        if hi < len(spans) - 1:
            hi += 1
        if len(sentence[spans[lo][0]:spans[hi][1]].split()) < min_words and lo > 0:
            lo -= 1
    return sentence[spans[lo][0]:spans[hi][1]]


def _cloze(passage: Passage, sent: str, capitalised: set[str], short: bool) -> list[ClozePair]:
    pairs = []
    for span, kind in _spans(sent, capitalised) or _tail(sent):
        idx = sent.find(span)
        if idx < 0 or sent.count(span) > 1:
            continue
        base = _around(sent, idx, span) if short else sent
        idx = base.find(span)
        after = base[idx + len(span):]
        ask = "what" if after.startswith("-") else _ASK[kind]
        asked = base[:idx] + ask + after
        asked = asked.rstrip(" .;:!,") + "?"
        if span.lower() in asked.lower():
            continue
        q = f"{passage.title}: {asked}" if passage.title.lower() not in asked.lower() else asked
        pairs.append(ClozePair(QA(q, span), kind, sent))
    return pairs


def _complete(passage: Passage, sent: str) -> list[ClozePair]:
    """Sentence completion: the first part of a sentence, the rest as the answer (Self-Tuning's study task)."""
    words = sent.rstrip(" .!?").split()
    if len(words) < 8:
        return []
    out = []
    for frac in (0.4, 0.7):
        cut = max(3, round(len(words) * frac))
        head, rest = " ".join(words[:cut]), " ".join(words[cut:])
        out.append(ClozePair(QA(f"{passage.title}: complete the sentence \"{head} ...\"", rest), "complete", sent))
    return out


def _about(passage: Passage, sent: str, capitalised: set[str]) -> list[ClozePair]:
    """"What does the text about T say about X?" for the names of a sentence; the sentence is the answer."""
    names = [sp for sp, kind in _spans(sent, capitalised) if kind == "name" and sp.lower() != passage.title.lower()]
    return [ClozePair(QA(f"What does the text about {passage.title} say about {n}?", sent.strip()), "about", sent)
            for n in names[:2]]


def cloze_pairs(passage: Passage, max_pairs: int = 24, seed: int = 0,
                kinds: tuple[str, ...] | list[str] = ("cloze",)) -> list[ClozePair]:
    """Up to `max_pairs` (question, answer) pairs, spread over the passage's sentences and over `kinds`:
    `cloze` asks for one span of a sentence (the whole sentence asked, as before, when it is the only kind;
    the clause around the span when others are mixed in), `complete` asks for the rest of a sentence, `about`
    asks what the passage says about a name. Questions carry the title so the fact stays anchored."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown question kinds {sorted(unknown)}; use {', '.join(KINDS)}")
    short = len(set(kinds)) > 1
    per_sentence = []
    sents = sentences(passage.context)
    capitalised = {w for sent in sents for w in sent.split()[1:] if w[:1].isupper()}
    rng = random.Random(seed)
    for sent in sents:
        by_kind = []
        for kind in kinds:
            got = (_cloze(passage, sent, capitalised, short) if kind == "cloze" else
                   _complete(passage, sent) if kind == "complete" else _about(passage, sent, capitalised))
            rng.shuffle(got)
            by_kind.append(got)
        # interleave the kinds within a sentence, so a cap still sees every kind
        pairs = [p for tier in zip_longest(*by_kind) for p in tier if p is not None]
        if pairs:
            per_sentence.append(pairs)
    out: list[ClozePair] = []
    depth = 0
    while len(out) < max_pairs and any(depth < len(p) for p in per_sentence):
        for pairs in per_sentence:  # round-robin: one pair per sentence before a second from any
            if depth < len(pairs) and len(out) < max_pairs:
                out.append(pairs[depth])
        depth += 1
    if short:  # room left: the span questions again in other words (several wordings of a fact help recall)
        again = [c for c in out if c.kind not in ("complete", "about")]
        for c in again[: max_pairs - len(out)]:
            asked = c.qa.question.split(": ", 1)[1] if c.qa.question.startswith(f"{passage.title}: ") else c.qa.question
            q = f"According to the text about {passage.title}, {asked[:1].lower()}{asked[1:]}"
            out.append(ClozePair(QA(q, c.qa.answer), c.kind, c.sentence))
    return out
