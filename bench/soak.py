"""A long mixed soak of a real `seal serve` (issue 28): chat from many clients (streamed, not streamed, some
leaving mid-answer), bad requests, documents submitted while the worker learns (duplicates and idempotency
keys), the audit page's routes polled, a promote and a rollback, all on loopback with bounded loops.

It records every response (status, latency, route) to `responses.jsonl` as it goes, the server's resident
memory every few seconds, and at the end checks what the design promises: no 5xx other than the 503/504 it
sends on purpose, no accepted document lost or learned twice, no request answered by a version the gate never
vetted, flat memory, a fast /healthz.

    python bench/soak.py --minutes 30                     # SmolLM2, configs/default.yaml
    python bench/soak.py --minutes 2 --config configs/tiny.yaml --clients 8    # a smoke run

Ends with: RESULT minutes=M requests=... unexpected_5xx=... lost_jobs=... duplicate_jobs=... unvetted=...
mem_growth=... healthz_p95_ms=...
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SEAL = str(Path(sys.executable).parent / "seal")
WRITE, READ = "soak-write-key-0001", "soak-read-key-00001"
DESIGNED_5XX = (503, 504)  # queue full (Retry-After) and the server's request time limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of the server and its children (the embedded worker is a thread, vLLM would not be)."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(k) for k in kids]
    for k in list(out):
        out += children(k)
    return out


def served_config(args):
    """The config the server runs with (to size the oversized request past its limit)."""
    sys.path.insert(0, str(ROOT))
    from core.config import apply_sets, load_config

    return apply_sets(load_config(args.config or ROOT / "configs/default.yaml"), args.set or [])


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class Recorder:
    """Every response, appended as it happens (a soak that dies keeps what it saw)."""

    def __init__(self, path: Path, t0: float):
        self.f = open(path, "a", buffering=1)
        self.t0 = t0
        self.rows: list[dict] = []

    def add(self, route: str, status: int, seconds: float, **extra) -> None:
        row = {"t": round(time.monotonic() - self.t0, 3), "route": route, "status": status,
               "ms": round(1000 * seconds, 2), **extra}
        self.rows.append(row)
        self.f.write(json.dumps(row) + "\n")


async def timed(rec: Recorder, route: str, coro, served=None, **extra):
    """`served(response)` -> what answered it (the chat's system_fingerprint), written with the row."""
    t = time.monotonic()
    try:
        r = await coro
    except httpx.TimeoutException:
        rec.add(route, 0, time.monotonic() - t, error="client timeout", **extra)
        return None
    except httpx.HTTPError as e:
        rec.add(route, -1, time.monotonic() - t, error=f"{type(e).__name__}: {e}"[:200], **extra)
        return None
    if served is not None and r.status_code == 200:
        try:
            extra["served_by"] = served(r)
        except ValueError:
            extra["served_by"] = "unreadable"
    rec.add(route, r.status_code, time.monotonic() - t, **extra)
    return r


QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "How many legs does a spider have?",
             "What does the text say about the river?", "When was the city founded?", "Who recorded the album?"]


async def chat_client(i: int, http: httpx.AsyncClient, rec: Recorder, end: float, rng: random.Random,
                      max_tokens: int) -> None:
    while time.monotonic() < end:
        model = rng.choice(["seal-student@prod", "seal-student@prod", "base", "seal-student@latest"])
        body = {"model": model, "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}],
                "max_tokens": max_tokens}
        kind = rng.random()
        if kind < 0.5:
            await timed(rec, "chat", http.post("/v1/chat/completions", json=body),
                        served=lambda r: r.json().get("system_fingerprint"))
        else:
            leave = kind > 0.85  # a client that goes away after the first piece
            t = time.monotonic()
            status, served = -1, None
            try:
                async with http.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as r:
                    status = r.status_code
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):  # the last chunk names the version that answered
                            served = json.loads(line[6:]).get("system_fingerprint") or served
                        if leave and line.startswith("data: {"):
                            break
                extra = {"served_by": served} if served else {}
                rec.add("chat-stream-left" if leave else "chat-stream", status, time.monotonic() - t, **extra)
            except httpx.HTTPError as e:
                rec.add("chat-stream", -1, time.monotonic() - t, error=f"{type(e).__name__}"[:200])
        await asyncio.sleep(rng.uniform(0.0, 0.5))


async def bad_client(http: httpx.AsyncClient, rec: Recorder, end: float, rng: random.Random, max_bytes: int) -> None:
    """Requests that must get a 4xx and change nothing."""
    cases = [
        ("bad-oversized", lambda: http.post("/v1/documents", content=b'{"title": "x", "context": "' + b"a" * (max_bytes + 10)
                                            + b'"}', headers={"content-type": "application/json"})),
        ("bad-json", lambda: http.post("/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})),
        ("bad-model", lambda: http.post("/v1/chat/completions", json={"model": "seal-student-v99999",
                                                                      "messages": [{"role": "user", "content": "x"}]})),
        ("bad-param", lambda: http.post("/v1/chat/completions", json={"model": "base", "logprobs": True,
                                                                      "messages": [{"role": "user", "content": "x"}]})),
        ("bad-long-prompt", lambda: http.post("/v1/chat/completions", json={
            "model": "base", "max_tokens": 8, "messages": [{"role": "user", "content": "word " * 20_000}]})),
        ("bad-document", lambda: http.post("/v1/documents", json={"title": "no text"})),
        ("bad-job", lambda: http.get("/v1/jobs", params={"state": "bogus"})),
    ]
    while time.monotonic() < end:
        name, call = rng.choice(cases)
        await timed(rec, name, call())
        await asyncio.sleep(rng.uniform(0.5, 2.0))


async def document_client(http: httpx.AsyncClient, rec: Recorder, end: float, rng: random.Random, docs: list[dict],
                          every_s: float, accepted: dict[str, str]) -> None:
    """New documents, the same document again under a new key, and the same request again under its key."""
    sent: list[tuple[str, dict]] = []
    n = 0
    while time.monotonic() < end:
        roll = rng.random()
        if sent and roll < 0.2:  # a client retry: same key, same body -> the same job
            key, doc = rng.choice(sent)
            route = "doc-retry"
        elif sent and roll < 0.35:  # the same document again, new key -> a duplicate job
            key, doc = f"soak-{n}-again", rng.choice(sent)[1]
            route = "doc-again"
        else:
            doc = docs[n % len(docs)]
            key = f"soak-{n}"
            sent.append((key, doc))
            route = "doc-new"
        n += 1
        r = await timed(rec, route, http.post("/v1/documents", json=doc, headers={"Idempotency-Key": key}))
        if r is not None and r.status_code == 202:
            for j in r.json()["jobs"]:
                accepted[j["id"]] = j["doc_id"]
        await asyncio.sleep(every_s)


async def audit_poller(http: httpx.AsyncClient, rec: Recorder, end: float, every_s: float) -> None:
    routes = ["/v1/ui/overview", "/v1/ui/matrix", "/v1/ui/jobs", "/v1/ui/versions", "/v1/ui/documents",
              "/v1/ui/curves", "/v1/forgetting", "/v1/adapters", "/v1/status", "/metrics"]
    while time.monotonic() < end:
        for route in routes:
            await timed(rec, "audit " + route, http.get(route))
        await asyncio.sleep(every_s)


async def health_poller(http: httpx.AsyncClient, rec: Recorder, end: float) -> None:
    while time.monotonic() < end:
        await timed(rec, "healthz", http.get("/healthz"))
        await asyncio.sleep(1.0)


async def operator(http: httpx.AsyncClient, rec: Recorder, t0: float, minutes: float, events: list[dict]) -> None:
    """At a third of the run an operator rolls prod back (to the promoted version before it); at two thirds, promotes
    the newest vetted version again. Both move prod under live traffic. (Rollback goes to an *earlier* version:
    run the other way round, a promote of the oldest version leaves nothing to roll back to, and the rollback is
    rightly refused with 409.)"""
    for frac, action in ((1 / 3, "rollback"), (2 / 3, "promote")):
        await asyncio.sleep(max(0.0, t0 + frac * minutes * 60 - time.monotonic()))
        listing = (await http.get("/v1/adapters")).json()
        vetted = [v for v in listing["versions"] if v.get("status") in ("promoted", "consolidated", "removed")]
        if action == "promote" and vetted:
            r = await timed(rec, "promote", http.post(f"/v1/adapters/{vetted[-1]['name']}/promote"))
        elif action == "rollback":
            r = await timed(rec, "rollback", http.post("/v1/adapters/rollback"))
        else:
            r = None
        events.append({"t": round(time.monotonic() - t0, 1), "action": action,
                       "status": None if r is None else r.status_code,
                       "body": None if r is None else r.text[:300]})


async def memory_sampler(pid: int, t0: float, end: float, samples: list[tuple[float, int]]) -> None:
    while time.monotonic() < end:
        samples.append((time.monotonic() - t0, rss_bytes(pid)))
        await asyncio.sleep(5.0)


def windows(rows: list[dict], mem: list[tuple[float, int]], window_s: float) -> list[dict]:
    by: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] == 200 or r["route"] == "healthz":
            by[int(r["t"] // window_s)][r["route"]].append(r["ms"])
    out = []
    for w in sorted(by):
        m = [b for t, b in mem if int(t // window_s) == w]
        out.append({"window": w, "from_s": w * window_s, "rss_mib": round(max(m) / 2**20, 1) if m else None,
                    "routes": {k: {"n": len(v), "p50_ms": percentile(v, 0.5), "p95_ms": percentile(v, 0.95)}
                               for k, v in sorted(by[w].items())}})
    return out


async def warm_up(http: httpx.AsyncClient, docs: list[dict], minutes: float) -> None:
    """Before the clock starts: learn a few documents (not among the soak's), so that prod and latest exist and
    there are versions for the operator to move between; a soak from an empty stack mostly measures 404s."""
    if not docs:
        return
    jobs = []
    for i, d in enumerate(docs):
        r = await http.post("/v1/documents", json={"title": d["title"], "context": d["context"]},
                            headers={"Idempotency-Key": f"soak-warm-{i}"})
        r.raise_for_status()
        jobs += [j["id"] for j in r.json()["jobs"]]
    end = time.monotonic() + minutes * 60
    while time.monotonic() < end:
        states = [(await http.get(f"/v1/jobs/{j}", params={"events": False})).json().get("state") for j in jobs]
        if all(s in ("promoted", "rejected", "failed", "cancelled", "duplicate") for s in states):
            print(f"warm-up: {len(jobs)} document(s) learned: {states}", flush=True)
            return
        await asyncio.sleep(5.0)
    print(f"warm-up: not finished within {minutes} min; soaking anyway", flush=True)


async def soak(args, out: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = out / "state"
    cmd = [SEAL, "serve", "--port", str(port), "--host", "127.0.0.1", "--set", f"continual.state_dir={state}",
           "--set", f"runs_dir={out / 'runs'}", *[a for s in args.set or [] for a in ("--set", s)]]
    if args.config:
        cmd += ["-c", str(args.config)]
    log = open(out / "serve.log", "a")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "SEAL_API_KEYS": f"{WRITE}:write,{READ}:read"})
    headers = {"Authorization": f"Bearer {WRITE}"}
    limits = httpx.Limits(max_connections=args.clients + 16, max_keepalive_connections=args.clients + 16)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=args.request_timeout, limits=limits) as http:
        start = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"seal serve exited with {proc.returncode}; see {out / 'serve.log'}")
            try:
                if (await http.get("/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > 900:
                raise SystemExit("seal serve was not ready within 15 minutes")
            await asyncio.sleep(1.0)
        print(f"server ready in {time.monotonic() - start:.0f}s", flush=True)
        all_docs = json.loads(Path(args.documents).read_text())
        await warm_up(http, all_docs[-args.warm_docs:] if args.warm_docs else [], args.warm_minutes)
        print(f"soaking for {args.minutes} min", flush=True)
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        rec = Recorder(out / "responses.jsonl", t0)
        rng = random.Random(args.seed)
        docs = json.loads(Path(args.documents).read_text())[: args.max_documents]
        docs = [{"title": d["title"], "context": d["context"]} for d in docs]  # as a user sends them: no questions
        accepted: dict[str, str] = {}
        mem: list[tuple[float, int]] = []
        events: list[dict] = []
        max_bytes = served_config(args).service.max_request_bytes
        tasks = [chat_client(i, http, rec, end, random.Random(args.seed + i), args.max_tokens) for i in range(args.clients)]
        tasks += [bad_client(http, rec, end, random.Random(args.seed - 1), max_bytes),
                  document_client(http, rec, end, random.Random(args.seed - 2), docs, args.doc_every_s, accepted),
                  audit_poller(http, rec, end, args.audit_every_s), health_poller(http, rec, end),
                  operator(http, rec, t0, args.minutes, events), memory_sampler(proc.pid, t0, end, mem)]
        try:
            await asyncio.gather(*tasks)
            # jobs: let the queue drain (bounded), then count what was accepted against what finished
            drain_end = time.monotonic() + args.drain_minutes * 60
            final: dict[str, dict] = {}
            while time.monotonic() < drain_end:
                final = {}
                for jid in accepted:
                    r = await http.get(f"/v1/jobs/{jid}", params={"events": False})
                    final[jid] = r.json() if r.status_code == 200 else {"state": f"http {r.status_code}"}
                if all(j.get("state") in ("promoted", "rejected", "failed", "cancelled", "duplicate")
                       for j in final.values()):
                    break
                await asyncio.sleep(5.0)
            listing = (await http.get("/v1/adapters")).json()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return summarize(args, rec.rows, mem, events, accepted, final, listing, out)


def summarize(args, rows, mem, events, accepted, final, listing, out: Path) -> dict:
    status_by_route: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        status_by_route[r["route"]][r["status"]] += 1
    unexpected = [r for r in rows if r["status"] >= 500 and r["status"] not in DESIGNED_5XX]
    designed = sum(1 for r in rows if r["status"] in DESIGNED_5XX)
    bad_not_4xx = [r for r in rows if r["route"].startswith("bad-") and not 400 <= r["status"] < 500]
    # jobs: every accepted job must exist and end; no document may be learned (promoted) by two jobs
    # lost: an accepted job the server no longer knows; unfinished: still queued or running when the drain ended
    lost = [j for j, f in final.items() if str(f.get("state")).startswith("http")]
    unfinished = [j for j, f in final.items() if f.get("state") in ("queued", "writing_probes", "self_editing",
                                                                     "training", "evaluating")]
    promoted_by_doc: dict[str, int] = defaultdict(int)
    for f in final.values():
        if f.get("state") == "promoted" and not (f.get("result") or {}).get("replayed"):
            promoted_by_doc[f.get("doc_id")] += 1
    # learned twice: a document under two different adapters among the versions that were ever served (a
    # document the gate refused may be sent again and learned then: its refused version's adapter is not served)
    adapters_by_doc: dict[str, set] = defaultdict(set)
    for v in listing["versions"]:
        if v.get("status") not in ("promoted", "consolidated", "removed"):
            continue
        for a in v.get("adapters", []):
            for d in a.get("documents", []):
                adapters_by_doc[d].add(a.get("id"))
    duplicates = sum(1 for n in promoted_by_doc.values() if n > 1) + sum(1 for s in adapters_by_doc.values() if len(s) > 1)
    # vetted: a version answered a request only if the gate promoted it or an operator did
    vetted = {v["name"] for v in listing["versions"] if v.get("status") in ("promoted", "consolidated", "removed")}
    vetted |= {json.loads(e["body"]).get("name") for e in events if e["status"] == 200 and e["body"]}  # by an operator
    served = [r.get("served_by") for r in rows if r.get("served_by")]
    unvetted = sum(1 for s in served if s != "base" and s not in vetted)
    wins = windows(rows, mem, args.window_s)
    rss = [w["rss_mib"] for w in wins if w["rss_mib"] is not None]
    mem_growth = (rss[-1] - rss[1]) / rss[1] if len(rss) >= 3 else (rss[-1] - rss[0]) / rss[0] if len(rss) >= 2 else 0.0
    health = [r["ms"] for r in rows if r["route"] == "healthz" and r["status"] == 200]
    result = {"minutes": args.minutes, "requests": len(rows), "unexpected_5xx": len(unexpected),
              "designed_503_504": designed, "bad_requests_not_4xx": len(bad_not_4xx), "jobs_accepted": len(accepted),
              "jobs_finished": len(accepted) - len(lost) - len(unfinished), "lost_jobs": len(lost),
              "unfinished_jobs": len(unfinished), "duplicate_jobs": duplicates,
              "unvetted": unvetted, "answered_by": dict(sorted(Counter(served).items())),
              "mem_growth": round(mem_growth, 4),
              "healthz_p95_ms": percentile(health, 0.95), "healthz_max_ms": max(health) if health else None,
              "job_states": dict(sorted(defaultdict(int, {s: sum(1 for f in final.values() if f.get("state") == s)
                                                        for s in {f.get("state") for f in final.values()}}).items())),
              "status_by_route": {k: dict(v) for k, v in sorted(status_by_route.items())},
              "windows": wins, "operator": events, "unexpected_examples": unexpected[:10],
              "bad_examples": bad_not_4xx[:10]}
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console(width=200)
    t = Table(title="soak: p50 / p95 ms of successful responses, per window")
    t.add_column("route")
    for w in res["windows"]:
        t.add_column(f"{w['from_s'] / 60:.0f} min", justify="right")
    t.add_row("RSS MiB", *[str(w["rss_mib"]) for w in res["windows"]])
    for r in sorted({r for w in res["windows"] for r in w["routes"]}):
        t.add_row(r, *[(f"{x['p50_ms']:.0f} / {x['p95_ms']:.0f}" if (x := w["routes"].get(r)) else "")
                       for w in res["windows"]])
    c.print(t)
    s = Table(title="statuses per route")
    s.add_column("route")
    s.add_column("statuses")
    for r, st in res["status_by_route"].items():
        s.add_row(r, ", ".join(f"{k}: {v}" for k, v in sorted(st.items(), key=lambda kv: int(kv[0]))))
    c.print(s)
    c.print(f"chat answered by: {res['answered_by']}")
    c.print(f"jobs accepted {res['jobs_accepted']}: {res['job_states']} (unfinished when the drain ended: "
            f"{res['unfinished_jobs']}); operator: {[(e['action'], e['status']) for e in res['operator']]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--config", type=Path, default=None, help="seal config (default: configs/default.yaml)")
    ap.add_argument("--set", action="append", help="config override passed to seal serve (repeatable)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--documents", default=str(ROOT.parent / "shared/data/squad/dev-other-articles.json"))
    ap.add_argument("--max-documents", type=int, default=40)
    ap.add_argument("--doc-every-s", type=float, default=240.0, help="a document every N s (a SmolLM2 update takes "
                    "minutes on 2 cores: faster would only grow the queue)")
    ap.add_argument("--warm-docs", type=int, default=2, help="documents learned before the clock starts (taken from "
                    "the end of --documents, never sent during the soak)")
    ap.add_argument("--warm-minutes", type=float, default=30.0, help="how long the warm-up may take")
    ap.add_argument("--audit-every-s", type=float, default=3.0)
    ap.add_argument("--window-s", type=float, default=300.0)
    ap.add_argument("--drain-minutes", type=float, default=20.0, help="how long to wait for accepted jobs to end")
    ap.add_argument("--request-timeout", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or ROOT / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
    res = asyncio.run(soak(args, out))
    print_table(res)
    print(f"RESULT minutes={res['minutes']:g} requests={res['requests']} unexpected_5xx={res['unexpected_5xx']} "
          f"lost_jobs={res['lost_jobs']} unfinished_jobs={res['unfinished_jobs']} duplicate_jobs={res['duplicate_jobs']} unvetted={res['unvetted']} "
          f"mem_growth={res['mem_growth']:.4f} healthz_p95_ms={res['healthz_p95_ms']}")


if __name__ == "__main__":
    main()
