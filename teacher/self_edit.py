"""A self-edit: the teacher's raw output, the units parsed from it, what the guard dropped, and why."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.documents import Passage
from core.settings.teacher import GroundingSettings, SelfEditFormat
from teacher.grounding import Verdict, guard
from teacher.parse import parse_self_edit, training_sequences


@dataclass
class SelfEdit:
    doc_id: str
    format: str
    source: str  # "teacher" or "external:<file>"
    raw: list[str]
    units: list[str]  # after parsing and (if enabled) the grounding guard
    dropped: list[Verdict] = field(default_factory=list)
    parsed: int = 0

    def sequences(self, passage: Passage, with_passage: bool = True) -> list[str]:
        return training_sequences(passage.title, self.units, passage.context if with_passage else None)

    def to_json(self) -> dict:
        d = asdict(self)
        d["dropped"] = [asdict(v) for v in self.dropped]
        return d


def build_self_edit(
    passage: Passage, raw: list[str], fmt: SelfEditFormat, grounding: GroundingSettings, source: str = "teacher"
) -> SelfEdit:
    """Parse every sample, pool the units (deduplicated across samples), then apply the guard."""
    pooled: list[str] = []
    seen: set[str] = set()
    for text in raw:
        for u in parse_self_edit(text, fmt):
            key = u.lower()
            if key not in seen:
                seen.add(key)
                pooled.append(u)
    kept, dropped = guard(pooled, passage.title, passage.context, grounding)
    return SelfEdit(passage.doc_id, fmt, source, list(raw), kept, dropped, parsed=len(pooled))
