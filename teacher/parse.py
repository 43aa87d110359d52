"""Turn a teacher's raw self-edit text into training units (lines, QA blocks or rewrites)."""
from __future__ import annotations

import re

from core.settings.teacher import SelfEditFormat

_BULLET = re.compile(r"^\s*(?:[-*+•·]+|\(?\d{1,3}[.):]|\(?[a-zA-Z][.)])\s+")
_LABEL = re.compile(r"^\s*(?:true|fact|statement|implication|point|line)\s*\d{0,3}\s*[:.)-]\s*", re.I)
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")
_MD = re.compile(r"(\*\*|__|`+|^#+\s*|^>\s*)")
_HEADER = re.compile(r"^(?:statements?|implications?|rewrites?|pairs?|version\s*\d*|rewrite\s*\d*|answer)\s*:?\s*$", re.I)
_Q = re.compile(r"^\s*(?:q|question)\s*\d*\s*[:.)-]\s*(.+)$", re.I)
_A = re.compile(r"^\s*(?:a|answer)\s*\d*\s*[:.)-]\s*(.+)$", re.I)


def clean_line(line: str) -> str:
    s = _LABEL.sub("", _BULLET.sub("", line.strip()))
    s = _MD.sub("", s).strip()
    s = re.sub(r"\s+", " ", s)
    return s.strip(" \t-*")


def _is_junk(s: str) -> bool:
    if not s or _HEADER.match(s) or s.endswith(":"):
        return True
    letters = sum(c.isalpha() for c in s)
    return letters < 3 or letters / max(len(s), 1) < 0.4


def _dedupe(units: list[str]) -> list[str]:
    seen, out = set(), []
    for u in units:
        k = re.sub(r"\W+", " ", u.lower()).strip()
        if k and k not in seen:
            seen.add(k)
            out.append(u)
    return out


def split_sentences(line: str) -> list[str]:
    """A line holding several sentences becomes several units, so one invented clause costs only itself."""
    return [s.strip() for s in _SENT.split(line) if s.strip()]


def parse_lines(text: str) -> list[str]:
    units = [s for x in text.splitlines() for s in split_sentences(clean_line(x))]
    return _dedupe([s for s in units if not _is_junk(s)])


def parse_qa(text: str) -> list[str]:
    """Q/A blocks -> 'Question: ...\\nAnswer: ...' units; an unanswered question is dropped."""
    units, q = [], None
    for raw in text.splitlines():
        line = clean_line(raw) if not _Q.match(raw) and not _A.match(raw) else raw.strip()
        if m := _Q.match(line):
            q = clean_line(m.group(1))
        elif (m := _A.match(line)) and q:
            a = clean_line(m.group(1))
            if a and not _is_junk(q):
                units.append(f"Question: {q}\nAnswer: {a}")
            q = None
    return _dedupe(units)


def parse_rewrites(text: str) -> list[str]:
    blocks = re.split(r"\n\s*\n|^\s*(?:version|rewrite)\s*\d*\s*:?\s*$", text, flags=re.I | re.M)
    units = []
    for b in blocks:
        if not b:
            continue
        s = " ".join(clean_line(x) for x in b.splitlines() if not _is_junk(clean_line(x)))
        if s and not _is_junk(s):
            units.append(s)
    return _dedupe(units)


def parse_self_edit(text: str, fmt: SelfEditFormat) -> list[str]:
    if fmt == "self-qa":
        return parse_qa(text)
    if fmt == "rewrite":
        return parse_rewrites(text)
    return parse_lines(text)


def training_sequences(title: str, units: list[str], context: str | None) -> list[str]:
    """Each unit becomes one title-prefixed sequence; the raw passage is one more (the paper's recipe)."""
    seqs = [f"{title}\n{u}" for u in units]
    if context is not None:
        seqs.append(f"{title}\n{context}")
    return seqs
