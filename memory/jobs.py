"""Documents as jobs: a durable lifecycle in the agent's database, shared by the API, workers and the CLI.

    queued -> writing_probes -> self_editing -> training -> evaluating -> promoted | rejected | failed | cancelled

A job row is written (committed) before its task is handed to any transport, so an accepted document is never
lost: a worker that dies mid-job leaves the row in a running state, and the task is redelivered (Celery) or
re-enqueued at start-up (embedded). Every transition appends an event with a timestamp.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field

from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text, func, select, update
from sqlalchemy.exc import IntegrityError

from core.documents import QA, Passage
from core.states import RUNNING, STATES, TERMINAL
from memory.database import open_engine, read_transaction
from memory.schema import Migration, create, migrate

log = logging.getLogger("seal.jobs")


def log_transition(job_id: str, state: str, message: str, **fields) -> None:
    """One structured line per job state change (the service log's record of each job's life)."""
    log.info(json.dumps({"event": "job", "job": job_id, "state": state, "message": message, **fields},
                        ensure_ascii=False))

META = MetaData()
JOBS = Table(
    "jobs", META,
    Column("id", String(32), primary_key=True),
    Column("doc_id", String(64), nullable=False, index=True),
    Column("title", Text, nullable=False),
    Column("passage", Text, nullable=False),  # JSON: title, context, questions
    Column("idempotency_key", String(200), unique=True),
    Column("state", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("error", Text),
    Column("result", Text),  # JSON: version, gain, forgetting, seconds per stage, reason
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
)
EVENTS = Table(
    "job_events", META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("message", Text, nullable=False, default=""),
)

MIGRATIONS = [Migration(1, "jobs and their events", create(JOBS, EVENTS))]  # memory/schema.py; append only


class JobError(ValueError):
    """A job that does not exist, or an operation its state does not allow."""


class IdempotencyConflict(JobError):
    """An idempotency key already names a job for another document (the key is tied to what it was sent with)."""


ENQUEUE_FAILED = "could not be queued:"  # the error of a job its transport refused (a retry with its key re-queues)


class JobCancelled(Exception):
    """Raised inside a running job when a cancel was requested (checked between stages)."""


@dataclass
class Job:
    id: str
    doc_id: str
    title: str
    passage: Passage
    idempotency_key: str | None
    state: str
    attempts: int
    cancel_requested: bool
    error: str | None
    result: dict
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    events: list[dict] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_json(self, events: bool = False) -> dict:
        d = {k: getattr(self, k) for k in ("id", "doc_id", "title", "idempotency_key", "state", "attempts",
                                            "cancel_requested", "error", "result", "created_at", "updated_at",
                                            "started_at", "finished_at")}
        if events:
            d["events"] = self.events
        return d


def _passage_json(p: Passage) -> str:
    return json.dumps({"title": p.title, "context": p.context,
                       "questions": [{"question": q.question, "answer": q.answer} for q in p.questions]})


def _passage(s: str) -> Passage:
    d = json.loads(s)
    return Passage(d["title"], d["context"], tuple(QA(q["question"], q["answer"]) for q in d["questions"]))


class JobStore:
    """`target`: the same SQLite file or PostgreSQL URL as the memory store."""

    def __init__(self, target):
        self.engine = open_engine(target)
        migrate(self.engine, "jobs", MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    def _job(self, row, events: list[dict] | None = None) -> Job:
        m = row._mapping
        return Job(m["id"], m["doc_id"], m["title"], _passage(m["passage"]), m["idempotency_key"], m["state"],
                   m["attempts"], bool(m["cancel_requested"]), m["error"], json.loads(m["result"] or "{}"),
                   m["created_at"], m["updated_at"], m["started_at"], m["finished_at"], events or [])

    # -- submitting ---------------------------------------------------------------------------------------------
    def submit(self, passage: Passage, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """A new queued job, or the existing one for the same idempotency key (created=False). The key is tied
        to its document: the same key with another document raises IdempotencyConflict. Two requests racing
        with one key get one job (the loser of the insert reads the winner's). A job whose enqueue failed is
        queued again by a retry with its key (created=True: the caller hands it to the transport again)."""
        now = time.time()
        job_id = "job_" + secrets.token_hex(8)
        if idempotency_key is not None:
            existing = self._by_key(idempotency_key)
            if existing is not None:
                return self._again(existing, passage)
        try:
            with self.engine.begin() as c:
                c.execute(JOBS.insert().values(
                    id=job_id, doc_id=passage.doc_id, title=passage.title, passage=_passage_json(passage),
                    idempotency_key=idempotency_key, state="queued", attempts=0, cancel_requested=False,
                    created_at=now, updated_at=now))
                c.execute(EVENTS.insert().values(job_id=job_id, at=now, state="queued", message="accepted"))
            log_transition(job_id, "queued", "accepted", doc_id=passage.doc_id, title=passage.title[:80])
        except IntegrityError:
            existing = self._by_key(idempotency_key) if idempotency_key is not None else None
            if existing is None:
                raise
            return self._again(existing, passage)
        return self.get(job_id), True

    def _by_key(self, key: str) -> Job | None:
        with read_transaction(self.engine) as c:
            row = c.execute(select(JOBS).where(JOBS.c.idempotency_key == key)).first()
        return self._job(row) if row is not None else None

    def _again(self, job: Job, passage: Passage) -> tuple[Job, bool]:
        if job.doc_id != passage.doc_id:
            raise IdempotencyConflict(
                f"idempotency key {job.idempotency_key!r} was used for another document ({job.doc_id}, "
                f"{job.title!r}); use a new key for a new document")
        if job.state == "failed" and (job.error or "").startswith(ENQUEUE_FAILED):
            with self.engine.begin() as c:
                cur = self._locked(c, job.id)
                again = cur.state == "failed" and (cur.error or "").startswith(ENQUEUE_FAILED)
                if again:
                    self._set(c, job.id, "queued", "re-queued: retried with its idempotency key", error=None,
                              finished_at=None)
            return self.get(job.id), again
        return job, False

    # -- reading ------------------------------------------------------------------------------------------------
    def get(self, job_id: str, events: bool = False) -> Job:
        with read_transaction(self.engine) as c:
            row = c.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
            if row is None:
                raise JobError(f"no job {job_id!r}")
            evs = []
            if events:
                evs = [dict(at=e.at, state=e.state, message=e.message) for e in
                       c.execute(select(EVENTS).where(EVENTS.c.job_id == job_id).order_by(EVENTS.c.id))]
        return self._job(row, evs)

    def list(self, state: str | None = None, doc_id: str | None = None, limit: int = 100) -> list[Job]:
        q = select(JOBS).order_by(JOBS.c.created_at.desc()).limit(limit)
        if state:
            q = q.where(JOBS.c.state == state)
        if doc_id:
            q = q.where(JOBS.c.doc_id == doc_id)
        with read_transaction(self.engine) as c:
            return [self._job(r) for r in c.execute(q)]

    def counts(self) -> dict[str, int]:
        with read_transaction(self.engine) as c:
            rows = c.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).fetchall()
        return {s: 0 for s in STATES} | {s: n for s, n in rows}

    def unfinished(self) -> list[str]:
        """Jobs accepted but not finished, oldest first (re-enqueued when an embedded service starts)."""
        with read_transaction(self.engine) as c:
            rows = c.execute(select(JOBS.c.id).where(JOBS.c.state.not_in(TERMINAL))
                             .order_by(JOBS.c.created_at)).fetchall()
        return [r[0] for r in rows]

    def stage_seconds(self, limit: int = 1000) -> dict[str, list[float]]:
        """Per-stage durations of recently finished jobs (for /metrics)."""
        out: dict[str, list[float]] = {}
        with read_transaction(self.engine) as c:
            rows = c.execute(select(JOBS.c.result).where(JOBS.c.state.in_(TERMINAL))
                             .order_by(JOBS.c.finished_at.desc()).limit(limit)).fetchall()
        for (r,) in rows:
            for k, v in (json.loads(r or "{}").get("seconds") or {}).items():
                if isinstance(v, (int, float)):
                    out.setdefault(k, []).append(float(v))
        return out

    def _locked(self, c, job_id: str) -> Job:
        row = c.execute(select(JOBS).where(JOBS.c.id == job_id).with_for_update()).first()
        if row is None:
            raise JobError(f"no job {job_id!r}")
        return self._job(row)

    # -- transitions ----------------------------------------------------------------------------------------------
    def _set(self, c, job_id: str, state: str, message: str = "", **cols) -> None:
        now = time.time()
        c.execute(update(JOBS).where(JOBS.c.id == job_id).values(state=state, updated_at=now, **cols))
        c.execute(EVENTS.insert().values(job_id=job_id, at=now, state=state, message=message))
        log_transition(job_id, state, message)

    def claim(self, job_id: str, max_attempts: int) -> Job | None:
        """Start (or restart after a lost worker) a job; None when there is nothing to do: it is finished, or
        it was cancelled while queued. A job that has exhausted its attempts is failed here."""
        with self.engine.begin() as c:
            job = self._locked(c, job_id)
            if job.done:
                return None
            now = time.time()
            if job.cancel_requested:
                self._set(c, job_id, "cancelled", "cancelled before it started", finished_at=now)
                return None
            if job.attempts >= max_attempts:
                self._set(c, job_id, "failed", f"gave up after {job.attempts} attempts (worker lost)",
                          error=f"worker lost {job.attempts} times", finished_at=now)
                return None
            msg = "started" if job.attempts == 0 else f"restarted (attempt {job.attempts + 1}) after {job.state}"
            c.execute(update(JOBS).where(JOBS.c.id == job_id).values(
                attempts=job.attempts + 1, started_at=job.started_at or now, updated_at=now))
            c.execute(EVENTS.insert().values(job_id=job_id, at=now, state=job.state, message=msg))
        return self.get(job_id)

    def stage(self, job_id: str, state: str, message: str = "") -> None:
        """Move a running job to `state`; raises JobCancelled if a cancel was requested meanwhile."""
        if state not in RUNNING:
            raise ValueError(f"not a running state: {state}")
        with self.engine.begin() as c:
            row = c.execute(select(JOBS.c.cancel_requested).where(JOBS.c.id == job_id)).first()
            if row is None:
                raise JobError(f"no job {job_id!r}")
            if row[0]:
                raise JobCancelled(job_id)
            self._set(c, job_id, state, message)

    def finish(self, job_id: str, state: str, result: dict | None = None, error: str | None = None,
               message: str = "") -> bool:
        """Record a final state, once: a job already final keeps its state (a duplicate delivery that fails
        after the first one promoted must not overwrite it, nor the reverse); False when it was already final."""
        if state not in TERMINAL:
            raise ValueError(f"not a final state: {state}")
        with self.engine.begin() as c:
            job = self._locked(c, job_id)
            if job.done:
                c.execute(EVENTS.insert().values(job_id=job_id, at=time.time(), state=job.state,
                                                 message=f"kept {job.state}; a duplicate run ended {state}"
                                                         + (f": {error}" if error else "")))
                return False
            self._set(c, job_id, state, message, result=json.dumps(result or {}), error=error,
                      finished_at=time.time())
        return True

    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled at once. Running: flagged, stopped at the next stage boundary (a stage in progress
        finishes; nothing half-written is kept). Finished: an error."""
        with self.engine.begin() as c:
            job = self._locked(c, job_id)
            if job.done:
                raise JobError(f"job {job_id} is already {job.state}")
            if job.state == "queued":
                self._set(c, job_id, "cancelled", "cancelled while queued", finished_at=time.time(),
                          cancel_requested=True)
            else:
                c.execute(update(JOBS).where(JOBS.c.id == job_id).values(cancel_requested=True,
                                                                          updated_at=time.time()))
                c.execute(EVENTS.insert().values(job_id=job_id, at=time.time(), state=job.state,
                                                 message="cancel requested"))
        return self.get(job_id)


__all__ = ["Job", "JobStore", "JobError", "JobCancelled", "IdempotencyConflict", "ENQUEUE_FAILED", "STATES",
           "RUNNING", "TERMINAL"]
