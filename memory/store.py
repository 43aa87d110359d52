"""What the agent remembers, in SQLite: learned documents, their QA probes, and the accuracy ledger
R[version][document] that the forgetting monitor fills after every update."""
from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from memory.documents import QA, Passage

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, context TEXT NOT NULL, added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS probes (
    doc_id TEXT NOT NULL REFERENCES documents(doc_id), idx INTEGER NOT NULL,
    question TEXT NOT NULL, answer TEXT NOT NULL, source TEXT NOT NULL,
    PRIMARY KEY (doc_id, idx)
);
CREATE TABLE IF NOT EXISTS learned (
    doc_id TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (doc_id, version)
);
CREATE TABLE IF NOT EXISTS ledger (
    version INTEGER NOT NULL, doc_id TEXT NOT NULL, correct REAL NOT NULL, total INTEGER NOT NULL,
    measured_at REAL NOT NULL, PRIMARY KEY (version, doc_id)
);
CREATE TABLE IF NOT EXISTS embeddings (doc_id TEXT PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sequences (
    doc_id TEXT NOT NULL, idx INTEGER NOT NULL, text TEXT NOT NULL, PRIMARY KEY (doc_id, idx)
);
CREATE TABLE IF NOT EXISTS updates (
    version INTEGER PRIMARY KEY, doc_id TEXT, parent INTEGER, status TEXT NOT NULL, reason TEXT,
    gain REAL, forgetting REAL, info TEXT, created_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Probe:
    doc_id: str
    idx: int
    question: str
    answer: str
    source: str  # "given" | "teacher"


class MemoryStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # -- documents and probes -----------------------------------------------------------------------------
    def add_document(self, p: Passage, probes: list[QA] | None = None, source: str = "given") -> None:
        """Idempotent by content hash: adding the same passage twice changes nothing."""
        probes = list(p.questions) if probes is None else probes
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO documents VALUES (?,?,?,?)", (p.doc_id, p.title, p.context, time.time()))
            have = db.execute("SELECT COUNT(*) FROM probes WHERE doc_id=?", (p.doc_id,)).fetchone()[0]
            if not have:
                db.executemany("INSERT INTO probes VALUES (?,?,?,?,?)",
                               [(p.doc_id, i, q.question, q.answer, source) for i, q in enumerate(probes)])

    def document(self, doc_id: str) -> Passage:
        row = self.db.execute("SELECT title, context FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        if row is None:
            raise KeyError(f"unknown document {doc_id}")
        return Passage(row[0], row[1], tuple(QA(p.question, p.answer) for p in self.probes(doc_id)))

    def probes(self, doc_id: str) -> list[Probe]:
        rows = self.db.execute("SELECT doc_id, idx, question, answer, source FROM probes WHERE doc_id=? ORDER BY idx",
                               (doc_id,)).fetchall()
        return [Probe(*r) for r in rows]

    def mark_learned(self, doc_id: str, version: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO learned VALUES (?,?)", (doc_id, version))

    def learned_at(self) -> dict[str, int]:
        """doc_id -> first version that contained it."""
        return dict(self.db.execute("SELECT doc_id, MIN(version) FROM learned GROUP BY doc_id").fetchall())

    # -- ledger -------------------------------------------------------------------------------------------
    def record(self, version: int, doc_id: str, correct: float, total: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO ledger VALUES (?,?,?,?,?)", (version, doc_id, correct, total, time.time()))

    def ledger(self) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        for v, d, c, n in self.db.execute("SELECT version, doc_id, correct, total FROM ledger ORDER BY version"):
            out.setdefault(v, {})[d] = c / n if n else float("nan")
        return out

    # -- training sequences (for replay) and update outcomes ------------------------------------------------
    def put_sequences(self, doc_id: str, texts: list[str]) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM sequences WHERE doc_id=?", (doc_id,))
            db.executemany("INSERT INTO sequences VALUES (?,?,?)", [(doc_id, i, t) for i, t in enumerate(texts)])

    def sequences(self, doc_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT text FROM sequences WHERE doc_id=? ORDER BY idx", (doc_id,))]

    def record_update(self, version: int, doc_id: str | None, parent: int | None, status: str, reason: str = "",
                      gain: float | None = None, forgetting: float | None = None, info: dict | None = None) -> None:
        import json

        self.db.execute("INSERT OR REPLACE INTO updates VALUES (?,?,?,?,?,?,?,?,?)",
                        (version, doc_id, parent, status, reason, gain, forgetting, json.dumps(info or {}), time.time()))

    def updates(self) -> list[dict]:
        import json

        cols = ("version", "doc_id", "parent", "status", "reason", "gain", "forgetting", "info", "created_at")
        rows = self.db.execute(f"SELECT {', '.join(cols)} FROM updates ORDER BY version").fetchall()
        return [dict(zip(cols, r)) | {"info": json.loads(r[7])} for r in rows]

    # -- embeddings (for picking which past documents to replay) ----------------------------------------------
    def put_embedding(self, doc_id: str, vector) -> None:
        import numpy as np

        self.db.execute("INSERT OR REPLACE INTO embeddings VALUES (?,?)",
                        (doc_id, np.asarray(vector, dtype=np.float32).tobytes()))

    def has_embedding(self, doc_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM embeddings WHERE doc_id=?", (doc_id,)).fetchone() is not None

    def embeddings(self) -> tuple[list[str], "object"]:
        import numpy as np

        rows = self.db.execute("SELECT doc_id, vector FROM embeddings ORDER BY doc_id").fetchall()
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
