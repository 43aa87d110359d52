"""Documents (passages) and their QA probes, as read from SQuAD/SEAL-style JSON files."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


class DocumentFormatError(ValueError):
    """A documents file is malformed; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class QA:
    question: str
    answer: str


@dataclass(frozen=True)
class Passage:
    title: str
    context: str
    questions: tuple[QA, ...] = field(default_factory=tuple)

    @property
    def doc_id(self) -> str:
        """Content hash: the same passage gets the same id in every run and every process."""
        return hashlib.sha256(f"{self.title}\n{self.context}".encode()).hexdigest()[:16]


def _text(entry: dict, key: str, where: str, required: bool = True) -> str:
    v = entry.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or not v.strip():
        raise DocumentFormatError(f"{where}: field {key!r} must be a non-empty string")
    return v.strip()


def passage_from_dict(entry: object, where: str = "passage") -> Passage:
    if not isinstance(entry, dict):
        raise DocumentFormatError(f"{where}: expected an object with 'title' and 'context'")
    qs_raw = entry.get("questions", [])
    if not isinstance(qs_raw, list):
        raise DocumentFormatError(f"{where}: 'questions' must be a list")
    qs = []
    for j, q in enumerate(qs_raw):
        if not isinstance(q, dict):
            raise DocumentFormatError(f"{where}.questions[{j}]: expected an object with 'question' and 'answer'")
        qs.append(QA(_text(q, "question", f"{where}.questions[{j}]"), _text(q, "answer", f"{where}.questions[{j}]")))
    return Passage(_text(entry, "title", where, required=False) or "Untitled", _text(entry, "context", where), tuple(qs))


def read_json(path: str | Path) -> object:
    p = Path(path)
    if not p.is_file():
        raise DocumentFormatError(f"file not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DocumentFormatError(f"{p}: not valid JSON: {e}") from e


def load_passages(path: str | Path) -> list[Passage]:
    """Accept one passage object or a list of them."""
    data = read_json(path)
    entries = data if isinstance(data, list) else [data]
    if not entries:
        raise DocumentFormatError(f"{path}: contains no passages")
    return [passage_from_dict(e, f"{Path(path).name}[{i}]") for i, e in enumerate(entries)]
