"""The HTTP API (FastAPI): documents in, jobs out, OpenAI-compatible queries, versions, forgetting, metrics.

Only /healthz is open; every other route needs a bearer key (read, or write for changes). OpenAPI at /docs.
Each resource's routes are a router in api/routers/; this module only assembles them.
"""
from __future__ import annotations

from fastapi import FastAPI

from agent.service import Agent
from api import middleware
from api.auth import Auth
from api.metrics import make_registry
from api.routers import documents, forgetting, openai, service, versions
from api.ui import mount_ui


def create_app(agent: Agent, keys: dict[str, str]) -> FastAPI:
    auth = Auth(keys)
    registry, requests = make_registry(agent)
    app = FastAPI(title="seal-agent", version="0.1",
                  description="A continual-learning student: stream documents in, query what it learned, audit "
                              "forgetting. Auth: `Authorization: Bearer <key>` (scopes read, write).")
    middleware.install(app, agent.cfg.service.max_request_bytes, requests)
    app.include_router(service.router(agent, auth, registry))
    app.include_router(documents.router(agent, auth))
    app.include_router(versions.router(agent, auth))
    app.include_router(forgetting.router(agent, auth))
    app.include_router(openai.router(agent, auth))
    mount_ui(app, agent, auth)  # the audit page (/ui) and its read-only data (/v1/ui/...)
    return app
