"""The HTTP API (FastAPI): documents in, jobs out, OpenAI-compatible queries, versions, forgetting, metrics.

Only /healthz is open; every other route needs a bearer key (read, or write for changes). OpenAPI at /docs.
"""
from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
import uuid
from pathlib import Path

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.batching import QueueFull
from agent.jobs import IdempotencyConflict, JobError
from agent.serving import ModelNotFound
from agent.service import Agent
from agent.transport import TransportError
from api.auth import Auth
from api.metrics import make_registry
from api.schemas import ChatCompletionIn, CompletionIn, DocumentsIn, PromoteIn, RollbackIn
from api.ui import mount_ui
from student.stack import StackError


def _clean(x):
    """JSON has no NaN: unmeasured figures become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class BodyLimit:
    """Reject bodies over the limit with 413, whether or not the client sent Content-Length."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        if cl is not None and cl.isdigit() and int(cl) > self.limit:
            return await self._reject(send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send):
        body = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(agent: Agent, keys: dict[str, str]) -> FastAPI:
    cfg = agent.cfg.service
    auth = Auth(keys)
    read, write = Depends(auth.require("read")), Depends(auth.require("write"))
    registry, requests = make_registry(agent)
    app = FastAPI(title="seal-agent", version="0.1",
                  description="A continual-learning student: stream documents in, query what it learned, audit "
                              "forgetting. Auth: `Authorization: Bearer <key>` (scopes read, write).")
    app.add_middleware(BodyLimit, limit=cfg.max_request_bytes)

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        requests.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    def err(status: int, message: str, kind: str = "invalid_request_error"):
        # both shapes: FastAPI's {"detail"} and OpenAI's {"error": {...}} (what OpenAI clients parse)
        return JSONResponse({"detail": message, "error": {"message": message, "type": kind, "code": status}},
                            status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req, exc: StarletteHTTPException):
        resp = err(exc.status_code, str(exc.detail))
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(RequestValidationError)
    async def invalid(_req, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
                             for e in exc.errors())
        return err(422, f"invalid request: {problems}")

    # -- open -------------------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["service"])
    def healthz():
        return {"status": "ok", "mode": cfg.mode}

    @app.get("/metrics", tags=["service"], dependencies=[read])
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status", tags=["service"], dependencies=[read])
    def status():
        return _clean(agent.status())

    # -- documents and jobs ---------------------------------------------------------------------------------
    @app.post("/v1/documents", status_code=202, tags=["documents"], dependencies=[write])
    def post_documents(body: DocumentsIn, idempotency_key: str | None = Header(None, max_length=200)):
        docs = body.items()
        if len(docs) > cfg.max_documents_per_request:
            raise HTTPException(413, f"at most {cfg.max_documents_per_request} documents per request")
        key = body.idempotency_key or idempotency_key
        try:
            out = agent.submit([d.passage() for d in docs], key)
        except TransportError as e:
            raise HTTPException(503, str(e)) from e
        except IdempotencyConflict as e:
            raise HTTPException(409, str(e)) from e
        except ValueError as e:
            raise HTTPException(422, str(e)) from e
        return {"jobs": [{"id": s.job.id, "document_id": s.job.doc_id, "state": s.job.state,
                          "created": s.created} for s in out]}

    @app.get("/v1/documents/{doc_id}", tags=["documents"], dependencies=[read])
    def get_document(doc_id: str):
        try:
            return _clean(agent.document(doc_id))
        except KeyError:
            raise HTTPException(404, f"unknown document {doc_id!r} (documents appear once a job starts)")

    @app.get("/v1/jobs", tags=["jobs"], dependencies=[read])
    def list_jobs(state: str | None = None, limit: int = 100):
        if not 1 <= limit <= 1000:
            raise HTTPException(422, "limit must be between 1 and 1000")
        return {"jobs": [_clean(j.to_json()) for j in agent.jobs.list(state=state, limit=limit)]}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[read])
    def get_job(job_id: str, events: bool = True):
        try:
            return _clean(agent.jobs.get(job_id, events=events).to_json(events=events))
        except JobError as e:
            raise HTTPException(404, str(e))

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], dependencies=[write])
    def cancel_job(job_id: str):
        try:
            agent.jobs.get(job_id)
        except JobError as e:
            raise HTTPException(404, str(e))
        try:
            return _clean(agent.jobs.cancel(job_id).to_json())
        except JobError as e:
            raise HTTPException(409, str(e))

    # -- versions ------------------------------------------------------------------------------------------------
    @app.get("/v1/adapters", tags=["versions"], dependencies=[read])
    def adapters():
        return _clean(agent.versions())

    @app.post("/v1/adapters/{version}/promote", tags=["versions"], dependencies=[write])
    def promote(version: str, body: PromoteIn | None = None):
        try:
            return agent.promote(version, (body or PromoteIn()).alias)
        except StackError as e:
            raise HTTPException(404, str(e))

    @app.post("/v1/adapters/rollback", tags=["versions"], dependencies=[write])
    def rollback(body: RollbackIn | None = None):
        target = (body or RollbackIn()).to
        if target is None:
            aliases = agent.stack.aliases()
            if "prod" not in aliases:
                raise HTTPException(409, "nothing to roll back: no prod version yet")
            rows = agent.versions()["versions"]
            docs = {v["version"]: sorted(d for a in v["adapters"] for d in a["documents"]) for v in rows}
            # the previous promoted state that knows different documents (a consolidation changes nothing)
            earlier = [v["version"] for v in rows if v["version"] < aliases["prod"]
                       and v["status"] in ("promoted", "consolidated", "removed")
                       and docs[v["version"]] != docs[aliases["prod"]]]
            if not earlier:
                raise HTTPException(409, f"student-v{aliases['prod']} has no earlier promoted version")
            target = str(earlier[-1])
        try:
            return agent.promote(target, "prod")
        except StackError as e:
            raise HTTPException(404, str(e))

    @app.post("/v1/documents/{doc_id}/remove", tags=["documents"], dependencies=[write])
    def remove_document(doc_id: str):
        """Take one learned document out of the student: a new version without its adapter is committed and
        promoted to prod (status `removed`; the document, its probes and its history stay on record). Returns
        the new version and every learned document's probe accuracy before and after. Serialized with updates
        (it waits for a job in progress); 409 when the document is not in prod or was folded with others."""
        from agent.service import LearnerBusy, RemoveRefused

        try:
            return _clean(agent.remove_document(doc_id))
        except KeyError:
            raise HTTPException(404, f"unknown document {doc_id!r}")
        except RemoveRefused as e:
            raise HTTPException(409, str(e))
        except LearnerBusy as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "30"})
        except StackError as e:  # a version's files failed their checksums
            raise HTTPException(409, f"cannot load prod to measure it: {e}")

    # -- forgetting -------------------------------------------------------------------------------------------
    @app.get("/v1/forgetting", tags=["forgetting"], dependencies=[read])
    def forgetting():
        return _clean(agent.forgetting())

    @app.get("/v1/forgetting/plot.png", tags=["forgetting"], dependencies=[read])
    def forgetting_plot():
        from agent.continual import forgetting_report
        from agent.forgetting import plot

        rep = forgetting_report(agent.memory)
        if not rep.versions:
            raise HTTPException(404, "nothing learned yet: no forgetting matrix to plot")
        with tempfile.TemporaryDirectory() as d:
            png = plot(rep, d, formats=("png",))[0]
            return Response(Path(png).read_bytes(), media_type="image/png")

    # -- OpenAI-compatible queries --------------------------------------------------------------------------------
    @app.get("/v1/models", tags=["openai"], dependencies=[read])
    def models():
        return {"object": "list", "data": agent.server.models()}

    def _limit(n: int | None, default: int) -> int:
        n = default if n is None else n
        if n > cfg.max_new_tokens:
            raise HTTPException(422, f"max_tokens {n} is over this server's limit {cfg.max_new_tokens}")
        return n

    async def _run(body, prompt: str, max_tokens: int, kind: str, route_text: str | None = None):
        """In-process, the request joins the batcher's queue and this handler awaits it on the event loop (no
        thread held while the model is busy); with a vLLM backend the blocking client runs in the thread pool."""
        try:
            stops = body.stops()
        except ValueError as e:
            raise HTTPException(422, str(e))
        in_process = agent.server.vllm is None
        if not in_process:  # in-process, submit() resolves the name (once) and _submit answers 404
            try:
                agent.server.resolve(body.model)
            except ModelNotFound as e:
                raise HTTPException(404, str(e))
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        obj = "chat.completion" if kind == "chat" else "text_completion"
        args = (body.model, prompt, max_tokens, body.temperature, body.top_p, stops, body.seed, route_text)
        loop = asyncio.get_running_loop()
        if body.stream:
            q: asyncio.Queue = asyncio.Queue()
            if in_process:
                req = _submit(*args, on_piece=lambda piece: loop.call_soon_threadsafe(q.put_nowait, piece))
                req.future.add_done_callback(lambda _f: loop.call_soon_threadsafe(q.put_nowait, None))
            else:
                pieces = await run_in_threadpool(agent.server.stream, *args)

            def chunk(delta: str | None, finish: str | None) -> str:
                if kind == "chat":
                    choice = {"index": 0, "delta": {} if delta is None else {"content": delta},
                              "finish_reason": finish}
                else:
                    choice = {"index": 0, "text": delta or "", "finish_reason": finish}
                return "data: " + json.dumps({"id": rid, "object": obj + ".chunk", "created": created,
                                              "model": body.model, "choices": [choice]}) + "\n\n"

            async def sse():
                try:
                    if kind == "chat":
                        yield "data: " + json.dumps({"id": rid, "object": obj + ".chunk", "created": created,
                                                     "model": body.model, "choices": [{"index": 0, "delta": {
                                                         "role": "assistant"}, "finish_reason": None}]}) + "\n\n"
                    finish = "stop"
                    if in_process:
                        while (piece := await q.get()) is not None:
                            yield chunk(piece, None)
                        finish = req.future.result().finish_reason
                    else:
                        async for piece in iterate_in_threadpool(pieces):
                            yield chunk(piece, None)
                    yield chunk(None, finish)
                    yield "data: [DONE]\n\n"
                finally:
                    if in_process:
                        req.cancelled = True  # a client that went away leaves its batch

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        if in_process:
            req = _submit(*args)
            g = agent.server.generation(req, await asyncio.wrap_future(req.future))
        else:
            g = await run_in_threadpool(agent.server.generate, *args)
        choice = ({"index": 0, "message": {"role": "assistant", "content": g.text}, "finish_reason": g.finish_reason}
                  if kind == "chat" else {"index": 0, "text": g.text, "finish_reason": g.finish_reason,
                                          "logprobs": None})
        extra = {} if g.adapters is None else {"seal_adapters": list(g.adapters)}  # routed: which adapters answered
        return {"id": rid, "object": obj, "created": created, "model": body.model, "system_fingerprint": g.model,
                **extra,
                "choices": [choice], "usage": {"prompt_tokens": g.prompt_tokens,
                                               "completion_tokens": g.completion_tokens,
                                               "total_tokens": g.prompt_tokens + g.completion_tokens}}

    def _submit(*args, on_piece=None):
        try:
            return agent.server.submit(*args, on_piece=on_piece)
        except QueueFull as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "1"})
        except ModelNotFound as e:
            raise HTTPException(404, str(e))

    @app.post("/v1/chat/completions", tags=["openai"], dependencies=[read])
    async def chat_completions(body: ChatCompletionIn):
        n = _limit(body.max_completion_tokens or body.max_tokens, 128)
        prompt = agent.server.render_chat([m.model_dump() for m in body.messages])
        users = [m.content for m in body.messages if m.role == "user"]
        return await _run(body, prompt, n, "chat", users[-1] if users else prompt)  # routed by the user's question

    @app.post("/v1/completions", tags=["openai"], dependencies=[read])
    async def completions(body: CompletionIn):
        return await _run(body, body.prompt, _limit(body.max_tokens, 16), "text")

    mount_ui(app, agent, auth)  # the audit page (/ui) and its read-only data (/v1/ui/...)
    return app
