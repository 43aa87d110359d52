"""Answering queries with a chosen student version: model names, version resolution, (streamed) generation.

Names, as the OpenAI-compatible API sees them:
    seal-student@prod, seal-student@latest, seal-student@<alias>   a movable alias (resolved per request)
    seal-student-v17                                               an immutable version
    student-v17, 17, prod, latest                                  the same, as the CLI and /v1/adapters print them
    base                                                           the untouched model
The server resolves names to versions and hands requests to one generation backend: `BatchedGeneration`
(in-process: one thread that owns the model decodes requests in batches, serving/batching.py, one version's
weights per batch, under the server's lock, which the embedded worker shares in `serve_model: shared`) or
`VLLMGeneration` (a vLLM server holding the versions' adapters).
"""
from __future__ import annotations

import logging

import threading
import time
from dataclasses import dataclass
from typing import Iterator

from serving.batching import cut_at_stop
from student.adapters import adapter_memory_bytes
from student.stack import StackError, StackStore

PREFIX = "seal-student"


class ModelNotFound(ValueError):
    pass


log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length
    seconds: float
    model: str  # the concrete version that answered (student-v17 or base)
    adapters: tuple[str, ...] | None = None  # with routing: the adapters this request met (() = base weights)


@dataclass(frozen=True)
class Recitation:
    """What a routed adapter wrote out of its document (recite-then-read, serving.answer: recite)."""

    adapter: str
    text: str
    version: str  # the version whose adapter recited (student-v17)


@dataclass
class GenerationStats:
    tokens: int = 0
    seconds: float = 0.0
    requests: int = 0
    routing_unavailable: int = 0  # requests served by the base weights because a version's routing could not be built


class StudentServer:
    def __init__(self, student, stack: StackStore, base_name: str, lock: threading.Lock | None = None,
                 vllm=None, routing=None, settings=None):
        """`vllm` (serving.vllm_adapters.VLLMAdapters) answers on a vLLM server; else in-process, batched."""
        from core.config import ServingSettings
        from serving.batching import AdapterCache, LoadedVersions

        self.student, self.stack, self.base_name = student, stack, base_name
        self.started = int(time.time())  # the base model's `created` in /v1/models
        self.routing = routing  # serving.routing.RoutingCache: each request meets only its document's adapter
        self.lock = lock or threading.Lock()
        self.settings = settings or ServingSettings()
        self.stats = GenerationStats()
        self._stats_lock = threading.Lock()
        self.loaded = LoadedVersions(self.settings.max_loaded_versions)  # unrouted: whole versions
        # routed: the adapters queries meet; evicted ones stay as free slots the next load fills
        self.cache = AdapterCache(self.settings.adapter_cache_mib * 2**20, self.settings.adapter_slots)
        student.max_free_slots = max(student.max_free_slots, self.settings.adapter_slots)
        from collections import OrderedDict

        # (stack adapter id (immutable), part title line) -> the adapter's recitation of that part; with routing
        # also in the memory store, where the learner's gate already wrote what it measured
        from memory.recitations import RecitationMemo

        self._recited = RecitationMemo(routing.memory if routing is not None else None)
        self._parts: "OrderedDict[str, tuple]" = OrderedDict()  # doc_id -> ((title line, part) pairs, PartIndex)
        self._recited_lock = threading.Lock()
        self.backend = (VLLMGeneration(vllm, self.record, routing, self.routing_unavailable) if vllm is not None
                        else BatchedGeneration(self))

    @property
    def in_process(self) -> bool:
        """Whether requests can be submitted to the batcher and awaited (the API's async path)."""
        return isinstance(self.backend, BatchedGeneration)

    @property
    def batcher(self):
        return self.backend.batcher if self.in_process else None

    def close(self) -> None:
        self.backend.close()

    # -- names ----------------------------------------------------------------------------------------------
    def models(self) -> list[dict]:
        """Every served name as an OpenAI model object: base, each alias, each version. Every name printed here
        (or by `seal status` / `seal adapters`: student-vN, an alias) is accepted wherever a model is named."""
        out = [self._model("base", None, root=self.base_name)]
        aliases = self.stack.aliases()
        for alias, v in sorted(aliases.items()):
            out.append(self._model(f"{PREFIX}@{alias}", self._manifest_or_none(v), root=f"{PREFIX}-v{v}"))
        for v in self.stack.versions():
            out.append(self._model(f"{PREFIX}-v{v}", self._manifest_or_none(v),
                                   aliases=[a for a, x in aliases.items() if x == v]))
        return out

    def model_object(self, model: str) -> dict:
        """The model object behind any accepted name (`GET /v1/models/{name}`); raises ModelNotFound."""
        m = self.resolve(model)
        return self._model(model, m, root=self.base_name if m is None else f"{PREFIX}-v{m.version}")

    def _manifest_or_none(self, v: int):
        try:
            return self.stack.manifest(v)
        except StackError:
            return None

    def _model(self, name: str, manifest, **extra) -> dict:
        created = 0
        if manifest is not None:
            created = int(manifest.created)
        elif self.started:
            created = self.started
        return {"id": name, "object": "model", "created": created, "owned_by": "seal-agent", **extra}

    def resolve(self, model: str):
        """The manifest behind a model name, or None for the base model. Accepts `base`, the base model's own
        name, `seal-student` (= prod), `seal-student@ALIAS`, `seal-student-vN`, and the stack's own names
        (`student-vN`, `N`, an alias such as `prod`)."""
        if model in ("base", self.base_name):
            return None
        if model == PREFIX:
            model = "prod"
        elif model.startswith(f"{PREFIX}@"):
            model = model.split("@", 1)[1]
        elif model.startswith(f"{PREFIX}-v"):
            model = model[len("seal-"):]
        try:
            return self.stack.resolve(model)
        except StackError as e:
            raise ModelNotFound(f"unknown model {model!r}: {e}; see GET /v1/models") from e

    # -- versions' weights (in-process) ------------------------------------------------------------------------
    def _load(self, manifest) -> list[str]:
        """A version's adapters, all kept as adapters (merged ones too): the base weights stay untouched, so going
        from a merged version to `base` and back costs no restore and re-merge of the full weights."""
        if self.student.merged:
            self.student.restore_base()
        live = self.student.adapters()
        need = [a for a in manifest.adapters if a.id not in live]
        if need:
            self.stack.verify(type(manifest)(manifest.version, manifest.parent, tuple(need), manifest.created_at,
                                             manifest.note))
            for a in need:
                self.student.load(self.stack.adapter_dir(a.id), a.id)
        names = [a.id for a in manifest.adapters]
        self.loaded.touch(manifest.version, names, self.student.drop)
        return names

    def activate_batch(self, manifest, route_texts: list[str]) -> tuple[list[list[str]], bool]:
        """On the batcher's thread, under the lock: the adapters each request of one version meets."""
        if manifest is None:
            if self.student.merged:
                self.student.restore_base()
            return [[] for _ in route_texts], False
        if self.routing is None:
            names = self._load(manifest)
            return [names for _ in route_texts], False
        ids = [a.id for a in manifest.adapters]
        routing = self.routing.get(manifest, ids)
        if routing is None:
            return (self.routing_unavailable(manifest, len(route_texts)) if ids else [[] for _ in route_texts]), True
        per = routing.names_for(route_texts)
        self._ensure(manifest, sorted({n for names in per for n in names}))
        return per, True

    def _ensure(self, manifest, ids: list[str]) -> None:
        """Routed: load only these adapters of the version (checksums verified on load), the least recently used
        dropped past serving.adapter_cache_mib."""
        if self.student.merged:
            self.student.restore_base()
        refs = {a.id: a for a in manifest.adapters}

        def load(i: str) -> None:
            self.stack.verify(type(manifest)(manifest.version, manifest.parent, (refs[i],), manifest.created_at,
                                             manifest.note))
            self.student.load(self.stack.adapter_dir(i), i)

        def size_of(i: str) -> int:
            return adapter_memory_bytes(self.stack.adapter_dir(i))

        # evicted adapters leave their modules as free slots: the next miss copies weights in (ms) instead of
        # building peft modules (~1 s on SmolLM2)
        self.cache.use(ids, set(self.student.adapters()), size_of, load, self.student.release)

    def routing_unavailable(self, manifest, n: int) -> list[list[str]]:
        """Routing is on but this version's routing cannot be built (its documents are not in memory): never stack
        every adapter on every question (what drops the canary to 60-80%); serve the base weights, say so in
        the log and count it (seal_routing_unavailable_total)."""
        log.warning("routing for %s cannot be built (its documents are not in memory): %d request(s) answered by "
                    "the base weights", manifest.name, n)
        with self._stats_lock:
            self.stats.routing_unavailable += n
        return [[] for _ in range(n)]

    # -- generation -------------------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict]) -> str:
        tok = self.student.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def record(self, tokens: int, seconds: float, requests: int = 1) -> None:
        with self._stats_lock:
            self.stats.tokens += tokens
            self.stats.seconds += seconds
            self.stats.requests += requests

    def submit(self, model: str, prompt: str, max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               stop: list[str] | None = None, seed: int | None = None, route_text: str | None = None,
               on_piece=None):
        """Queue one request for the in-process batcher and return it (its `future` gives a Generation-like
        `Finished`); raises ModelNotFound, or serving.batching.QueueFull when the queue is at its bound."""
        if not self.in_process:
            raise RuntimeError("submit() is the in-process path; this server answers on vLLM")
        return self.backend.submit(self.resolve(model), prompt, max_tokens, temperature, top_p, stop, seed,
                                   route_text, on_piece)

    def warm_routing(self, model: str) -> None:
        """Build (or find cached) the routing of the version behind `model` in the caller's thread, so the batcher
        thread, which holds the model lock, never builds one; raises ModelNotFound like `submit`."""
        m = self.resolve(model)
        if m is not None and self.routing is not None and m.adapters:
            self.routing.get(m, [a.id for a in m.adapters])

    @property
    def reciting(self) -> bool:
        return self.settings.answer == "recite" and self.in_process and self.routing is not None

    def recitation(self, model: str, question: str) -> Recitation | None:
        """Recite-then-read, first half (blocking: call it from a worker thread). The adapter that `question`
        routes to writes out the question's nearest `serving.recite_parts` parts of its document, each from its
        title line alone, greedily; None when the question routes to no adapter (it is answered as usual). Greedy
        output of fixed weights never changes, so each part is kept per adapter (a stack adapter never changes):
        later questions about the same parts only pay for the reading."""
        if not self.reciting:
            return None
        from teacher.passages import recitation_parts

        m = self.resolve(model)
        if m is None or not m.adapters:
            return None
        routing = self.routing.get(m, [a.id for a in m.adapters])
        route = routing.router.route(question) if routing is not None else None
        if route is None or route.doc_id not in routing.adapter_of:
            return None
        adapter = routing.adapter_of[route.doc_id]
        from memory.router import PartIndex

        with self._recited_lock:
            cached = self._parts.get(route.doc_id)
        if cached is None:  # a document is immutable (its id is its content's hash): split and index it once
            parts = recitation_parts(self.routing.document(route.doc_id))
            cached = (parts, PartIndex([t for _, t in parts]))
            with self._recited_lock:
                self._parts[route.doc_id] = cached
                while len(self._parts) > 1024:
                    self._parts.popitem(last=False)
        parts, index = cached
        recited = []
        for j in index.nearest(question, self.settings.recite_parts):
            prompt, part = parts[j]
            with self._recited_lock:
                text = self._recited.get((adapter, prompt))
            if text is None:
                budget = self.count_tokens(part) + 16  # the part's length: a recitation never runs past it
                req = self.backend.submit(m, prompt, budget, 0.0, 1.0, None, None, question)  # routes as the question
                fin = req.future.result()
                if fin.adapters != (adapter,):
                    return None  # the routing moved under us: answer the usual way
                text = fin.text.strip()  # as the learner's gate keeps it (the same store entry)
                with self._recited_lock:
                    self._recited[(adapter, prompt)] = text
            recited.append(text)
        text = "\n".join(recited)
        return Recitation(adapter, text, m.name)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the served model's tokenizer (stream usage on the vLLM path)."""
        return len(self.student.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generation(self, req, fin) -> Generation:
        """The Generation of a submitted request from the batcher's `Finished`."""
        return self.backend.generation(req, fin)

    def generate(self, model: str, prompt: str, max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                 stop: list[str] | None = None, seed: int | None = None, route_text: str | None = None
                 ) -> Generation:
        """`route_text`: what routed adapters are chosen by (the user's last message; default the prompt)."""
        return self.backend.generate(self.resolve(model), prompt, max_tokens, temperature, top_p, stop, seed,
                                     route_text)

    def stream(self, model: str, prompt: str, max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               stop: list[str] | None = None, seed: int | None = None, route_text: str | None = None
               ) -> Iterator[str]:
        """Yield text pieces as they are generated. The model is resolved before the first piece, so an unknown
        name fails the request instead of the stream; a consumer that stops early drops out of its batch."""
        return self.backend.stream(self.resolve(model), prompt, max_tokens, temperature, top_p, stop, seed,
                                   route_text)


class BatchedGeneration:
    """In-process: requests join the batcher's queue; the server's `activate_batch` puts each version's weights
    in place for its batch."""

    def __init__(self, server: StudentServer):
        from serving.batching import BatchScheduler

        self.server, self.tokenizer = server, server.student.tokenizer
        self.window = getattr(getattr(server.student.base, "config", None), "max_position_embeddings", None)
        s = server.settings
        self.batcher = BatchScheduler(server.student.use, self.tokenizer, server.activate_batch, server.lock,
                                      s.max_batch, s.max_wait_ms, s.max_queue,
                                      on_batch=lambda rows, waits, tokens, seconds: server.record(tokens, seconds,
                                                                                                  rows))

    def close(self) -> None:
        self.batcher.close()

    def submit(self, manifest, prompt, max_tokens, temperature, top_p, stop, seed, route_text, on_piece=None):
        from serving.batching import PromptTooLong, Request

        ids = self.tokenizer([prompt], add_special_tokens=False)["input_ids"][0]
        if self.window and len(ids) + max_tokens > self.window:
            raise PromptTooLong(f"the prompt has {len(ids)} tokens and max_tokens is {max_tokens}: "
                                f"{len(ids) + max_tokens} is over the model's window of {self.window} tokens")
        req = Request(list(ids), max_tokens, temperature, top_p, seed, stop or None,
                      version=manifest.version if manifest else None,
                      target=manifest, route_text=prompt if route_text is None else route_text,
                      on_piece=on_piece)
        return self.batcher.submit(req)

    def generation(self, req, fin) -> Generation:
        m = req.target
        return Generation(fin.text, fin.prompt_tokens, fin.completion_tokens, fin.finish_reason, fin.seconds,
                          m.name if m else "base", fin.adapters if m is not None else None)

    def generate(self, manifest, prompt, max_tokens, temperature, top_p, stop, seed, route_text) -> Generation:
        req = self.submit(manifest, prompt, max_tokens, temperature, top_p, stop, seed, route_text)
        return self.generation(req, req.future.result())

    def stream(self, manifest, prompt, max_tokens, temperature, top_p, stop, seed, route_text) -> Iterator[str]:
        import queue

        q: queue.Queue = queue.Queue()
        req = self.submit(manifest, prompt, max_tokens, temperature, top_p, stop, seed, route_text, on_piece=q.put)
        req.future.add_done_callback(lambda _f: q.put(None))

        def pieces():
            try:
                while (piece := q.get()) is not None:
                    yield piece
                req.future.result()  # a failed batch fails the stream
            finally:
                req.cancelled = True

        return pieces()


class VLLMGeneration:
    """On a vLLM server: each version is one (folded) LoRA adapter the server holds (serving/vllm_adapters.py);
    with routed adapters, this process routes each request and asks the server for the one adapter its text is
    about (a document's adapter, loaded alone), or for the base model."""

    def __init__(self, vllm, record, routing=None, on_unavailable=None):
        self.vllm, self.record, self.routing = vllm, record, routing
        self.on_unavailable = on_unavailable or (lambda manifest, n: None)

    def close(self) -> None:
        pass

    def _target(self, manifest, route_text: str):
        """(load: () -> the server-side model name or None for the base, the routed adapters or None)."""
        routing = (self.routing.get(manifest, [a.id for a in manifest.adapters])
                   if self.routing is not None and manifest is not None and manifest.adapters else None)
        if routing is None and self.routing is not None and manifest is not None and manifest.adapters:
            self.on_unavailable(manifest, 1)  # routing on but not buildable: the base, never every adapter
            return (lambda: None), ()
        if routing is None:
            return (lambda: self.vllm.ensure(manifest)), None
        ids = routing.names_for([route_text])[0]
        if not ids:
            return (lambda: None), ()
        return (lambda: self.vllm.ensure_adapter(manifest, ids[0])), tuple(ids)

    def _on_vllm(self, load, call):
        """Run `call(server_model_name)`; if the server forgot our adapter (restarted), load it and retry once."""
        from serving.backend import BackendError

        name = load()
        try:
            return call(name or self.vllm.base_model())
        except BackendError as e:
            if name is None or "404" not in str(e):
                raise
            self.vllm.forget(name)
            return call(load())

    def generate(self, manifest, prompt, max_tokens, temperature, top_p, stop, seed, route_text=None) -> Generation:
        from student.generation import SamplingParams

        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p)
        load, adapters = self._target(manifest, prompt if route_text is None else route_text)
        t0 = time.perf_counter()
        c = self._on_vllm(load, lambda m: self.vllm.client.completions(m, [prompt], params, seed))[0][0]
        seconds = time.perf_counter() - t0
        text, cut = cut_at_stop(c.text, stop)
        self.record(c.completion_tokens, seconds)
        return Generation(text, c.prompt_tokens, c.completion_tokens, "stop" if cut else c.finish_reason, seconds,
                          manifest.name if manifest else "base", adapters)

    def stream(self, manifest, prompt, max_tokens, temperature, top_p, stop, seed, route_text=None) -> Iterator[str]:
        from student.generation import SamplingParams

        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p)
        load, _ = self._target(manifest, prompt if route_text is None else route_text)
        name = self._on_vllm(load, lambda m: m)  # load before the first piece: errors fail the request
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
                self.record(n[0], time.perf_counter() - t0)

        return pieces()


def _until_stop(pieces: Iterator[str], stop: list[str] | None) -> Iterator[str]:
    """Pass text pieces through until a stop string appears (the text before it is still sent)."""
    sent = ""
    for piece in pieces:
        if not piece:
            continue
        text, cut = cut_at_stop(sent + piece, stop)
        if text[len(sent):]:
            yield text[len(sent):]
        sent = text
        if cut:
            break
