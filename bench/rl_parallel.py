"""Teacher-RL candidates on 2 cores: one process with 2 torch threads, or a Celery group on 2 single-thread
`seal worker` processes (issue #5, "measure what helps on 2 cores").

Each setup runs the same round-0 candidates (same contexts, same samples, same seeds) from a fresh run
directory: the RL process samples each context's K self-edits and measures the untouched student's probes,
then the candidates train and answer probes either in that process (`rl.evaluate_on: local`) or on the
workers (`celery`, while the RL process samples the next context). The clock runs from the first sample to
the last candidate recorded; model loading is outside it (workers preload and answer a ping first). The
threshold is set out of reach, so no teacher is trained: only candidate throughput is measured.

    python bench/rl_parallel.py --config configs/rl-smollm2.yaml --contexts 2 --samples 4 --out results/rl-parallel

Prints a table, writes results.json (incrementally, per setup; a rerun skips finished setups) and ends with
`RESULT local_2t_s=... celery_2x1_s=... ratio=...` (seconds per candidate; ratio = local / celery, > 1 means
the workers help).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SETUPS = {"local-2t": {"driver_threads": 2, "workers": 0}, "celery-2x1": {"driver_threads": 1, "workers": 2}}


def run_setup(name: str, cfg, passages, out: Path) -> dict:
    from agent.rl_workers import CeleryCandidates
    from student.runtime import open_runtime
    from teacher.rl.rest_em import RestEM

    spec = SETUPS[name]
    cfg = cfg.with_overrides(runtime={**cfg.runtime.model_dump(), "threads": spec["driver_threads"]},
                             rl={**cfg.rl.model_dump(), "evaluate_on": "celery" if spec["workers"] else "local"})
    workers = []
    try:
        if spec["workers"]:  # a queue of its own, so no other worker takes these candidates
            queue = f"seal-bench-{uuid.uuid4().hex[:8]}"
            cfg = cfg.with_overrides(service={**cfg.service.model_dump(), "queue": queue})
            workers = start_workers(cfg, spec["workers"], out / name)
        rt = open_runtime(cfg)  # sets this process's torch threads from runtime.threads
        em = RestEM(rt, passages, out / name, log=lambda s: None, remote=CeleryCandidates)
        times = []
        t0 = time.perf_counter()
        em.round(0, on_candidate=lambda c: times.append(time.perf_counter() - t0))
        wall = times[-1]
    finally:
        for p in workers:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=60)
    rows = [json.loads(x) for x in (out / name / "candidates.jsonl").read_text().splitlines()]
    return {"setup": name, **spec, "candidates": len(rows), "wall_s": round(wall, 1),
            "s_per_candidate": round(wall / len(rows), 2),
            "train_s": round(sum(r["seconds"]["train"] for r in rows) / len(rows), 2),
            "evaluate_s": round(sum(r["seconds"]["evaluate"] for r in rows) / len(rows), 2),
            "mean_gain": round(sum(r["gain"] for r in rows) / len(rows), 4)}


def start_workers(cfg, n: int, out: Path) -> list[subprocess.Popen]:
    import yaml

    from agent.celery_app import make_celery

    out.mkdir(parents=True, exist_ok=True)
    wcfg = cfg.with_overrides(runtime={**cfg.runtime.model_dump(), "threads": 1})
    path = out / "worker.yaml"
    path.write_text(yaml.safe_dump(wcfg.model_dump()))
    seal = str(Path(sys.executable).parent / "seal")
    procs = [subprocess.Popen([seal, "worker", "-c", str(path), "--name", f"bench{i}@%h", "--loglevel", "INFO"],
                              stdout=open(out / f"worker{i}.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for i in range(n)]
    app = make_celery(wcfg)
    end = time.monotonic() + 600
    while time.monotonic() < end:
        if len(app.control.inspect(timeout=1.0).ping() or {}) >= n:
            break
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a worker exited; see {out}/worker*.log")
        time.sleep(2)
    else:
        raise SystemExit(f"workers not ready after 600 s; see {out}/worker*.log")
    return procs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/rl-smollm2.yaml"))
    ap.add_argument("--passages", default=str(ROOT.parent / "shared/data/squad/dev.json"))
    ap.add_argument("--contexts", type=int, default=2)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--setups", default=",".join(SETUPS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)

    from core.config import apply_sets
    from core.config import load_config
    from core.documents import load_passages

    cfg = apply_sets(load_config(args.config), args.set)
    cfg = cfg.with_overrides(rl={**cfg.rl.model_dump(), "rounds": 1, "contexts": args.contexts,
                                 "samples": args.samples, "threshold": 1e9})
    passages = load_passages(args.passages)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}
    for name in args.setups.split(","):
        if name not in SETUPS:
            ap.error(f"unknown setup {name!r}; choose from {', '.join(SETUPS)}")
        if name in results:
            continue
        shutil.rmtree(out / name, ignore_errors=True)  # a setup cut short restarts clean
        print(f"[{name}] {args.contexts} contexts x {args.samples} candidates ...", flush=True)
        results[name] = run_setup(name, cfg, passages, out)
        res_path.write_text(json.dumps(results, indent=2))
    print("| setup | driver threads | workers | candidates | wall s | s / candidate | train s | probes s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results.values():
        print(f"| {r['setup']} | {r['driver_threads']} | {r['workers']} | {r['candidates']} | {r['wall_s']} | "
              f"{r['s_per_candidate']} | {r['train_s']} | {r['evaluate_s']} |")
    if {"local-2t", "celery-2x1"} <= results.keys():
        a, b = results["local-2t"]["s_per_candidate"], results["celery-2x1"]["s_per_candidate"]
        print(f"RESULT local_2t_s={a} celery_2x1_s={b} ratio={a / b:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
