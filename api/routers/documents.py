"""Documents in, jobs out: submit, look up, cancel, remove a learned document."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query

from agent.audit import Audit

from agent.service import Agent, LearnerBusy, RemoveRefused
from agent.transport import TransportError
from api.auth import Auth
from api.errors import APIError
from api.schemas import DocumentsIn, json_safe
from core.states import STATES
from teacher.passages import passage_texts
from memory.jobs import IdempotencyConflict, JobError
from student.stack import StackError


def router(agent: Agent, auth: Auth) -> APIRouter:
    r = APIRouter()
    read, write = Depends(auth.require("read")), Depends(auth.require("write"))
    cfg = agent.cfg.service
    audit = Audit(agent.memory, agent.jobs, agent.stack)

    @r.post("/v1/documents", status_code=202, tags=["documents"], dependencies=[write])
    def post_documents(body: DocumentsIn, idempotency_key: str | None = Header(None, max_length=200)):
        docs = body.items()
        if len(docs) > cfg.max_documents_per_request:
            raise HTTPException(413, f"at most {cfg.max_documents_per_request} documents per request")
        for i, d in enumerate(docs):  # checked before anything is written: a long document is never cut silently
            words = len(d.context.split())
            if words > cfg.max_document_words:
                raise APIError(413, f"document {i} ({d.title[:60]!r}) has {words} words; service.max_document_words "
                               f"is {cfg.max_document_words}", param=f"documents.{i}.context", code="document_too_long")
            parts = len(passage_texts(d.passage()))
            if parts > cfg.max_document_parts:
                raise APIError(422, f"document {i} ({d.title[:60]!r}) would train in {parts} parts; "
                               f"service.max_document_parts is {cfg.max_document_parts}",
                               param=f"documents.{i}.context", code="too_many_parts")
        key = body.idempotency_key or idempotency_key
        try:
            out = agent.submit([d.passage() for d in docs], key)
        except TransportError as e:
            raise HTTPException(503, str(e)) from e
        except IdempotencyConflict as e:
            raise HTTPException(409, str(e)) from e
        except ValueError as e:
            raise HTTPException(422, str(e)) from e
        return {"jobs": [{"id": s.job.id, "doc_id": s.job.doc_id, "state": s.job.state,
                          "created": s.created} for s in out]}

    @r.get("/v1/documents", tags=["documents"], dependencies=[read])
    def list_documents(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                       q: str | None = Query(None, max_length=200, description="title contains")):
        """Every document the agent has seen, newest first, a page at a time (`total` counts all matches); each
        named `doc_id`, as in jobs and the submit reply."""
        page = audit.documents(limit, offset, q or None)
        page["documents"] = [{"doc_id": d["id"], **{k: v for k, v in d.items() if k != "id"}} for d in page["documents"]]
        return json_safe(page)

    @r.get("/v1/documents/{doc_id}", tags=["documents"], dependencies=[read])
    def get_document(doc_id: str):
        try:
            return json_safe(agent.document(doc_id))
        except KeyError:
            raise HTTPException(404, f"unknown document {doc_id!r} (documents appear once a job starts)")

    @r.get("/v1/jobs", tags=["jobs"], dependencies=[read])
    def list_jobs(state: Literal[STATES] | None = None, limit: int = Query(100, ge=1, le=1000)):  # type: ignore[valid-type]
        return {"jobs": [json_safe(j.to_json()) for j in agent.jobs.list(state=state, limit=limit)]}

    @r.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[read])
    def get_job(job_id: str, events: bool = True):
        try:
            return json_safe(agent.jobs.get(job_id, events=events).to_json(events=events))
        except JobError as e:
            raise HTTPException(404, str(e))

    @r.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], dependencies=[write])
    def cancel_job(job_id: str):
        try:
            agent.jobs.get(job_id)
        except JobError as e:
            raise HTTPException(404, str(e))
        try:
            return json_safe(agent.jobs.cancel(job_id).to_json())
        except JobError as e:
            raise HTTPException(409, str(e))

    @r.post("/v1/documents/{doc_id}/remove", tags=["documents"], dependencies=[write])
    def remove_document(doc_id: str):
        """Take one learned document out of the student: a new version without its adapter is committed and
        promoted to prod (status `removed`; the document, its probes and its history stay on record). Returns
        the new version and every learned document's probe accuracy before and after. Serialized with updates
        (it waits for a job in progress); 409 when the document is not in prod or was folded with others."""
        try:
            return json_safe(agent.remove_document(doc_id))
        except KeyError:
            raise HTTPException(404, f"unknown document {doc_id!r}")
        except RemoveRefused as e:
            raise HTTPException(409, str(e))
        except LearnerBusy as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "30"})
        except StackError as e:  # a version's files failed their checksums
            raise HTTPException(409, f"cannot load prod to measure it: {e}")

    return r
