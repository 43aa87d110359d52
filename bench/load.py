"""Load test of the embedded service over loopback: N concurrent document posts and N concurrent chat
completions against a real `seal serve` process, then every accepted document followed to a final state.

Phases (all N requests of a phase are in flight at once):
  healthz      GET /healthz: the baseline (what the server's HTTP path alone costs at this concurrency)
  documents    POST /v1/documents, one document each: should return at once (it only enqueues)
  chat         POST /v1/chat/completions on seal-student@prod (or base before the first promotion)
  processing   until every accepted document's job is final (promoted | rejected | failed | cancelled)
Reports p50 / p95 / max latency, the ratio of each phase's p50 to the baseline's, status-code counts (a 5xx
is a failure), and the job outcome counts. Results are written to OUT/load.json after each phase.

    python bench/load.py --config configs/tiny.yaml --n 200 --out results/bench-load
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "load-test-write-key"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


async def burst(url: str, n: int, make) -> dict:
    """Fire n requests at once; return latencies (s) and status codes."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits,
                                 timeout=httpx.Timeout(1800.0)) as client:
        async def one(i):
            method, path, body = make(i)
            t = time.perf_counter()
            try:
                r = await client.request(method, path, json=body)
                code, data = r.status_code, (r.json() if r.headers.get("content-type", "").startswith(
                    "application/json") else None)
            except httpx.HTTPError as e:
                code, data = 0, {"error": str(e)}
            return time.perf_counter() - t, code, data

        t0 = time.perf_counter()
        out = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    lat = [x[0] for x in out]
    codes: dict[str, int] = {}
    for _, c, _ in out:
        codes[str(c)] = codes.get(str(c), 0) + 1
    return {"n": n, "wall_s": wall, "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95), "max_s": max(lat),
            "codes": codes, "errors_5xx": sum(v for k, v in codes.items() if k.startswith("5") or k == "0"),
            "bodies": [x[2] for x in out]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/tiny.yaml"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the jobs to finish")
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], help="config override for the server")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = out / "state"
    if state.exists():
        import shutil

        shutil.rmtree(state)  # a fresh agent per run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    seal = str(Path(sys.executable).parent / "seal")
    sets = [f"--set={x}" for x in [f"continual.state_dir={state}", *args.set]]
    log = open(out / "server.log", "w")
    server = subprocess.Popen([seal, "serve", "--config", args.config, "--port", str(port), *sets], stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "SEAL_API_KEYS": f"{KEY}:write"},
                              start_new_session=True)
    results: dict = {"config": args.config, "sets": args.set, "n": args.n, "phases": {}}

    def save():
        (out / "load.json").write_text(json.dumps(results, indent=2))

    try:
        end = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end or server.poll() is not None:
                raise SystemExit(f"server did not start; see {out / 'server.log'}")
            time.sleep(0.2)
        phases = results["phases"]

        def run(name, make):
            r = asyncio.run(burst(url, args.n, make))
            bodies = r.pop("bodies")
            phases[name] = r
            save()
            print(f"{name:10s} n={r['n']} p50 {r['p50_s'] * 1000:8.1f} ms  p95 {r['p95_s'] * 1000:8.1f} ms  "
                  f"max {r['max_s'] * 1000:8.1f} ms  codes {r['codes']}", flush=True)
            return bodies

        run("healthz", lambda i: ("GET", "/healthz", None))
        bodies = run("documents", lambda i: ("POST", "/v1/documents", {
            "title": f"Load {i}", "context": f"Beacon {i} of the Tarvel coast shines green every {i % 9 + 2} "
                                             f"seconds since {1800 + i}.",
            "questions": [{"question": f"Since when does beacon {i} shine?", "answer": str(1800 + i)}]}))
        job_ids = [j["id"] for b in bodies if b and "jobs" in b for j in b["jobs"]]
        model = "seal-student@prod"
        if "prod" not in httpx.get(url + "/v1/adapters", headers={"Authorization": f"Bearer {KEY}"}).json()["aliases"]:
            model = "base"
        phases["chat_model"] = model
        run("chat", lambda i: ("POST", "/v1/chat/completions", {
            "model": model, "max_tokens": args.max_tokens,
            "messages": [{"role": "user", "content": f"Since when does beacon {i} shine?"}]}))
        t0 = time.perf_counter()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        final = {"promoted", "rejected", "failed", "cancelled"}
        while True:
            jobs = http.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]
            mine = [j for j in jobs if j["id"] in set(job_ids)]
            states: dict[str, int] = {}
            for j in mine:
                states[j["state"]] = states.get(j["state"], 0) + 1
            if all(j["state"] in final for j in mine) or time.perf_counter() - t0 > args.timeout:
                break
            time.sleep(2)
        phases["processing"] = {"accepted": len(job_ids), "seconds": round(time.perf_counter() - t0, 1),
                                "states": states,
                                "all_final": all(j["state"] in final for j in mine) and len(mine) == len(job_ids)}
        save()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)

    base = phases["healthz"]["p50_s"]
    print("\n| phase | requests | p50 ms | p95 ms | max ms | p50 / healthz p50 | 5xx |")
    print("|---|---|---|---|---|---|---|")
    for name in ("healthz", "documents", "chat"):
        r = phases[name]
        print(f"| {name} | {r['n']} | {r['p50_s'] * 1000:.1f} | {r['p95_s'] * 1000:.1f} | {r['max_s'] * 1000:.1f} | "
              f"{r['p50_s'] / base:.1f}x | {r['errors_5xx']} |")
    p = phases["processing"]
    print(f"processing: {p['accepted']} accepted documents, states {p['states']}, all final: {p['all_final']} "
          f"after {p['seconds']} s")
    print(f"RESULT n={args.n} ingest_p50_ms={phases['documents']['p50_s'] * 1000:.1f} "
          f"ingest_p95_ms={phases['documents']['p95_s'] * 1000:.1f} chat_p50_ms={phases['chat']['p50_s'] * 1000:.1f} "
          f"chat_p95_ms={phases['chat']['p95_s'] * 1000:.1f} "
          f"errors_5xx={sum(phases[k]['errors_5xx'] for k in ('healthz', 'documents', 'chat'))} "
          f"all_processed={p['all_final']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
