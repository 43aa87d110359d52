"""Health, metrics and status."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.service import Agent
from api.auth import Auth
from api.schemas import json_safe


def router(agent: Agent, auth: Auth, registry) -> APIRouter:
    r = APIRouter()
    read = Depends(auth.require("read"))
    cfg = agent.cfg.service

    @r.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/ui")

    @r.get("/healthz", tags=["service"])
    def healthz():
        """Liveness: the process answers."""
        return {"status": "ok", "mode": cfg.mode}

    @r.get("/readyz", tags=["service"])
    def readyz():
        """Readiness: the model is loaded and the database (and, distributed, the broker) answer; 503 names what
        is not."""
        checks = agent.readiness()
        ready = all(v is None for v in checks.values())
        body = {"status": "ready" if ready else "not ready", "mode": cfg.mode,
                "checks": {k: v or "ok" for k, v in checks.items()}}
        return JSONResponse(body, status_code=200 if ready else 503)

    @r.get("/metrics", tags=["service"], dependencies=[read])
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @r.get("/v1/status", tags=["service"], dependencies=[read])
    def status():
        return json_safe(agent.status())

    return r
