"""A small HTTP client for the agent's API (used by `seal ingest/status/ask --url` and `seal demo`)."""
from __future__ import annotations

import time
from typing import Callable

import httpx

from core.states import TERMINAL


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def normalise_url(url: str) -> str:
    """The server's root from what users paste: an OpenAI base URL (`.../v1`) is accepted; a URL without a scheme
    is refused with the fix, instead of failing later as an unreachable host."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        raise ValueError(f"--url {url!r} has no scheme: use http://{url}")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url {url!r}: only http:// and https:// are supported")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


class SealClient:
    def __init__(self, url: str, api_key: str | None, timeout: float = 600.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=normalise_url(url), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw):
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ApiError(0, f"cannot reach {self.http.base_url}: {e}") from e
        if r.status_code >= 400:
            try:
                msg = r.json().get("detail") or r.text
            except ValueError:
                msg = r.text
            if r.status_code == 401:
                msg = f"{msg} (pass --api-key KEY, or set SEAL_API_KEY or SEAL_API_KEYS as the server has them)"
            raise ApiError(r.status_code, str(msg))
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content

    def submit(self, docs: list[dict], idempotency_key: str | None = None) -> list[dict]:
        body = {"documents": docs} | ({"idempotency_key": idempotency_key} if idempotency_key else {})
        return self._call("POST", "/v1/documents", json=body)["jobs"]

    def job(self, job_id: str, events: bool = False) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}", params={"events": events})

    def wait(self, job_ids: list[str], on_change: Callable[[dict], None] | None = None,
             poll: float = 1.0, timeout: float | None = None) -> list[dict]:
        """Poll until every job is final; `on_change` hears each state change."""
        last: dict[str, str] = {}
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            jobs = [self.job(j) for j in job_ids]
            for j in jobs:
                if last.get(j["id"]) != j["state"]:
                    last[j["id"]] = j["state"]
                    if on_change:
                        on_change(j)
            if all(j["state"] in TERMINAL for j in jobs):
                return jobs
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"jobs not finished after {timeout}s")
            time.sleep(poll)

    def chat(self, model: str, question: str, max_tokens: int = 64) -> dict:
        return self._call("POST", "/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens})

    def models(self) -> list[str]:
        return [m["id"] for m in self._call("GET", "/v1/models")["data"]]

    def forgetting(self) -> dict:
        return self._call("GET", "/v1/forgetting")

    def status(self) -> dict:
        return self._call("GET", "/v1/status")

    def jobs(self, limit: int = 20, state: str | None = None) -> list[dict]:
        params = {"limit": limit} | ({"state": state} if state else {})
        return self._call("GET", "/v1/jobs", params=params)["jobs"]

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def rollback(self, to: str | None = None) -> dict:
        return self._call("POST", "/v1/adapters/rollback", json={"to": to} if to else {})

    def documents(self, limit: int = 50, offset: int = 0, q: str | None = None) -> dict:
        params = {"limit": limit, "offset": offset} | ({"q": q} if q else {})
        return self._call("GET", "/v1/documents", params=params)
