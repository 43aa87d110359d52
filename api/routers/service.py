"""Health, metrics and status."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.service import Agent
from api.auth import Auth
from api.schemas import json_safe


def router(agent: Agent, auth: Auth, registry) -> APIRouter:
    r = APIRouter()
    read = Depends(auth.require("read"))
    cfg = agent.cfg.service

    @r.get("/healthz", tags=["service"])
    def healthz():
        return {"status": "ok", "mode": cfg.mode}

    @r.get("/metrics", tags=["service"], dependencies=[read])
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @r.get("/v1/status", tags=["service"], dependencies=[read])
    def status():
        return json_safe(agent.status())

    return r
