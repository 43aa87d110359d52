"""`seal serve / ingest / status / worker` as real processes: exit codes, the HTTP path end to end, and an
embedded service killed mid-job that finishes the job after a restart."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ROOT

SEAL = str(Path(sys.executable).parent / "seal")
KEY = "test-write-key-123"


def seal(*args, env=None, timeout=300):
    return subprocess.run([SEAL, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture()
def cfg_file(tiny_cfg, tmp_path):
    def make(**train):
        cfg = tiny_cfg.with_overrides(
            continual={**tiny_cfg.continual.model_dump(), "train_on": "passage", "state_dir": str(tmp_path / "state")},
            runtime={"threads": 1}, train={**tiny_cfg.train.model_dump(), **train},
            runs_dir=str(tmp_path / "runs"))
        p = tmp_path / "svc.yaml"
        p.write_text(yaml.safe_dump(cfg.model_dump()))
        return p

    return make


def test_bad_input_exits_2_with_a_message(cfg_file, tmp_path):
    c = cfg_file()
    r = seal("ingest", tmp_path / "missing.json", "-c", c)
    assert r.returncode == 2 and "no such file" in r.stderr
    r = seal("status", "-c", c)
    assert r.returncode == 2 and "no agent state" in r.stderr
    r = seal("serve", "--mode", "bogus", "-c", c)
    assert r.returncode == 2 and "--mode" in r.stderr
    r = seal("serve", "-c", c, env={"SEAL_API_KEYS": "short:write"})
    assert r.returncode == 2 and "at least 8" in r.stderr
    r = seal("worker", "-c", c, "--set", "service.broker_url=redis://127.0.0.1:1/0")
    assert r.returncode == 2 and "cannot reach the broker" in r.stderr
    r = seal("ingest", ROOT / "examples/passages.json", "--url", "http://127.0.0.1:1", "-c", c)
    assert r.returncode == 2 and "cannot reach" in r.stderr
    r = seal("rl", "--passages", ROOT / "examples/passages.json", "-c", c, "--out", tmp_path / "rl", "--set",
             "rl.evaluate_on=celery", "--set", "service.broker_url=redis://127.0.0.1:1/0")
    assert r.returncode == 2 and "cannot reach the broker" in r.stderr and not (tmp_path / "rl").exists()
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(c, port, log):
    return subprocess.Popen([SEAL, "serve", "-c", str(c), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "SEAL_API_KEYS": f"{KEY}:write"}, start_new_session=True)


def _until(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = pred()
        except httpx.HTTPError:
            v = None
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def test_serve_ingest_status_and_a_kill_mid_job(cfg_file, tmp_path):
    c = cfg_file(epochs=1000)  # training long enough (seconds, even on a fast machine) to be killed in the middle of it
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"})
    log = open(tmp_path / "serve.log", "w")
    procs = [_start(c, port, log)]
    try:
        _until(lambda: http.get("/healthz").status_code == 200, 120, "the service")
        r = seal("ingest", ROOT / "examples/passages.json", "--limit", "1", "--url", url, "--api-key", KEY,
                 "--no-wait", "-c", c)
        assert r.returncode == 0, r.stderr
        job_id = r.stdout.split()[0]
        seen = []

        def training():
            j = http.get(f"/v1/jobs/{job_id}").json()
            seen.append(j["state"])
            assert j["state"] not in ("promoted", "rejected", "failed"), f"finished before the kill: {j}"
            return j["state"] == "training"

        _until(training, 180, lambda: f"training (states seen: {sorted(set(seen))})")
        os.killpg(procs[0].pid, signal.SIGKILL)  # the whole service dies mid-training
        procs[0].wait()
        procs.append(_start(c, port, log))
        final = _until(lambda: (j := http.get(f"/v1/jobs/{job_id}").json())["state"] in ("promoted", "failed")
                       and j, 180, "the resumed job:\n" + (tmp_path / "serve.log").read_text()[-2000:])
        assert final["state"] == "promoted" and final["attempts"] == 2
        assert [v["version"] for v in http.get("/v1/adapters").json()["versions"]] == [1]
        r = seal("ingest", ROOT / "examples/passages.json", "--limit", "2", "--url", url, "--api-key", KEY, "-c", c)
        assert r.returncode == 0 and r.stdout.count("promoted  student-v") == 1, r.stdout + r.stderr
        assert r.stdout.count("duplicate") == 1 and "already learned in student-v1" in r.stdout
        r = seal("status", "--url", url, "--api-key", KEY, "-c", c)
        assert r.returncode == 0 and "promoted 2" in r.stdout and "duplicate 1" in r.stdout
        assert "prod -> student-v2" in r.stdout
        r = seal("status", "--url", url, "--api-key", "wrong-key-000", "-c", c)
        assert r.returncode == 2 and "401" in r.stderr
        lines = [json.loads(x.split("seal.jobs: ", 1)[1]) for x in (tmp_path / "serve.log").read_text().splitlines()
                 if "seal.jobs: " in x]  # one structured line per job transition
        mine = [x["state"] for x in lines if x["job"] == job_id]
        assert mine[0] == "queued" and "training" in mine and mine[-1] == "promoted", mine
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_first_minute_mistakes_are_one_line_and_exit_2(cfg_file, tmp_path):
    c = cfg_file()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = seal("serve", "-c", c, "--port", port, "--host", "127.0.0.1")
    assert r.returncode == 2 and f"127.0.0.1:{port}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists()  # nothing written: no state folder, no key file
    r = seal("status", "-c", c, "--set", "runtime.threads=abc")
    assert r.returncode == 2 and "runtime.threads" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = seal("status", "--url", "127.0.0.1:8000", "-c", c)
    assert r.returncode == 2 and "http://127.0.0.1:8000" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = seal("--version")
    assert r.returncode == 0 and r.stdout.startswith("seal-agent ")
    r = seal("config", "show", "train", "-c", c, "--set", "train.rank=3")
    assert r.returncode == 0 and "rank: 3" in r.stdout and "continual:" not in r.stdout


def test_an_openai_base_url_and_the_servers_key_variable_work_for_the_cli(cfg_file, tmp_path):
    c = cfg_file()
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = _start(c, port, log)
    try:
        _until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 120, "the service")
        # what OpenAI users paste (.../v1), and only the server's variable set
        r = seal("status", "--url", f"http://127.0.0.1:{port}/v1", "-c", c, env={"SEAL_API_KEYS": f"{KEY}:write"})
        assert r.returncode == 0, r.stderr
        r = seal("status", "--url", f"http://127.0.0.1:{port}", "--api-key", "wrong-key-000", "-c", c)
        assert r.returncode == 2 and "401" in r.stderr and "--api-key" in r.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
