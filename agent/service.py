"""The long-running agent: documents in as jobs, a worker transport, a student server, the memory.

The API and the CLI both talk to this object; the transport decides whether jobs run in this process
(embedded) or on Celery workers (distributed). Everything here is state in the database and the stack folder,
so any number of API processes and workers can share one agent.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from agent.continual import forgetting_report, memory_target
from agent.transport import CeleryTransport, EmbeddedTransport, Transport, TransportError
from core.config import SealConfig
from core.documents import Passage
from memory.jobs import ENQUEUE_FAILED, Job, JobStore
from memory.store import MemoryStore
from serving.server import StudentServer
from student.stack import StackError, StackStore

BATCH_KEY = re.compile(r":\d+/\d+$")  # a batch's key for its i-th document is "<key>:<i>/<n>"


@dataclass
class Submitted:
    job: Job
    created: bool


class Agent:
    def __init__(self, cfg: SealConfig, transport: Transport, jobs: JobStore, memory: MemoryStore,
                 stack: StackStore, server: StudentServer):
        self.cfg, self.transport, self.jobs, self.memory, self.stack, self.server = (
            cfg, transport, jobs, memory, stack, server)

    @classmethod
    def open(cfg_cls, cfg: SealConfig, start: bool = True) -> "Agent":
        """Embedded: a worker thread with its own model copy (or the serving one, `serve_model: shared`).
        Celery: jobs go to the broker; this process only serves queries."""
        from agent.worker import WorkerContext, open_worker
        from student.runtime import open_runtime

        rt = open_runtime(cfg)
        stack = StackStore(Path(cfg.continual.state_dir) / "stack")
        jobs = JobStore(memory_target(cfg))
        memory = MemoryStore(memory_target(cfg))
        lock = threading.Lock()
        from serving.vllm_adapters import open_vllm

        routing = None
        if cfg.continual.routing.enabled:
            from serving.routing import RoutingCache

            routing = RoutingCache(memory, cfg.continual.routing, cfg.continual.canary)
        server = StudentServer(rt.student, stack, rt.model_name, lock, vllm=open_vllm(cfg, stack, rt.student.tokenizer),
                               routing=routing, settings=cfg.serving)
        if cfg.service.mode == "celery":
            transport: Transport = CeleryTransport(cfg)
        else:
            if cfg.service.serve_model == "shared":
                def make() -> WorkerContext:
                    ctx = open_worker(cfg, rt)
                    ctx.lock = lock  # queries and jobs take turns on the one model
                    return ctx
            else:
                def make() -> WorkerContext:
                    return open_worker(cfg)
            transport = EmbeddedTransport(make, jobs.unfinished)
        agent = cfg_cls(cfg, transport, jobs, memory, stack, server)
        if start:
            transport.start()
        return agent

    def close(self) -> None:
        self.transport.stop()
        self.server.close()

    # -- documents and jobs ---------------------------------------------------------------------------------
    def submit(self, passages: list[Passage], idempotency_key: str | None = None) -> list[Submitted]:
        """Accept documents: each is committed as a queued job before it is handed to a worker."""
        if idempotency_key is not None and BATCH_KEY.search(idempotency_key):
            raise ValueError(f"idempotency key {idempotency_key!r} ends like the keys a batch derives "
                             "(':<index>/<count>'); choose another")
        out = []
        for i, p in enumerate(passages):
            key = None if idempotency_key is None else (idempotency_key if len(passages) == 1
                                                         else f"{idempotency_key}:{i}/{len(passages)}")
            job, created = self.jobs.submit(p, key)
            if created:
                try:
                    self.transport.submit(job.id)
                except TransportError as e:
                    self.jobs.finish(job.id, "failed", error=f"{ENQUEUE_FAILED} {e}", message="could not be queued")
                    raise
            out.append(Submitted(job, created))
        return out

    def document(self, doc_id: str) -> dict:
        if not self.memory.has_document(doc_id):
            raise KeyError(f"unknown document {doc_id!r}")
        p = self.memory.document(doc_id)
        probes = self.memory.probes(doc_id)
        prod = self.stack.resolve("prod") if "prod" in self.stack.aliases() else None
        ledger = self.memory.ledger()
        return {
            "id": doc_id, "title": p.title, "context": p.context,
            "probes": [{"question": q.question, "answer": q.answer, "source": q.source} for q in probes],
            "learned_in": self.memory.learned_at().get(doc_id),
            "in_prod": bool(prod and doc_id in prod.doc_ids),
            "accuracy": {f"student-v{v}" if v else "base": row[doc_id] for v, row in ledger.items() if doc_id in row},
            "jobs": [j.id for j in self.jobs.list(doc_id=doc_id)],
        }

    # -- versions ---------------------------------------------------------------------------------------------
    def versions(self) -> dict:
        aliases = self.stack.aliases()
        ups = {u["version"]: u for u in self.memory.updates()}
        rows = []
        for v in self.stack.versions():
            m = self.stack.manifest(v)
            u = ups.get(v, {})
            rows.append({"name": m.name, "version": v, "parent": m.parent, "created_at": m.created,
                         "note": m.note, "aliases": [a for a, x in aliases.items() if x == v],
                         "adapters": [{"id": a.id, "rank": a.rank, "kind": a.kind, "merged": a.merged,
                                       "documents": list(a.doc_ids)} for a in m.adapters],
                         "status": u.get("status"), "reason": u.get("reason"), "gain": u.get("gain"),
                         "forgetting": u.get("forgetting")})
        return {"aliases": aliases, "versions": rows}

    def promote(self, ref: str, alias: str = "prod") -> dict:
        """Point an alias at a version (rollback is promoting an earlier one); checksums verified first."""
        m = self.stack.resolve(ref)
        self.stack.verify(m)
        from agent.continual import advance_latest

        with self.stack.writer():
            self.stack.set_alias(alias, m.version)
            if alias == "prod":  # an explicit promotion vets the version: latest may name it
                advance_latest(self.stack, m.version)
        return {"alias": alias, "version": m.version, "name": m.name, "documents": len(m.doc_ids)}

    def rollback(self, to: str | None = None) -> dict:
        """Move prod back: to `to`, or by default to the last promoted state before prod that holds different
        documents (a consolidation, which changes no document, is skipped over)."""
        if to is None:
            aliases = self.stack.aliases()
            if "prod" not in aliases:
                raise NothingToRollBack("nothing to roll back: no prod version yet")
            rows = self.versions()["versions"]
            docs = {v["version"]: sorted(d for a in v["adapters"] for d in a["documents"]) for v in rows}
            earlier = [v["version"] for v in rows if v["version"] < aliases["prod"]
                       and v["status"] in ("promoted", "consolidated", "removed")
                       and docs[v["version"]] != docs[aliases["prod"]]]
            if not earlier:
                raise NothingToRollBack(f"student-v{aliases['prod']} has no earlier promoted version")
            to = str(earlier[-1])
        return self.promote(to, "prod")

    _remove_learner = None  # Celery mode: a learner over the serving model, made on the first removal
    _remover_lock = threading.Lock()

    def remove_document(self, doc_id: str, wait_s: float | None = None) -> dict:
        """Remove one learned document from the student (what `seal remove-doc` does): a new version without the
        document's adapter, promoted to prod, with every learned document's probe accuracy before and after.

        It runs on a learner's model and takes the locks an update takes, in the same order, so it never
        interleaves with one: embedded, the worker's model lock (a job in progress finishes first; no new one
        starts) and then the stack's update lock (updates of other processes); with Celery workers, the update
        lock first (a worker's update in progress finishes first) and then the serving model's lock, which only
        queries share, so queries wait for the measurement and not for a worker's training.

        KeyError: unknown document. RemoveRefused: nothing to remove (not in prod, or folded into a consolidated
        adapter with other documents), with the reason. LearnerBusy: no learner's model within `wait_s`."""
        from agent.continual import remove_document

        wait_s = REMOVE_WAIT_S if wait_s is None else wait_s
        if not self.memory.has_document(doc_id):
            raise KeyError(f"unknown document {doc_id!r}")
        self._removable(doc_id)  # the common refusals answer at once, without waiting for a model
        learner, model_lock, in_process = self._remover(wait_s)
        try:
            if in_process:  # the worker's order: model, then update lock
                if not model_lock.acquire(timeout=wait_s):
                    raise LearnerBusy(f"the learner was busy with a job for over {wait_s:.0f} s; try again")
                try:
                    new, changes = remove_document(learner, doc_id)
                finally:
                    model_lock.release()
            else:
                with self.stack.updating():
                    with model_lock:
                        new, changes = remove_document(learner, doc_id, update_lock=False)
        except ValueError as e:  # prod changed between the check above and the lock (e.g. a fold)
            raise RemoveRefused(str(e)) from e
        prod = self.stack.manifest(new.parent) if new.parent else None
        titles = {d: self.memory.document(d).title for d in changes}
        return {"document": doc_id, "title": self.memory.document(doc_id).title, "alias": "prod",
                "version": new.version, "name": new.name, "parent": new.parent,
                "previous": prod.name if prod else None, "documents": len(new.doc_ids),
                "accuracy": {d: {"title": titles[d], "before": b, "after": a, "removed": d == doc_id}
                             for d, (b, a) in changes.items()}}

    def _removable(self, doc_id: str) -> None:
        if self.cfg.continual.merge_each_update:
            raise RemoveRefused("every update is merged into the weights here (continual.merge_each_update): one "
                                "document cannot be taken out; roll back to a version before it instead")
        if "prod" not in self.stack.aliases():
            raise RemoveRefused("nothing to remove: no prod version yet")
        prod = self.stack.resolve("prod")
        hits = [a for a in prod.adapters if doc_id in a.doc_ids]
        if not hits:
            where = self.memory.learned_at().get(doc_id)
            raise RemoveRefused(f"document {doc_id} is not in prod ({prod.name})"
                                + (f"; it was learned in student-v{where}" if where else "; it was never learned"))
        if len(hits[0].doc_ids) > 1:
            raise RemoveRefused(f"document {doc_id} was folded into consolidated adapter {hits[0].id} with "
                                f"{len(hits[0].doc_ids) - 1} other documents; roll back to a version before the "
                                "fold")

    def _remover(self, wait_s: float):
        """(learner, its model's lock, whether it is the embedded worker's)."""
        if isinstance(self.transport, EmbeddedTransport):  # the worker thread's learner (its model loads in the
            if self.transport._thread is None:  # background)
                raise LearnerBusy("no worker runs in this process (the agent was opened without one)")
            if not self.transport.ready.wait(wait_s):
                raise LearnerBusy("the embedded worker is still loading its model; try again")
            return self.transport.ctx.learner, self.transport.ctx.lock, True
        with self._remover_lock:  # Celery: jobs run elsewhere; measure on this process's serving model
            if self._remove_learner is None:
                from agent.continual import open_learner

                self._remove_learner = open_learner(self.server.student, self.cfg)
        return self._remove_learner, self.server.lock, False

    def forgetting(self) -> dict:
        # routed: drift is the weights' with every adapter on, while each query meets at most one adapter
        return forgetting_report(self.memory).to_json() | {"routing": self.cfg.continual.routing.enabled}

    def readiness(self) -> dict[str, str | None]:
        """What /readyz checks: each component's problem, or None when it is fine."""
        checks: dict[str, str | None] = {"model": None if self.server is not None else "no model loaded"}
        try:
            self.jobs.counts()
            checks["database"] = None
        except Exception as e:  # any driver error means the database is not usable now
            checks["database"] = f"{type(e).__name__}: {e}"[:300]
        if self.cfg.service.mode == "celery":
            checks["broker"] = None if self.transport.depth() is not None else \
                f"cannot reach the broker at {self.cfg.service.broker_url}"
        return checks

    def status(self) -> dict:
        aliases = self.stack.aliases()
        return {"mode": self.cfg.service.mode, "jobs": self.jobs.counts(), "queue_depth": self.transport.depth(),
                "aliases": aliases, "versions": len(self.stack.versions()),
                "worker_ready": getattr(getattr(self.transport, "ready", None), "is_set", lambda: None)()}


REMOVE_WAIT_S = 600.0  # how long a removal waits for the learner's model (a job in progress) before 503


class RemoveRefused(ValueError):
    """A document that cannot be removed from prod, with the reason (the API's 409)."""


class LearnerBusy(RuntimeError):
    """No learner's model became free in time (the API's 503)."""


class NothingToRollBack(ValueError):
    """No prod yet, or no earlier promoted version to go back to (the API's 409)."""


__all__ = ["Agent", "LearnerBusy", "NothingToRollBack", "RemoveRefused", "Submitted", "StackError", "TransportError"]
