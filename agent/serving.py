"""Answering queries with a chosen student version: model names, version resolution, (streamed) generation.

Names, as the OpenAI-compatible API sees them:
    seal-student@prod, seal-student@latest, seal-student@<alias>   a movable alias (resolved per request)
    seal-student-v17                                               an immutable version
    base                                                           the untouched model
A model holds one set of active adapters at a time, so generation takes the server's lock for its duration.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from student.stack import StackError, StackStore, load_version

PREFIX = "seal-student"


class ModelNotFound(ValueError):
    pass


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length
    seconds: float
    model: str  # the concrete version that answered (student-v17 or base)
    adapters: tuple[str, ...] | None = None  # with routing: the adapters this request met (() = base weights)


@dataclass
class GenerationStats:
    tokens: int = 0
    seconds: float = 0.0
    requests: int = 0


class StudentServer:
    def __init__(self, student, stack: StackStore, base_name: str, lock: threading.Lock | None = None,
                 vllm=None, routing=None):
        self.student, self.stack, self.base_name = student, stack, base_name
        self.routing = routing  # agent.routing.RoutingCache: each request meets only its document's adapter
        self.vllm = vllm  # agent.vllm_adapters.VLLMAdapters: answer on a vLLM server instead of in-process
        self.lock = lock or threading.Lock()
        self.stats = GenerationStats()
        self._stats_lock = threading.Lock()

    # -- names ----------------------------------------------------------------------------------------------
    def models(self) -> list[dict]:
        out = [{"id": "base", "object": "model", "owned_by": "seal-agent", "root": self.base_name}]
        aliases = self.stack.aliases()
        for alias, v in sorted(aliases.items()):
            out.append({"id": f"{PREFIX}@{alias}", "object": "model", "owned_by": "seal-agent",
                        "root": f"{PREFIX}-v{v}"})
        for v in self.stack.versions():
            out.append({"id": f"{PREFIX}-v{v}", "object": "model", "owned_by": "seal-agent",
                        "aliases": [a for a, x in aliases.items() if x == v]})
        return out

    def resolve(self, model: str):
        """The manifest behind a model name, or None for the base model."""
        if model in ("base", self.base_name):
            return None
        if model == PREFIX:
            model = f"{PREFIX}@prod"
        try:
            if model.startswith(f"{PREFIX}@"):
                return self.stack.resolve(model.split("@", 1)[1])
            if model.startswith(f"{PREFIX}-v") and model[len(PREFIX) + 2:].isdigit():
                return self.stack.manifest(int(model[len(PREFIX) + 2:]))
        except StackError as e:
            raise ModelNotFound(str(e)) from e
        raise ModelNotFound(f"unknown model {model!r}; see GET /v1/models")

    def _activate(self, manifest, route_text: str = "") -> list[str] | None:
        if manifest is None:
            if self.student.merged:
                self.student.restore_base()
            return None
        names = load_version(self.stack, self.student, manifest) or None
        routing = self.routing.get(manifest, names) if self.routing is not None else None
        if routing is not None:
            return routing.names_for([route_text])[0] or None
        return names

    # -- generation -------------------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict]) -> str:
        tok = self.student.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def _kwargs(self, max_tokens: int, temperature: float, top_p: float, seed: int | None) -> dict:
        tok = self.student.tokenizer
        kw = dict(max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        if temperature > 0:
            if seed is not None:
                torch.manual_seed(seed)
            kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    def _record(self, tokens: int, seconds: float) -> None:
        with self._stats_lock:
            self.stats.tokens += tokens
            self.stats.seconds += seconds
            self.stats.requests += 1

    def generate(self, model: str, prompt: str, max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                 stop: list[str] | None = None, seed: int | None = None, route_text: str | None = None
                 ) -> Generation:
        """`route_text`: what routed adapters are chosen by (the user's last message; default the prompt)."""
        manifest = self.resolve(model)
        if self.vllm is not None:
            return self._generate_vllm(manifest, prompt, max_tokens, temperature, top_p, stop, seed)
        tok = self.student.tokenizer
        enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
        with self.lock:
            names = self._activate(manifest, prompt if route_text is None else route_text)
            t0 = time.perf_counter()
            with self.student.use(names) as m, torch.inference_mode():
                out = m.generate(**enc, **self._kwargs(max_tokens, temperature, top_p, seed))
            seconds = time.perf_counter() - t0
        new = out[0, enc["input_ids"].shape[1]:]
        text = tok.decode(new, skip_special_tokens=True)
        n = int(new.numel())
        finish = "length" if n >= max_tokens and int(new[-1]) != tok.eos_token_id else "stop"
        text, cut = _cut_at_stop(text, stop)
        if cut:
            finish = "stop"
        self._record(n, seconds)
        return Generation(text, int(enc["input_ids"].shape[1]), n, finish, seconds,
                          manifest.name if manifest else "base",
                          tuple(names or ()) if self.routing is not None and manifest else None)

    def stream(self, model: str, prompt: str, max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               stop: list[str] | None = None, seed: int | None = None, route_text: str | None = None
               ) -> Iterator[str]:
        """Yield text pieces as they are generated. The model is resolved before the first piece, so an unknown
        name fails the request instead of the stream."""
        from transformers import TextIteratorStreamer

        manifest = self.resolve(model)
        if self.vllm is not None:
            return self._stream_vllm(manifest, prompt, max_tokens, temperature, top_p, stop, seed)
        tok = self.student.tokenizer
        enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
        counted = {}

        def work():
            with self.lock:
                names = self._activate(manifest, prompt if route_text is None else route_text)
                t0 = time.perf_counter()
                try:
                    with self.student.use(names) as m, torch.inference_mode():
                        out = m.generate(**enc, streamer=streamer, **self._kwargs(max_tokens, temperature, top_p,
                                                                                   seed))
                    counted["n"] = int(out.shape[1] - enc["input_ids"].shape[1])
                except BaseException:
                    streamer.end()
                    raise
                finally:
                    self._record(counted.get("n", 0), time.perf_counter() - t0)

        th = threading.Thread(target=work, daemon=True)
        th.start()

        def pieces():
            yield from _until_stop(streamer, stop)
            th.join()

        return pieces()


    # -- through a vLLM server -------------------------------------------------------------------------------
    def _on_vllm(self, manifest, call):
        """Run `call(server_model_name)`; if the server forgot our adapter (restarted), load it and retry once."""
        from student.backend import BackendError

        name = self.vllm.ensure(manifest)
        try:
            return call(name or self.vllm.base_model())
        except BackendError as e:
            if name is None or "404" not in str(e):
                raise
            self.vllm.forget(name)
            return call(self.vllm.ensure(manifest))

    def _generate_vllm(self, manifest, prompt, max_tokens, temperature, top_p, stop, seed) -> Generation:
        from student.generation import SamplingParams

        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p)
        t0 = time.perf_counter()
        c = self._on_vllm(manifest, lambda m: self.vllm.client.completions(m, [prompt], params, seed))[0][0]
        seconds = time.perf_counter() - t0
        text, cut = _cut_at_stop(c.text, stop)
        self._record(c.completion_tokens, seconds)
        return Generation(text, c.prompt_tokens, c.completion_tokens, "stop" if cut else c.finish_reason, seconds,
                          manifest.name if manifest else "base")

    def _stream_vllm(self, manifest, prompt, max_tokens, temperature, top_p, stop, seed) -> Iterator[str]:
        from student.generation import SamplingParams

        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p)
        name = self._on_vllm(manifest, lambda m: m)  # load before the first piece: errors fail the request
        t0 = time.perf_counter()

        def pieces():
            n = [0]

            def counted():
                for piece in self.vllm.client.stream(name, prompt, params, seed):
                    n[0] += 1
                    yield piece
            try:
                yield from _until_stop(counted(), stop)
            finally:
                self._record(n[0], time.perf_counter() - t0)

        return pieces()


def _until_stop(pieces: Iterator[str], stop: list[str] | None) -> Iterator[str]:
    """Pass text pieces through until a stop string appears (the text before it is still sent)."""
    sent = ""
    for piece in pieces:
        if not piece:
            continue
        text, cut = _cut_at_stop(sent + piece, stop)
        if text[len(sent):]:
            yield text[len(sent):]
        sent = text
        if cut:
            break


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    if not stop:
        return text, False
    idx = [i for s in stop if s and (i := text.find(s)) >= 0]
    return (text[:min(idx)], True) if idx else (text, False)
