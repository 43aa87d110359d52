"""What the agent remembers, in SQLite or PostgreSQL: learned documents, their QA probes, and the accuracy ledger
R[version][document] that the forgetting monitor fills after every update."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (Column, Float, ForeignKey, Integer, LargeBinary, MetaData, String, Table, Text, delete, func,
                        select)

from core.documents import QA, Passage
from memory.database import insert, open_engine, read_transaction
from memory.schema import Migration, create, migrate

META = MetaData()
DOCUMENTS = Table("documents", META, Column("doc_id", String(64), primary_key=True),
                  Column("title", Text, nullable=False), Column("context", Text, nullable=False),
                  Column("added_at", Float, nullable=False))
PROBES = Table("probes", META, Column("doc_id", String(64), ForeignKey("documents.doc_id"), primary_key=True),
               Column("idx", Integer, primary_key=True), Column("question", Text, nullable=False),
               Column("answer", Text, nullable=False), Column("source", String(16), nullable=False))
LEARNED = Table("learned", META, Column("doc_id", String(64), primary_key=True),
                Column("version", Integer, primary_key=True))
LEDGER = Table("ledger", META, Column("version", Integer, primary_key=True), Column("doc_id", String(64), primary_key=True),
               Column("correct", Float, nullable=False), Column("total", Integer, nullable=False),
               Column("measured_at", Float, nullable=False))
# The version's own replies to a ledger cell's probes (JSON list of {question, reply, correct}), beside the cell.
# A table of its own, not a column of `ledger`: databases made before it get it from migration 4 on open (SQLite
# and PostgreSQL alike, no ALTER), code that predates it never reads it, and the ledger's scans stay narrow.
LEDGER_ANSWERS = Table("ledger_answers", META, Column("version", Integer, primary_key=True),
                       Column("doc_id", String(64), primary_key=True), Column("answers", Text, nullable=False),
                       Column("measured_at", Float, nullable=False))
REPLY_CHARS = 400  # a reply is kept up to this many characters (the audit shows it; the grade used all of it)
EMBEDDINGS = Table("embeddings", META, Column("doc_id", String(64), primary_key=True),
                   Column("vector", LargeBinary, nullable=False))
SEQUENCES = Table("sequences", META, Column("doc_id", String(64), primary_key=True),
                  Column("idx", Integer, primary_key=True), Column("text", Text, nullable=False))
UPDATES = Table("updates", META, Column("version", Integer, primary_key=True, autoincrement=False),
                Column("doc_id", String(64)), Column("parent", Integer), Column("status", String(16), nullable=False),
                Column("reason", Text), Column("gain", Float), Column("forgetting", Float), Column("info", Text),
                Column("created_at", Float, nullable=False))

# General ability per version (version 0 = the untouched model): canary accuracy and drift from the base.
GENERAL = Table("general", META, Column("version", Integer, primary_key=True, autoincrement=False),
                Column("correct", Integer, nullable=False), Column("total", Integer, nullable=False),
                Column("drift", Float), Column("info", Text), Column("measured_at", Float, nullable=False))

SAMPLES = Table("teacher_samples", META, Column("doc_id", String(64), primary_key=True),
                Column("k", Integer, primary_key=True), Column("teacher", Integer, nullable=False),
                Column("raw", Text, nullable=False), Column("gain", Float), Column("chosen", Integer),
                Column("trained_into", Integer), Column("created_at", Float, nullable=False))

# What a stack adapter writes out of its document, per part (recite-then-read): greedy decoding of fixed weights
# always writes the same, so it is written once (by the learner's gate or the first query) and read from here
# after restarts and cache evictions. Keyed by the adapter id and a hash of the part's title line.
RECITATIONS = Table("recitations", META, Column("adapter_id", String(64), primary_key=True),
                    Column("prompt_sha", String(64), primary_key=True), Column("prompt", Text, nullable=False),
                    Column("text", Text, nullable=False), Column("created_at", Float, nullable=False))

# The recorded schema history of these tables (memory/schema.py); append, never edit.
MIGRATIONS = [
    Migration(1, "documents, probes, learned versions, the ledger, embeddings, training sequences, updates",
              create(DOCUMENTS, PROBES, LEARNED, LEDGER, EMBEDDINGS, SEQUENCES, UPDATES)),
    Migration(2, "teacher samples (online RL)", create(SAMPLES)),
    Migration(3, "general ability per version (canary, drift)", create(GENERAL)),
    Migration(4, "each ledger cell's graded replies (the audit page)", create(LEDGER_ANSWERS)),
    Migration(5, "stack adapters' recitations of their documents' parts (recite-then-read)", create(RECITATIONS)),
]


@dataclass(frozen=True)
class Probe:
    doc_id: str
    idx: int
    question: str
    answer: str
    source: str  # "given" | "teacher"


class MemoryStore:
    """`target` is a SQLite file path (the embedded default) or a `postgresql://` URL."""

    def __init__(self, target: str | Path):
        self.target = target
        self.engine = open_engine(target)
        migrate(self.engine, "memory", MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    def _rows(self, stmt):
        with read_transaction(self.engine) as c:
            return c.execute(stmt).fetchall()

    # -- documents and probes -----------------------------------------------------------------------------
    def add_document(self, p: Passage, probes: list[QA] | None = None, source: str = "given") -> None:
        """Idempotent by content hash: adding the same passage twice changes nothing."""
        probes = list(p.questions) if probes is None else probes
        with self.engine.begin() as c:
            c.execute(insert(self.engine, DOCUMENTS).values(doc_id=p.doc_id, title=p.title, context=p.context,
                                                            added_at=time.time()).on_conflict_do_nothing())
            have = c.execute(select(func.count()).select_from(PROBES).where(PROBES.c.doc_id == p.doc_id)).scalar()
            if not have and probes:  # two deliveries racing here both saw none: the second one's rows are no-ops
                c.execute(insert(self.engine, PROBES).on_conflict_do_nothing(),
                          [dict(doc_id=p.doc_id, idx=i, question=q.question, answer=q.answer, source=source)
                           for i, q in enumerate(probes)])

    def has_document(self, doc_id: str) -> bool:
        return bool(self._rows(select(DOCUMENTS.c.doc_id).where(DOCUMENTS.c.doc_id == doc_id)))

    def document(self, doc_id: str) -> Passage:
        rows = self._rows(select(DOCUMENTS.c.title, DOCUMENTS.c.context).where(DOCUMENTS.c.doc_id == doc_id))
        if not rows:
            raise KeyError(f"unknown document {doc_id}")
        return Passage(rows[0][0], rows[0][1], tuple(QA(p.question, p.answer) for p in self.probes(doc_id)))

    def probes(self, doc_id: str) -> list[Probe]:
        rows = self._rows(select(PROBES.c.doc_id, PROBES.c.idx, PROBES.c.question, PROBES.c.answer, PROBES.c.source)
                          .where(PROBES.c.doc_id == doc_id).order_by(PROBES.c.idx))
        return [Probe(*r) for r in rows]

    def mark_learned(self, doc_id: str, version: int) -> None:
        with self.engine.begin() as c:
            c.execute(insert(self.engine, LEARNED).values(doc_id=doc_id, version=version).on_conflict_do_nothing())

    def learned_at(self) -> dict[str, int]:
        """doc_id -> first version that contained it."""
        return dict(self._rows(select(LEARNED.c.doc_id, func.min(LEARNED.c.version)).group_by(LEARNED.c.doc_id)))

    # -- ledger -------------------------------------------------------------------------------------------
    def record(self, version: int, doc_id: str, correct: float, total: int,
               answers: list[dict] | None = None) -> None:
        """One cell R[version][doc_id]; `answers`, when given, are the version's replies to the probes
        ([{question, reply, correct}], in probe order), kept beside the cell. Re-recording a cell without answers
        drops answers stored for it earlier, so the replies shown always belong to the figure shown."""
        now = time.time()
        stmt = insert(self.engine, LEDGER).values(version=version, doc_id=doc_id, correct=correct, total=total,
                                                  measured_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=["version", "doc_id"],
                                          set_=dict(correct=correct, total=total, measured_at=now))
        with self.engine.begin() as c:
            c.execute(stmt)
            if answers is None:
                c.execute(delete(LEDGER_ANSWERS).where((LEDGER_ANSWERS.c.version == version)
                                                       & (LEDGER_ANSWERS.c.doc_id == doc_id)))
            else:
                blob = json.dumps([{"question": str(a.get("question", "")),
                                    "reply": str(a.get("reply") or "")[:REPLY_CHARS],
                                    "correct": bool(a.get("correct"))} for a in answers])
                c.execute(insert(self.engine, LEDGER_ANSWERS)
                          .values(version=version, doc_id=doc_id, answers=blob, measured_at=now)
                          .on_conflict_do_update(index_elements=["version", "doc_id"],
                                                 set_=dict(answers=blob, measured_at=now)))

    def answers(self, version: int, doc_id: str) -> list[dict] | None:
        """The version's replies to the document's probes as last measured, or None when none were kept (a
        measurement by older code, or a cell never measured)."""
        rows = self._rows(select(LEDGER_ANSWERS.c.answers).where((LEDGER_ANSWERS.c.version == version)
                                                                 & (LEDGER_ANSWERS.c.doc_id == doc_id)))
        return json.loads(rows[0][0]) if rows else None

    def ledger(self) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        rows = self._rows(select(LEDGER.c.version, LEDGER.c.doc_id, LEDGER.c.correct, LEDGER.c.total)
                          .order_by(LEDGER.c.version, LEDGER.c.doc_id))
        for v, d, c, n in rows:
            out.setdefault(v, {})[d] = c / n if n else float("nan")
        return out

    # -- general ability (canary + drift) per version -----------------------------------------------------------
    def record_general(self, version: int, correct: int, total: int, drift: float | None,
                       info: dict | None = None) -> None:
        now = time.time()
        row = dict(correct=correct, total=total, drift=drift, info=json.dumps(info or {}), measured_at=now)
        stmt = insert(self.engine, GENERAL).values(version=version, **row)
        with self.engine.begin() as c:
            c.execute(stmt.on_conflict_do_update(index_elements=["version"], set_=row))

    def general(self) -> dict[int, dict]:
        """version -> {canary, correct, total, drift, info}."""
        rows = self._rows(select(GENERAL.c.version, GENERAL.c.correct, GENERAL.c.total, GENERAL.c.drift,
                                 GENERAL.c.info).order_by(GENERAL.c.version))
        return {v: {"canary": c / n if n else float("nan"), "correct": c, "total": n, "drift": d,
                    "info": json.loads(i or "{}")} for v, c, n, d, i in rows}

    # -- training sequences (for replay) and update outcomes ------------------------------------------------
    def put_sequences(self, doc_id: str, texts: list[str]) -> None:
        with self.engine.begin() as c:
            c.execute(delete(SEQUENCES).where(SEQUENCES.c.doc_id == doc_id))
            if texts:
                c.execute(SEQUENCES.insert(), [dict(doc_id=doc_id, idx=i, text=t) for i, t in enumerate(texts)])

    def sequences(self, doc_id: str) -> list[str]:
        return [r[0] for r in self._rows(select(SEQUENCES.c.text).where(SEQUENCES.c.doc_id == doc_id)
                                         .order_by(SEQUENCES.c.idx))]

    def record_update(self, version: int, doc_id: str | None, parent: int | None, status: str, reason: str = "",
                      gain: float | None = None, forgetting: float | None = None, info: dict | None = None) -> None:
        row = dict(doc_id=doc_id, parent=parent, status=status, reason=reason, gain=gain, forgetting=forgetting,
                   info=json.dumps(info or {}), created_at=time.time())
        stmt = insert(self.engine, UPDATES).values(version=version, **row)
        with self.engine.begin() as c:
            c.execute(stmt.on_conflict_do_update(index_elements=["version"], set_=row))

    _UPDATE_COLS = ("version", "doc_id", "parent", "status", "reason", "gain", "forgetting", "info", "created_at")

    def updates(self) -> list[dict]:
        rows = self._rows(select(*(UPDATES.c[k] for k in self._UPDATE_COLS)).order_by(UPDATES.c.version))
        return [dict(zip(self._UPDATE_COLS, r)) | {"info": json.loads(r[7])} for r in rows]

    def update(self, version: int) -> dict | None:
        rows = self._rows(select(*(UPDATES.c[k] for k in self._UPDATE_COLS)).where(UPDATES.c.version == version))
        return dict(zip(self._UPDATE_COLS, rows[0])) | {"info": json.loads(rows[0][7])} if rows else None

    # -- recitations (recite-then-read) ----------------------------------------------------------------------
    def put_recitation(self, adapter_id: str, prompt: str, text: str) -> None:
        """First write wins: an adapter is immutable, so a second writer has the same text."""
        stmt = insert(self.engine, RECITATIONS).values(adapter_id=adapter_id, prompt_sha=_sha(prompt), prompt=prompt,
                                                      text=text, created_at=time.time())
        with self.engine.begin() as c:
            c.execute(stmt.on_conflict_do_nothing())

    def recitation(self, adapter_id: str, prompt: str) -> str | None:
        rows = self._rows(select(RECITATIONS.c.text).where(RECITATIONS.c.adapter_id == adapter_id,
                                                           RECITATIONS.c.prompt_sha == _sha(prompt)))
        return rows[0][0] if rows else None

    # -- embeddings (for picking which past documents to replay) ----------------------------------------------
    def put_embedding(self, doc_id: str, vector) -> None:
        import numpy as np

        blob = np.asarray(vector, dtype=np.float32).tobytes()
        stmt = insert(self.engine, EMBEDDINGS).values(doc_id=doc_id, vector=blob)
        with self.engine.begin() as c:
            c.execute(stmt.on_conflict_do_update(index_elements=["doc_id"], set_=dict(vector=blob)))

    def has_embedding(self, doc_id: str) -> bool:
        return bool(self._rows(select(EMBEDDINGS.c.doc_id).where(EMBEDDINGS.c.doc_id == doc_id)))

    def embeddings(self) -> tuple[list[str], "object"]:
        import numpy as np

        rows = self._rows(select(EMBEDDINGS.c.doc_id, EMBEDDINGS.c.vector).order_by(EMBEDDINGS.c.doc_id))
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(bytes(r[1]), dtype=np.float32) for r in rows])

    # -- the teacher's candidate self-edits (online RL) ------------------------------------------------------------
    def put_samples(self, doc_id: str, teacher: int, raws: list[str]) -> None:
        """Once per document: a redelivered job finds the candidates it already sampled."""
        with self.engine.begin() as c:
            have = c.execute(select(func.count()).select_from(SAMPLES).where(SAMPLES.c.doc_id == doc_id)).scalar()
            if not have:  # as in add_document: a racing duplicate delivery inserts nothing, and no error
                c.execute(insert(self.engine, SAMPLES).on_conflict_do_nothing(),
                          [dict(doc_id=doc_id, k=k, teacher=teacher, raw=r, created_at=time.time())
                           for k, r in enumerate(raws)])

    def samples(self, doc_id: str | None = None) -> list[dict]:
        q = select(SAMPLES).order_by(SAMPLES.c.created_at, SAMPLES.c.doc_id, SAMPLES.c.k)
        if doc_id is not None:
            q = q.where(SAMPLES.c.doc_id == doc_id)
        return [dict(r._mapping) for r in self._rows(q)]

    def set_sample_gain(self, doc_id: str, k: int, gain: float, chosen: bool) -> None:
        with self.engine.begin() as c:
            c.execute(SAMPLES.update().where((SAMPLES.c.doc_id == doc_id) & (SAMPLES.c.k == k))
                      .values(gain=gain, chosen=int(chosen)))

    def mark_samples_trained(self, doc_ids: list[str], teacher: int) -> None:
        with self.engine.begin() as c:
            c.execute(SAMPLES.update().where(SAMPLES.c.doc_id.in_(doc_ids)).values(trained_into=teacher))


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()
