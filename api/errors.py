"""One error shape for every route: OpenAI's error object (what its clients parse) beside FastAPI's `detail`.

`type` follows the status (a 401 is an authentication_error, not an invalid request); `code` is a short string
or null, and `param` names the request field at fault where there is one.
"""
from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error", 422: "invalid_request_error",
         429: "rate_limit_error", 499: "invalid_request_error", 503: "service_unavailable_error", 504: "timeout_error"}
CODES = {401: "invalid_api_key", 404: "not_found", 413: "request_too_large", 422: "invalid_value", 504: "timeout"}


class APIError(HTTPException):
    """An HTTPException that also names the parameter at fault and a machine-readable code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status, message, headers=headers)
        self.param, self.code = param, code


def error_type(status: int) -> str:
    if status in TYPES:
        return TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"detail": message, "error": {"message": message, "type": error_type(status), "param": param,
                                         "code": code if code is not None else CODES.get(status)}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)
