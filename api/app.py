"""The HTTP API (FastAPI): documents in, jobs out, OpenAI-compatible queries, versions, forgetting, metrics.

Only /healthz is open; every other route needs a bearer key (read, or write for changes). OpenAPI at /docs.
Each resource's routes are a router in api/routers/; this module only assembles them.
"""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

from agent.service import Agent
from api import middleware
from api.auth import Auth
from api.metrics import make_registry
from api.routers import documents, forgetting, openai, service, versions
from api.ui import mount_ui


def create_app(agent: Agent, keys: dict[str, str]) -> FastAPI:
    auth = Auth(keys)
    registry, requests = make_registry(agent)
    app = FastAPI(title="seal-agent", version="0.1", docs_url=None, redoc_url=None,
                  description="A continual-learning student: stream documents in, query what it learned, audit "
                              "forgetting. Auth: `Authorization: Bearer <key>` (scopes read, write).")
    mount_docs(app)
    middleware.install(app, agent.cfg.service.max_request_bytes, requests)
    app.include_router(service.router(agent, auth, registry))
    app.include_router(documents.router(agent, auth))
    app.include_router(versions.router(agent, auth))
    app.include_router(forgetting.router(agent, auth))
    app.include_router(openai.router(agent, auth))
    mount_ui(app, agent, auth)  # the audit page (/ui) and its read-only data (/v1/ui/...)
    return app


def mount_docs(app: FastAPI) -> None:
    """/docs from Swagger UI's assets shipped in this package (api/docs_static: swagger-ui-dist 5, which reads
    the OpenAPI 3.1 that FastAPI writes), so it renders without internet."""
    from pathlib import Path

    app.mount("/docs-assets", StaticFiles(directory=Path(__file__).parent / "docs_static"), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="seal-agent API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")
