"""Grounding guard: keep only self-edit units whose facts can be found in the passage.

Why lexical + entity overlap: the measured failure of a small teacher is invented specifics (wrong dates,
people, places). Those are exactly the tokens an overlap check can verify without another model call: every
number and proper noun in a unit must occur in the passage, and most of its content words must too. It is
cheap (microseconds per line), deterministic, and explains each drop. It cannot catch a wrong *relation*
between true entities; that residue is what teacher RL (the student's measured gain) is for.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.settings.teacher import GroundingSettings

_STOP = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just me more most my no nor not now of
    off on once only or other our ours out over own same she should so some such than that the their theirs them
    then there these they this those through to too under until up very was we were what when where which while
    who whom why will with would you your yours one two many much may might must shall also well first new known
    called named passage text according states said says mentioned question answer statement statements
    following however therefore thus since within without""".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d[\d,.]*")


def _word(tok: str) -> str:
    """Lowercase, possessive dropped: "NASA's" is grounded by "NASA"."""
    w = tok.lower()
    return w[:-2] if w.endswith(("'s", "’s")) else w


def _norm_num(tok: str) -> str:
    return tok.replace(",", "").rstrip(".")


def _stem(w: str) -> str:
    w = _word(w).strip("'-")
    for suf in ("ies", "ing", "ed", "es", "s", "ly"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def _keys(text: str) -> set[str]:
    """Comparable keys of a text: normalised numbers, lowercased words and their stems."""
    out = set()
    for tok in _WORD.findall(text):
        if tok[0].isdigit():
            out.add(_norm_num(tok))
        else:
            out.add(_word(tok))
            out.add(_stem(tok))
    return out


@dataclass
class PassageIndex:
    """Token sets of one passage (whole, and per window of adjacent sentences), computed once per passage."""

    words: set[str] = field(default_factory=set)
    stems: set[str] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)
    windows: list[set[str]] = field(default_factory=list)

    @classmethod
    def of(cls, title: str, context: str, window: int = 2) -> "PassageIndex":
        from teacher.parse import split_sentences

        idx = cls()
        for tok in _WORD.findall(f"{title} {context}"):
            if tok[0].isdigit():
                idx.numbers.add(_norm_num(tok))
            else:
                idx.words.add(_word(tok))
                idx.stems.add(_stem(tok))
        sents = split_sentences(context) or [context]
        title_keys = _keys(title)
        w = max(1, min(window, len(sents))) if window else len(sents)
        idx.windows = [title_keys | _keys(" ".join(sents[i : i + w])) for i in range(len(sents) - w + 1)]
        return idx

    def _in(self, t: str, keys: set[str]) -> bool:
        return _norm_num(t) in keys if t[0].isdigit() else (_word(t) in keys or _stem(t) in keys)


@dataclass(frozen=True)
class Verdict:
    unit: str
    kept: bool
    support: float
    reason: str = ""


def check_unit(unit: str, idx: PassageIndex, s: GroundingSettings) -> Verdict:
    toks = _WORD.findall(unit)
    content = [t for t in toks if t[0].isdigit() or _word(t) not in _STOP]
    if len(content) < s.min_content_words:
        return Verdict(unit, False, 0.0, f"too short ({len(content)} content words)")
    if s.require_entities:
        for t in content:
            if t[0].isdigit() and _norm_num(t) not in idx.numbers:
                return Verdict(unit, False, 0.0, f"number not in passage: {t}")
        lines = unit.splitlines()
        starts = {ln.split()[0] for ln in lines if ln.split()}
        for t in content:
            if t[0].isupper() and t not in starts and _word(t) not in idx.words and _stem(t) not in idx.stems:
                return Verdict(unit, False, 0.0, f"name not in passage: {t}")
    # Support is measured against the best window of adjacent passage sentences, not the whole passage:
    # true names recombined from different sentences into a false relation score low.
    support = max(sum(idx._in(t, keys) for t in content) for keys in idx.windows) / len(content)
    if support < s.min_support:
        return Verdict(unit, False, support, f"support {support:.2f} < {s.min_support:.2f}")
    return Verdict(unit, True, support)


def guard(units: list[str], title: str, context: str, s: GroundingSettings) -> tuple[list[str], list[Verdict]]:
    """Return (kept units, verdicts for dropped ones). Disabled guard keeps everything."""
    if not s.enabled:
        return list(units), []
    idx = PassageIndex.of(title, context, s.window_sentences)
    kept, dropped = [], []
    for u in units:
        v = check_unit(u, idx, s)
        (kept.append(u) if v.kept else dropped.append(v))
    return kept, dropped
