"""A passage as raw training text, in titled parts that fit the student's window (what raw-text training learns,
and what recite-then-read asks the adapter to write out again, part by part, from each part's title line)."""
from __future__ import annotations

import re

from core.documents import Passage
from memory.router import UNSPACED


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[\u3002\uff01\uff1f\uff1b])")  # . ! ? ; and the CJK full stops


def _pieces(text: str) -> list[tuple[str, float]]:
    """The text as (piece, weight) in order, with its own whitespace kept. The weight is in English words (about
    1.3 tokens of an English-centric BPE such as SmolLM2's): an ASCII word weighs 1 (a long one, its length / 7);
    a word with other letters 0.35 per UTF-8 byte of each such letter (Cyrillic, Greek, Arabic, Devanagari,
    accented Latin: byte-level BPE splits them finely); a character of a script written without spaces 1.5
    (Chinese, Japanese, Korean, Thai: about two tokens each). Measured on SmolLM2's tokenizer
    (tests/test_long_documents.py): a 300-word part of any of these scripts stays within the 512-token window."""
    out = []
    for m in re.finditer(r"\S+\s*", text):
        w = m.group(0)
        if UNSPACED.search(w) is None:
            out.append((w, _word_weight(w)))
            continue
        at = 0
        for run in UNSPACED.finditer(w):
            if run.start() > at:
                out.append((w[at:run.start()], _word_weight(w[at:run.start()])))
            out += [(c, 1.5) for c in run.group(0)]
            at = run.end()
        if at < len(w):
            out.append((w[at:], _word_weight(w[at:])))
    return out


def _word_weight(w: str) -> float:
    w = w.strip()
    if w.isascii():
        return max(1.0, len(w) / 7)  # long compounds ("Oktoberfest") take more than one token
    return max(1.0, sum(0.25 if c.isascii() else 0.35 * len(c.encode()) for c in w))


def passage_texts(passage: Passage, max_words: int = 300) -> list[str]:
    """The passage as raw training text: whole when it fits, else consecutive runs of whole sentences of at most
    `max_words` English words' worth of tokens (see `_pieces`), each titled with its part (a
    sequence past the window would be cut and its tail never learned). Every character of the text lands in
    exactly one part. A SQuAD paragraph is one part, exactly `title + newline + context` as before."""
    pieces = _pieces(passage.context)
    if sum(w for _, w in pieces) <= max_words:
        return [f"{passage.title}\n{passage.context}"]
    parts, cur, weight = [], [], 0.0
    text = passage.context
    cuts = [0, *(m.end() for m in _SENTENCE_END.finditer(text)), len(text)]
    for a, b in zip(cuts, cuts[1:]):
        sp = _pieces(text[a:b])  # a sentence with the whitespace after it
        sw = sum(w for _, w in sp)
        if cur and weight + sw > max_words:
            parts.append(cur)
            cur, weight = [], 0.0
        for piece, w in sp:  # a sentence longer than a part is cut between words (or characters)
            if cur and weight + w > max_words:
                parts.append(cur)
                cur, weight = [], 0.0
            cur.append(piece)
            weight += w
    if cur:
        parts.append(cur)
    texts = ["".join(p).strip() for p in parts]
    texts = [t for t in texts if t]
    return [f"{passage.title} (part {i + 1} of {len(texts)})\n{t}" for i, t in enumerate(texts)]


def recitation_parts(passage: Passage) -> list[tuple[str, str]]:
    """(the title line an adapter continues, the part it should write out) for each part of the passage."""
    return list(zip(recitation_prompts(passage), passage_texts(passage)))


def recitation_prompts(passage: Passage) -> list[str]:
    """Each part's title line: what the adapter is asked to continue when it recites the passage."""
    return [t.split("\n", 1)[0] + "\n" for t in passage_texts(passage)]
