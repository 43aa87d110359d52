"""What every request passes through: the body-size limit, request counting, and one error shape."""
from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import error_body, error_response


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
        body = json.dumps(error_body(413, f"request body over {self.limit} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def install(app: FastAPI, max_request_bytes: int, requests) -> None:
    """The body limit, the request counter (`requests`: a Prometheus counter by method, route, status) and
    the error handlers."""
    app.add_middleware(BodyLimit, limit=max_request_bytes)

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        requests.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "param", None),
                              getattr(exc, "code", None), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_req, exc: RequestValidationError):
        errors = exc.errors()
        where = [".".join(str(p) for p in e["loc"][1:]) or None for e in errors]
        problems = "; ".join(f"{w or 'body'}: {e['msg']}" for w, e in zip(where, errors))
        return error_response(422, f"invalid request: {problems}", param=where[0] if where else None)
