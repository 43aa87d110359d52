"""Serving throughput: a real `seal serve` on loopback, batched against one request at a time, in one run.

For each server variant (same config; `serving.max_batch` 1 vs the default, and optionally bfloat16 weights) and
each concurrency C, C clients each send chat completions back to back (`--per-client` each, `--max-tokens`
tokens, greedy, varied questions), while a prober asks /healthz every 50 ms. Variants alternate per concurrency
level, so machine noise falls on all of them alike. Reported per (variant, C): requests/s, completion tokens/s,
p50/p95 latency, /healthz p95, mean batch size (from /metrics), and the ratio to the one-at-a-time server.

Then memory: the server is given `--versions` versions (one small adapter each, built before it starts) and
queried round robin over all of them `--rounds` times; the server's RSS after each round is reported (the bound
on loaded versions should keep it flat).

    python bench/serving.py --config configs/default.yaml --out results/bench-serving [--clients 1,8,32,64]
Rows go to OUT/rows.jsonl as they finish (a rerun skips them); OUT/summary.json and a table at the end.
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
sys.path.insert(0, str(ROOT))
KEY = "serving-bench-key"
QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.", "How many days are in a week?",
             "Who wrote Romeo and Juliet?", "What do bees make?", "Explain what a river is in one sentence.",
             "What is 12 plus 30?", "Give a synonym for happy.", "What is the opposite of cold?",
             "Why is the sky blue?", "Describe a cat in a few words.", "What language is spoken in Spain?"]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, config: str, sets: list[str], state: Path, log: Path):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        seal = str(Path(sys.executable).parent / "seal")
        args = [seal, "serve", "--config", config, "--port", str(self.port),
                *[f"--set={x}" for x in [f"continual.state_dir={state}", *sets]]]
        self.proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "SEAL_API_KEYS": f"{KEY}:write"}, start_new_session=True)

    def wait(self, timeout: float = 600) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"server {self.name} exited; see its log")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"server {self.name} did not start in {timeout:.0f}s")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


async def load(url: str, clients: int, per_client: int, max_tokens: int, model: str = "base") -> dict:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits,
                                 timeout=httpx.Timeout(3600.0)) as c:
        lat, tokens, codes, health = [], 0, {}, []
        done = asyncio.Event()

        async def client(i: int):
            nonlocal tokens
            for k in range(per_client):
                q = QUESTIONS[(i * per_client + k) % len(QUESTIONS)]
                t = time.perf_counter()
                r = await c.post("/v1/chat/completions", json={"model": model, "max_tokens": max_tokens,
                                                               "messages": [{"role": "user", "content": q}]})
                lat.append(time.perf_counter() - t)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    tokens += r.json()["usage"]["completion_tokens"]

        async def prober():
            while not done.is_set():
                t = time.perf_counter()
                await c.get("/healthz")
                health.append(time.perf_counter() - t)
                await asyncio.sleep(0.05)

        probe = asyncio.create_task(prober())
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - t0
        done.set()
        await probe
    n = sum(codes.values())
    return {"requests": n, "wall_s": wall, "req_per_s": n / wall, "tokens_per_s": tokens / wall,
            "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95), "healthz_p95_s": pct(health, 0.95),
            "healthz_n": len(health), "codes": {str(k): v for k, v in codes.items()}}


def build_versions(config: str, sets: list[str], state: Path, n: int) -> None:
    """n versions of one small adapter each (one training step on a sentence), straight into the stack."""
    from core.config import load_config
    from student.runtime import open_runtime
    from student.stack import StackStore

    cfg = load_config(config)
    over: dict = {}
    for s in sets:
        k, v = s.split("=", 1)
        sec, key = k.split(".", 1)
        over.setdefault(sec, {})[key] = v
    cfg = cfg.with_overrides(**{sec: {**getattr(cfg, sec).model_dump(), **kv} for sec, kv in over.items()})
    st = open_runtime(cfg).student
    store = StackStore(state / "stack")
    one = st.settings.model_copy(update={"epochs": 1})
    with store.writer():
        for i in range(n):
            name = f"m{i}"
            st.train_adapter([f"Beacon {i} of the Tarvel coast shines green since {1800 + i}."], name, seed=i,
                             settings=one)
            ref = store.add_adapter(st, name, f"a{i + 1:05d}", [f"doc{i}"])
            store.commit([ref], parent=None, note=f"bench version {i + 1}", move=("latest", "prod"))
            st.drop(name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--clients", default="1,8,32,64")
    ap.add_argument("--per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="also a batched server with bfloat16 weights")
    ap.add_argument("--versions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="config override for every server")
    a = ap.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["variant"], r.get("clients")) for r in rows}

    def put(row):
        rows.append(row)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    base = [f"runtime.threads={a.threads}", *a.set]
    variants = {"one-at-a-time": base + ["serving.max_batch=1"], "batched": base}
    if a.bf16:
        variants["batched-bf16"] = base + ["model.dtype=bfloat16"]
    clients = [int(x) for x in a.clients.split(",")]
    servers = {}
    try:
        for name, sets in variants.items():
            if all((name, c) in done for c in clients):
                continue
            servers[name] = Server(name, a.config, sets, out / f"state-{name}", out / f"server-{name}.log")
        for s in servers.values():
            s.wait()
        for c in clients:
            for name, s in servers.items():
                if (name, c) in done:
                    continue
                asyncio.run(load(s.url, 1, 1, a.max_tokens))  # warm-up
                before_rows, before_n = s.metric("seal_batch_size_sum"), s.metric("seal_batch_size_count")
                r = asyncio.run(load(s.url, c, a.per_client, a.max_tokens))
                rows_n = s.metric("seal_batch_size_sum") - before_rows
                batches = s.metric("seal_batch_size_count") - before_n
                put({"variant": name, "clients": c, **r, "mean_batch": rows_n / batches if batches else None})
    finally:
        for s in servers.values():
            s.stop()

    if ("memory", None) not in done and a.versions:
        state = out / "state-memory"
        if state.exists():
            import shutil

            shutil.rmtree(state)
        build_versions(a.config, base, state, a.versions)
        s = Server("memory", a.config, base, state, out / "server-memory.log")
        try:
            s.wait()
            rss = [s.rss_mb()]
            for _ in range(a.rounds):
                for v in range(1, a.versions + 1):
                    asyncio.run(load(s.url, 1, 1, 4, model=f"seal-student-v{v}"))
                rss.append(s.rss_mb())
        finally:
            s.stop()
        put({"variant": "memory", "clients": None, "versions": a.versions, "rss_mb": rss,
             "growth_after_first_round": rss[-1] / rss[1] - 1})
    summarize(rows, out)
    return 0


def summarize(rows: list[dict], out: Path) -> None:
    by = {(r["variant"], r["clients"]): r for r in rows if r["variant"] != "memory"}
    print(f"{'variant':<15} {'C':>3} {'req/s':>7} {'tok/s':>7} {'p50 s':>7} {'p95 s':>7} {'health p95 ms':>13} "
          f"{'batch':>6} {'x one':>6}")
    summary = {}
    for (v, c), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        one = by.get(("one-at-a-time", c))
        ratio = r["tokens_per_s"] / one["tokens_per_s"] if one and one["tokens_per_s"] else float("nan")
        summary[f"{v}@{c}"] = {**r, "throughput_vs_one": ratio}
        mb = r.get("mean_batch")
        print(f"{v:<15} {c:>3} {r['req_per_s']:>7.2f} {r['tokens_per_s']:>7.1f} {r['p50_s']:>7.2f} {r['p95_s']:>7.2f} "
              f"{1000 * r['healthz_p95_s']:>13.1f} {mb if mb is not None else float('nan'):>6.1f} {ratio:>6.2f}")
    mem = next((r for r in rows if r["variant"] == "memory"), None)
    if mem:
        summary["memory"] = mem
        print(f"memory: RSS MB at start and after each round over {mem['versions']} versions: "
              f"{[round(x) for x in mem['rss_mb']]} (growth after the first round {100 * mem['growth_after_first_round']:+.1f}%)")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
