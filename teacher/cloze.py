"""Question-answer pairs built from the document's own sentences, for chat-formatted training.

A 135M teacher writes poor questions (mostly invented facts, rarely the asked format), but every passage
already holds its answers: names, numbers, dates and titled phrases. Each such span becomes an answer, and
the sentence around it, with the span asked for, becomes the question. Nothing is invented, so nothing false
is planted, and the student learns the facts in the same question -> short answer shape it is asked in.
"""
from __future__ import annotations

import random
import re
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


def cloze_pairs(passage: Passage, max_pairs: int = 24, seed: int = 0) -> list[ClozePair]:
    """Up to `max_pairs` (question, span) pairs, spread over the passage's sentences: each question is a
    sentence with one span replaced by a question phrase, prefixed by the title so the fact stays anchored."""
    per_sentence = []
    sents = sentences(passage.context)
    capitalised = {w for sent in sents for w in sent.split()[1:] if w[:1].isupper()}
    for sent in sents:
        pairs = []
        for span, kind in _spans(sent, capitalised) or _tail(sent):
            idx = sent.find(span)
            if idx < 0 or sent.count(span) > 1:
                continue
            after = sent[idx + len(span):]
            ask = "what" if after.startswith("-") else _ASK[kind]
            asked = sent[:idx] + ask + after
            asked = asked.rstrip(" .;:!") + "?"
            if span.lower() in asked.lower():
                continue
            q = f"{passage.title}: {asked}" if passage.title.lower() not in asked.lower() else asked
            pairs.append(ClozePair(QA(q, span), kind, sent))
        if pairs:
            per_sentence.append(pairs)
    rng = random.Random(seed)
    for pairs in per_sentence:
        rng.shuffle(pairs)
    out: list[ClozePair] = []
    depth = 0
    while len(out) < max_pairs and any(depth < len(p) for p in per_sentence):
        for pairs in per_sentence:  # round-robin: one span per sentence before a second from any
            if depth < len(pairs) and len(out) < max_pairs:
                out.append(pairs[depth])
        depth += 1
    return out
