"""Batched generation for concurrent requests: one thread owns the model, requests queue, and those that arrive
while a batch runs join the next one.

Requests wait in per-version queues; the thread serves versions in turn (round robin, so a busy version cannot
starve another), takes up to `max_batch` requests of one version (waiting at most `max_wait_ms` for the batch to
fill), activates that version's weights once, and decodes the batch step by step with a key/value cache. Rows
are left-padded with explicit position ids, so a row's greedy output does not depend on its neighbours; each row
stops on its own (end token, its own `max_tokens`, its stop strings, its client gone) and sampling draws from a
per-request generator seeded by the request, so a seeded request gives the same text in any batch.
"""
from __future__ import annotations

import inspect
import logging
import random
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import torch


class QueueFull(RuntimeError):
    """The scheduler's queue is at `max_queue`: answer 503 and let the client retry."""


class PromptTooLong(ValueError):
    """The prompt plus the tokens asked for do not fit the model's window: answer 400 before it reaches a batch."""


log = logging.getLogger(__name__)

@dataclass
class Request:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    version: object = None  # the scheduler's grouping key (the version the request resolved to)
    target: object = None  # what `activate` is given for the batch (the version's manifest; None = base)
    route_text: str = ""
    on_piece: Callable[[str], None] | None = None  # streaming: called with each new piece of text
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set by the client's side when it goes away


@dataclass(frozen=True)
class Finished:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length
    seconds: float
    adapters: tuple[str, ...] | None
    batch_size: int
    waited: float


SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class BatchStats:
    """Cumulative counts for Prometheus histograms (per-bucket, not cumulative across buckets)."""

    batches: int = 0
    rows: int = 0
    tokens: int = 0
    seconds: float = 0.0
    size_counts: list[int] = field(default_factory=lambda: [0] * (len(SIZE_BUCKETS) + 1))
    wait_counts: list[int] = field(default_factory=lambda: [0] * (len(WAIT_BUCKETS) + 1))
    wait_sum: float = 0.0

    @staticmethod
    def _bucket(edges, x) -> int:
        return next((i for i, e in enumerate(edges) if x <= e), len(edges))

    def add(self, rows: int, tokens: int, seconds: float, waits: list[float]) -> None:
        self.batches += 1
        self.rows += rows
        self.tokens += tokens
        self.seconds += seconds
        self.size_counts[self._bucket(SIZE_BUCKETS, rows)] += 1
        for w in waits:
            self.wait_counts[self._bucket(WAIT_BUCKETS, w)] += 1
            self.wait_sum += w


class BatchScheduler:
    """`activate(version, route_texts) -> (adapter names per request, routed)` runs on the scheduler's thread
    under `lock` right before a batch; requests with equal names are decoded together. `model_of(names)` is a
    context manager giving the model with those adapters active."""

    def __init__(self, model_of: Callable[[list[str] | None], object], tokenizer, activate, lock: threading.Lock,
                 max_batch: int = 16, max_wait_ms: float = 10.0, max_queue: int = 256,
                 on_batch: Callable[[int, list[float], int, float], None] | None = None):
        self.model_of, self.tok, self.activate, self.lock = model_of, tokenizer, activate, lock
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queues: OrderedDict[object, deque[Request]] = OrderedDict()
        self._cond = threading.Condition()
        self._queued = self._taken = 0
        self._thread: threading.Thread | None = None
        self._stop = False

    # -- the clients' side ------------------------------------------------------------------------------------
    def depth(self) -> int:
        return self._queued

    def in_flight(self) -> int:
        """Requests taken into a batch and not finished yet."""
        return self._taken

    def submit(self, req: Request) -> Request:
        with self._cond:
            if self._queued >= self.max_queue:
                raise QueueFull(f"generation queue is full ({self.max_queue} waiting); retry shortly")
            self._queues.setdefault(req.version, deque()).append(req)
            self._queued += 1
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(target=self._loop, name="seal-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        return req

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- the model's side ---------------------------------------------------------------------------------------
    def _take(self) -> list[Request] | None:
        """The next batch: the first version in turn, filled up to max_batch or until its oldest waited max_wait."""
        with self._cond:
            while not self._stop and not self._queued:
                self._cond.wait()
            if self._stop:
                return None
            version, q = next((v, q) for v, q in self._queues.items() if q)
            deadline = q[0].arrived + self.max_wait
            while len(q) < self.max_batch and not self._stop and (left := deadline - time.perf_counter()) > 0:
                self._cond.wait(left)
            batch = [q.popleft() for _ in range(min(self.max_batch, len(q)))]
            self._queued -= len(batch)
            self._taken += len(batch)
            self._queues.move_to_end(version)  # round robin: this version goes behind the others
            if not q:
                del self._queues[version]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                live = [r for r in batch if not r.cancelled or not r.future.cancel()]
                if live:
                    self._run(live)
            finally:
                with self._cond:
                    self._taken -= len(batch)

    def _run(self, batch: list[Request]) -> None:
        try:
            with self.lock:
                names, routed = self.activate(batch[0].target, [r.route_text for r in batch])
                groups: dict[tuple, list[int]] = {}
                for i, n in enumerate(names):
                    groups.setdefault(tuple(n or ()), []).append(i)
                for key, idx in groups.items():
                    rows = [batch[i] for i in idx]
                    t0 = time.perf_counter()
                    with self.model_of(list(key) or None) as model:
                        try:
                            outs = decode(model, self.tok, rows)
                        except Exception:  # noqa: BLE001 - find the row that failed: it alone hears of it
                            if len(rows) == 1:
                                raise
                            rows, outs = self._one_by_one(model, rows)
                    seconds = time.perf_counter() - t0
                    self._record(len(rows), sum(o[1] for o in outs), seconds, [t0 - r.arrived for r in rows])
                    for r, (text, n, finish) in zip(rows, outs):
                        if not r.future.done():
                            r.future.set_result(Finished(text, len(r.prompt_ids), n, finish, seconds,
                                                         key if routed else None, len(rows),
                                                         t0 - r.arrived))
        except BaseException as e:  # noqa: BLE001 - every waiting client must hear of it
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(e)
            if not isinstance(e, Exception):
                raise

    def _one_by_one(self, model, rows: list[Request]) -> tuple[list[Request], list]:
        """A batch failed: decode each row alone; a row that fails again gets its own exception, the others
        their answers (one bad request never fails its neighbours)."""
        ok, outs = [], []
        for r in rows:
            try:
                outs.append(decode(model, self.tok, [r])[0])
                ok.append(r)
            except Exception as e:  # noqa: BLE001
                if not r.future.done():
                    r.future.set_exception(e)
        return ok, outs

    def _record(self, rows: int, tokens: int, seconds: float, waits: list[float]) -> None:
        self.stats.add(rows, tokens, seconds, waits)
        if self.on_batch is not None:
            self.on_batch(rows, waits, tokens, seconds)


# -- one batch, decoded step by step ------------------------------------------------------------------------------
def _pick(logits: torch.Tensor, r: Request, gen: torch.Generator | None) -> int:
    if r.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / r.temperature, dim=-1)
    if r.top_p < 1.0:
        p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(p, -1) - p < r.top_p  # the smallest prefix whose mass reaches top_p
        probs = torch.zeros_like(probs).scatter(0, idx[keep], p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """The text up to the first stop string (and whether one was found): one rule for batched, streamed and
    backend answers."""
    if not stop:
        return text, False
    idx = [i for s in stop if s and (i := text.find(s)) >= 0]
    return (text[:min(idx)], True) if idx else (text, False)


@torch.inference_mode()
def decode(model, tok, rows: list[Request]) -> list[tuple[str, int, str]]:
    """(text, completion tokens, finish reason) per row; streams pieces to rows that asked for them."""
    eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(r.prompt_ids) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids, dtype=torch.long)
        mask[i, width - len(r.prompt_ids):] = 1
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    gens = [torch.Generator().manual_seed(r.seed if r.seed is not None else random.randrange(2**63))
            if r.temperature > 0 else None for r in rows]
    out_ids: list[list[int]] = [[] for _ in rows]
    texts, finish = [""] * len(rows), [None] * len(rows)
    was_training = model.training
    model.eval()
    try:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        key = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        cache = getattr(out, key)
        alive = list(range(len(rows)))  # rows still decoding, in the order of the batch's current rows
        while True:
            logits = out.logits[:, -1, :]
            nxt = []
            for j, i in enumerate(alive):
                r = rows[i]
                if r.cancelled:
                    finish[i] = "cancelled"
                    nxt.append(pad)
                    continue
                t = _pick(logits[j], r, gens[i])
                nxt.append(t)
                out_ids[i].append(t)
                text = tok.decode(out_ids[i], skip_special_tokens=True)
                text, cut = cut_at_stop(text, r.stop)
                if t == eos or cut:
                    finish[i] = "stop"
                elif len(out_ids[i]) >= r.max_tokens:
                    finish[i] = "length"
                if not text.endswith("\ufffd") or finish[i] is not None:  # hold half a character back
                    if r.on_piece is not None and len(text) > len(texts[i]) and text.startswith(texts[i]):
                        r.on_piece(text[len(texts[i]):])
                    texts[i] = text
            keep = [j for j, i in enumerate(alive) if finish[i] is None]
            if not keep:
                break
            if len(keep) < len(alive):  # finished rows leave the batch: no compute spent on them from now on
                idx = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(idx)
                mask, pos = mask[idx], pos[idx]
                nxt, alive = [nxt[j] for j in keep], [alive[j] for j in keep]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long)], dim=1)
            pos = pos[:, -1:] + 1
            out = model(input_ids=torch.tensor(nxt, dtype=torch.long)[:, None], attention_mask=mask,
                        position_ids=pos, use_cache=True, **{key: cache})
            cache = getattr(out, key)
    finally:
        if was_training:
            model.train()
    return [(texts[i], len(out_ids[i]),
             "stop" if finish[i] == "cancelled" else finish[i]) for i, r in enumerate(rows)]


class AdapterCache:
    """Routed serving loads only the adapters that a batch's queries route to, and keeps them under a byte budget:
    the least recently used are dropped first, never one the current batch needs (a batch that alone needs more
    than the budget is served, and logged). `max_count` bounds how many are live, whatever their bytes."""

    def __init__(self, budget_bytes: int, max_count: int | None = None):
        self.budget = budget_bytes
        self.max_count = max_count
        self._lru: OrderedDict[str, int] = OrderedDict()  # adapter id -> bytes

    @property
    def bytes(self) -> int:
        return sum(self._lru.values())

    def ids(self) -> list[str]:
        return list(self._lru)

    def use(self, ids: list[str], live: set[str], size_of: Callable[[str], int], load: Callable[[str], None],
            drop: Callable[[str], None]) -> None:
        """Make every adapter in `ids` live, room made before each load; `live` is what the model holds now (an
        adapter dropped by another path is loaded again)."""
        for gone in [i for i in self._lru if i not in live]:
            del self._lru[gone]
        for i in ids:
            if i in self._lru:
                self._lru.move_to_end(i)
        for i in ids:
            if i in self._lru:
                continue
            size = size_of(i)
            self._evict(self.budget - size, keep=set(ids), drop=drop,
                        count=None if self.max_count is None else self.max_count - 1)
            load(i)
            self._lru[i] = size
        if self.bytes > self.budget:
            log.warning("one batch needs %d adapters (%.0f MiB), over serving.adapter_cache_mib (%.0f MiB)",
                        len(ids), self.bytes / 2**20, self.budget / 2**20)

    def _evict(self, room: int, keep: set[str], drop: Callable[[str], None], count: int | None = None) -> None:
        for i in list(self._lru):
            if self.bytes <= room and (count is None or len(self._lru) <= count):
                return
            if i not in keep:
                del self._lru[i]
                drop(i)

    def __len__(self) -> int:
        return len(self._lru)


class LoadedVersions:
    """At most `limit` versions' adapters live in memory; the least recently used version's adapters are dropped
    (unless a kept version shares them) when a new one comes in."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lru: OrderedDict[object, tuple[str, ...]] = OrderedDict()

    def touch(self, version, names: list[str], drop: Callable[[str], None]) -> None:
        self._lru[version] = tuple(names)
        self._lru.move_to_end(version)
        while len(self._lru) > self.limit:
            _, gone = self._lru.popitem(last=False)
            kept = {n for ns in self._lru.values() for n in ns}
            for n in gone:
                if n not in kept:
                    drop(n)

    def __len__(self) -> int:
        return len(self._lru)
