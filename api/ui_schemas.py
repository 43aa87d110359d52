"""Responses of the audit page's read-only routes (api/ui.py): the shapes the page relies on, checked at the
boundary so a change in agent/audit.py that breaks the page fails a test instead of a browser."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class WhoAmI(_Out):
    scope: str  # read | write: the page says up front whether write actions will be refused


class Overview(_Out):
    jobs: dict[str, int]
    documents: int
    learned: int
    versions: int
    latest_version: int | None
    aliases: dict[str, int]
    canary_base: float | None
    changed: list  # a signature the page polls: when it changes, the visible panel is reloaded
    gate: dict
    routing: bool
    poll_seconds: int


class Cell(_Out):
    value: float | None
    correct: float
    total: int


class Probe(_Out):
    question: str
    answer: str
    source: str


class MatrixDoc(_Out):
    id: str
    title: str
    learned_in: int | None
    probes: list[Probe]


class MatrixRow(_Out):
    version: int
    name: str
    status: str | None
    reason: str | None
    doc_id: str | None
    aliases: list[str]
    canary: float | None
    drift: float | None
    cells: list[Cell | None]


class Matrix(_Out):
    view: str
    total_versions: int
    offset: int
    limit: int
    total_documents: int
    doc_offset: int
    doc_limit: int
    documents: list[MatrixDoc]
    base: list[Cell | None] | None
    rows: list[MatrixRow]
    answers_recorded: bool = False  # some cell of this window has the version's replies (GET /v1/ui/cells/...)


class CellProbe(Probe):
    reply: str | None  # the version's reply; None when the monitor did not keep it (older measurements)
    correct: bool | None  # graded as the ledger's figure is (the reference answer contained in the reply)


class CellDetail(_Out):
    version: int
    name: str
    doc_id: str
    title: str
    status: str | None
    reason: str | None
    value: float | None
    correct: float | None
    total: int | None
    learned_in: int | None
    answers_recorded: bool
    probes: list[CellProbe]


class Curves(_Out):
    versions: list[int]
    avg_accuracy: list[float | None]
    bwt: list[float | None]
    canary: list[float | None]
    drift: list[float | None]
    canary_base: float | None
    base_avg: float | None
    retention_by_age: dict[int, float]


class DocumentRow(_Out):
    id: str
    title: str
    learned_in: int | None
    in_prod: bool
    current: float | None
    current_version: int | None
    base: float | None
    jobs: int


class Documents(_Out):
    total: int
    offset: int
    limit: int
    prod: int | None
    documents: list[DocumentRow]


class DocumentDetail(_Out):
    id: str
    title: str
    learned_in: int | None
    in_prod: bool
    probes: list[Probe]
    accuracy: list[dict]
    jobs: list[dict]


class JobRow(_Out):
    id: str
    doc_id: str
    title: str
    state: str
    attempts: int
    error: str | None
    created_at: float
    stages: dict[str, float]
    result: dict


class Jobs(_Out):
    total: int
    offset: int
    limit: int
    state: str | None
    jobs: list[JobRow]


class VersionRow(_Out):
    version: int
    name: str
    parent: int | None
    kind: str
    status: str | None
    reason: str | None
    aliases: list[str]
    documents: int | None
    canary: float | None
    drift: float | None


class Versions(_Out):
    total: int
    offset: int
    limit: int
    aliases: dict[str, int]
    versions: list[VersionRow]


class VersionDetail(VersionRow):
    adapters: list[dict]
    canary_misses: list[dict]
    result: dict
