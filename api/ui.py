"""The audit page (issue 16): static files at /ui and the read-only JSON routes under /v1/ui it reads.

The page itself holds no data, so /ui and its assets are served without a key (a browser cannot send a
bearer header when navigating); every byte of state comes from the /v1/ui routes below, which take the same
bearer keys as the rest of the API. The page asks for the key once and keeps it in sessionStorage, never in
a URL. Write actions on the page call the API's own routes (promote, rollback, cancel, remove a document);
nothing here writes.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from agent.audit import Audit
from api.schemas import json_safe
from api.ui_schemas import (CellDetail, Curves, DocumentDetail, Documents, Jobs, Matrix, Overview, VersionDetail,
                            Versions, WhoAmI)
from core.states import STATES
from student.stack import StackError

STATIC = Path(__file__).resolve().parent / "ui_static"
POLL_SECONDS = 5  # the page's live refresh: one small request per 5 s while the tab is visible
# The page runs only its own files: no inline script, nothing from elsewhere, never framed.
HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                      "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
           "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def ui_router(agent, auth) -> APIRouter:
    """The read-only routes; `auth` is the app's Auth (the page uses the API's own keys)."""
    audit = Audit(agent.memory, agent.jobs, agent.stack)
    read = auth.require("read")
    r = APIRouter(prefix="/v1/ui", tags=["audit page"], dependencies=[Depends(read)])

    @r.get("/whoami", response_model=WhoAmI)
    def whoami(scope: str = Depends(read)):
        return {"scope": scope}

    @r.get("/overview", response_model=Overview)
    def overview():
        g = agent.cfg.continual.gate
        return audit.overview() | {
            "gate": {"enabled": g.enabled, "min_gain": g.min_gain, "max_forgetting": g.max_forgetting,
                     "max_canary_drop": g.max_canary_drop, "max_drift": g.max_drift},
            "routing": agent.cfg.continual.routing.enabled, "poll_seconds": POLL_SECONDS}

    @r.get("/matrix", response_model=Matrix)
    def matrix(view: str = Query("promoted", pattern="^(promoted|all)$"),
               limit: int = Query(25, ge=1, le=200), offset: int = Query(0, ge=0),
               doc_limit: int = Query(30, ge=1, le=200), doc_offset: int = Query(0, ge=0), tail: bool = False):
        return json_safe(audit.matrix(view, limit, offset, doc_limit, doc_offset, tail))

    @r.get("/cells/{version}/{doc_id}", response_model=CellDetail)
    def cell(version: int, doc_id: str):
        """One matrix cell for the hover: probe questions, reference answers, and the version's own replies
        with a right/wrong mark (when the monitor kept them; older measurements have figures only)."""
        if version < 0:
            raise HTTPException(422, "version must be 0 (the untouched model) or a student version")
        try:
            return json_safe(audit.cell(version, doc_id))
        except KeyError:
            raise HTTPException(404, f"unknown document {doc_id!r}")

    @r.get("/curves", response_model=Curves)
    def curves():
        return json_safe(audit.curves())

    @r.get("/documents", response_model=Documents)
    def documents(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                  q: str | None = Query(None, max_length=200)):
        return json_safe(audit.documents(limit, offset, q or None))

    @r.get("/documents/{doc_id}", response_model=DocumentDetail)
    def document(doc_id: str):
        try:
            return json_safe(audit.document(doc_id))
        except KeyError:
            raise HTTPException(404, f"unknown document {doc_id!r}")

    @r.get("/jobs", response_model=Jobs)
    def jobs(state: str | None = None, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)):
        if state is not None and state not in (*STATES, "running"):
            raise HTTPException(422, f"state must be one of {', '.join((*STATES, 'running'))}")
        return json_safe(audit.jobs_page(state, limit, offset))

    @r.get("/versions", response_model=Versions)
    def versions(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                 status: str | None = Query(None, pattern="^(promoted|rejected|consolidated|removed)$")):
        return json_safe(audit.versions_page(limit, offset, status))

    @r.get("/versions/{version}", response_model=VersionDetail)
    def version(version: int):
        try:
            return json_safe(audit.version(version))
        except StackError as e:
            raise HTTPException(404, str(e))

    return r


def mount_ui(app: FastAPI, agent, auth) -> None:
    """/ui (the page), /ui/static (its files) and /v1/ui (its data)."""
    app.include_router(ui_router(agent, auth))

    @app.get("/ui", include_in_schema=False)
    def ui_redirect():
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui/", include_in_schema=False)
    def ui_page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)

    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
