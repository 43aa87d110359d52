"""Self-edits written elsewhere (e.g. by a larger model), in the SEAL data format."""
from __future__ import annotations

from pathlib import Path

from core.documents import DocumentFormatError, Passage, passage_from_dict, read_json
from core.settings.teacher import GroundingSettings, SelfEditFormat
from teacher.self_edit import SelfEdit, build_self_edit


class ExternalEdits:
    """Completions keyed by passage id. Format: [{"title","context","questions","completions":[str,...]}]."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        data = read_json(self.path)
        if not isinstance(data, list) or not data:
            raise DocumentFormatError(f"{self.path}: expected a non-empty JSON list of passages with 'completions'")
        self.by_doc: dict[str, list[str]] = {}
        self.passages: list[Passage] = []
        for i, entry in enumerate(data):
            where = f"{self.path.name}[{i}]"
            p = passage_from_dict(entry, where)
            comps = entry.get("completions")
            if not isinstance(comps, list) or not comps or not all(isinstance(c, str) for c in comps):
                raise DocumentFormatError(f"{where}: 'completions' must be a non-empty list of strings")
            self.by_doc.setdefault(p.doc_id, []).extend(comps)
            self.passages.append(p)

    def self_edit(
        self, passage: Passage, fmt: SelfEditFormat, grounding: GroundingSettings, first_only: bool = True
    ) -> SelfEdit:
        comps = self.by_doc.get(passage.doc_id)
        if comps is None:
            raise KeyError(f"{self.path.name} has no completions for passage {passage.title!r} ({passage.doc_id})")
        return build_self_edit(passage, comps[:1] if first_only else comps, fmt, grounding, f"external:{self.path.name}")
