"""Generation backends: who turns prompts into text. In-process transformers (default) or a vLLM server.

Both take the same user prompts and render them with the student's own chat template, so a vLLM server sees
byte-identical prompt text (it gets them on /v1/completions, never on /v1/chat/completions with its own
template). `adapter` names what answers: live peft adapter name(s) in-process, a LoRA name loaded on the
server for vLLM, None for the base model. Training never goes through a backend.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Iterator, Protocol

import httpx

from student.generation import SamplingParams, generate, render_prompt


class BackendError(RuntimeError):
    """The generation backend failed (server down, unknown adapter, bad reply)."""


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length


class GenerationBackend(Protocol):
    kind: str

    def complete(self, prompts: list[str], params: SamplingParams, adapter: str | list[str] | None = None,
                 seed: int | None = None, batch_size: int = 8) -> list[list[str]]:
        """Per user prompt, `params.n` completions (chat template applied)."""


class TransformersBackend:
    """The in-process model (a `student.adapters.Student`): the default, and what training uses anyway."""

    kind = "transformers"

    def __init__(self, student):
        self.student = student

    def complete(self, prompts, params, adapter=None, seed=None, batch_size=8):
        with self.student.use(adapter) as m:
            return generate(m, self.student.tokenizer, prompts, params, batch_size=batch_size, seed=seed)


class VLLMClient:
    """The parts of a vLLM server's HTTP API we use: OpenAI completions, models, and runtime LoRA loading
    (the server needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True for the latter)."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 600.0,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict) -> httpx.Response:
        try:
            r = self.http.post(path, json=body)
        except httpx.HTTPError as e:
            raise BackendError(f"vLLM server {self.url} unreachable: {e}") from e
        if r.status_code >= 400:
            raise BackendError(f"vLLM {path} -> HTTP {r.status_code}: {r.text[:300]}")
        return r

    def healthy(self) -> bool:
        try:
            return self.http.get("/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float, poll_s: float = 2.0, alive=lambda: True) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.healthy():
                return
            if not alive():
                raise BackendError("the vLLM server process exited before it became healthy")
            time.sleep(poll_s)
        raise BackendError(f"vLLM server {self.url} not healthy after {timeout_s:.0f}s")

    def models(self) -> list[dict]:
        try:
            r = self.http.get("/v1/models")
        except httpx.HTTPError as e:
            raise BackendError(f"vLLM server {self.url} unreachable: {e}") from e
        if r.status_code >= 400:
            raise BackendError(f"vLLM /v1/models -> HTTP {r.status_code}: {r.text[:300]}")
        return r.json()["data"]

    def load_lora(self, name: str, path: str) -> None:
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    def unload_lora(self, name: str) -> None:
        self._post("/v1/unload_lora_adapter", {"lora_name": name})

    @staticmethod
    def _body(model: str, prompt, params: SamplingParams, seed: int | None, stream: bool = False) -> dict:
        body = {"model": model, "prompt": prompt, "n": params.n, "max_tokens": params.max_new_tokens,
                "temperature": params.temperature, "top_p": params.top_p if params.temperature > 0 else 1.0,
                "repetition_penalty": params.repetition_penalty, "stream": stream}
        if seed is not None:
            body["seed"] = seed
        return body

    def completions(self, model: str, prompts: list[str], params: SamplingParams,
                    seed: int | None = None) -> list[list[Completion]]:
        """Many prompts x n samples in one request; choices come back grouped per prompt."""
        greedy_copies = params.n if params.temperature == 0 else 1  # vLLM refuses n > 1 when greedy
        ask = replace(params, n=1) if greedy_copies > 1 else params
        data = self._post("/v1/completions", self._body(model, prompts, ask, seed)).json()
        choices = sorted(data["choices"], key=lambda c: c["index"])
        if len(choices) != len(prompts) * ask.n:
            raise BackendError(f"vLLM returned {len(choices)} choices for {len(prompts)} x {ask.n}")
        if greedy_copies > 1:
            choices = [c for c in choices for _ in range(greedy_copies)]
        usage = data.get("usage") or {}
        per_prompt = (usage.get("prompt_tokens") or 0) // max(1, len(prompts))
        single = len(choices) == 1  # usage counts are exact for one choice; shared otherwise
        done = int(usage.get("completion_tokens") or 0) if single else 0
        out = []
        for i in range(len(prompts)):
            group = choices[i * params.n:(i + 1) * params.n]
            out.append([Completion(c["text"], per_prompt, done, c.get("finish_reason") or "stop") for c in group])
        return out

    def stream(self, model: str, prompt: str, params: SamplingParams, seed: int | None = None) -> Iterator[str]:
        body = self._body(model, prompt, params, seed, stream=True)
        try:
            with self.http.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code >= 400:
                    r.read()
                    raise BackendError(f"vLLM /v1/completions -> HTTP {r.status_code}: {r.text[:300]}")
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    piece = json.loads(payload)["choices"][0].get("text") or ""
                    if piece:
                        yield piece
        except httpx.HTTPError as e:
            raise BackendError(f"vLLM server {self.url} failed mid-stream: {e}") from e


class VLLMBackend:
    """Generation through a vLLM server. `adapter` must be a LoRA name the server holds (see
    `serving.vllm_adapters.VLLMAdapters`), or None for the base model."""

    kind = "vllm"

    def __init__(self, client: VLLMClient, tokenizer, base_model):
        """`base_model`: the server's name for the base, or a callable resolving it on first use."""
        self.client, self.tokenizer, self._base = client, tokenizer, base_model

    @property
    def base_model(self) -> str:
        if callable(self._base):
            self._base = self._base()
        return self._base

    def complete(self, prompts, params, adapter=None, seed=None, batch_size=64):
        if isinstance(adapter, list):
            if len(adapter) > 1:
                raise BackendError("vLLM applies one LoRA per request: fold a stack into one adapter first")
            adapter = adapter[0] if adapter else None
        rendered = [render_prompt(self.tokenizer, p) for p in prompts]
        out: list[list[str]] = []
        for i in range(0, len(rendered), max(1, batch_size)):
            got = self.client.completions(adapter or self.base_model, rendered[i:i + batch_size], params, seed)
            out += [[c.text.strip() for c in group] for group in got]
        return out
