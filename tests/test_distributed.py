"""The distributed mode against the machine's real Redis: `seal worker` processes run jobs from Celery, a
redelivered job does its work once, and a worker killed with SIGKILL mid-training loses nothing."""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from core.documents import passage_from_dict

SEAL = str(Path(sys.executable).parent / "seal")
DOCS = [passage_from_dict({"title": f"Doc {i}", "context": c, "questions": [{"question": q, "answer": a}]})
        for i, (c, q, a) in enumerate([
            ("The Zorblax river flows into the Quimby sea near Frell.", "Where does the Zorblax flow?", "Quimby sea"),
            ("Anna Berg painted the northern harbour in winter.", "Who painted the harbour?", "Anna Berg"),
        ])]


def _redis_or_skip(url):
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as e:  # noqa: BLE001
        from tests.conftest import missing_service

        missing_service(f"no Redis at {url}: {e}")


@pytest.fixture()
def dist(tiny_cfg, tmp_path):
    """A celery-mode config (own queue on Redis db 15) and a way to start workers with it."""
    broker = os.environ.get("SEAL_TEST_REDIS", "redis://127.0.0.1:6379/15")
    _redis_or_skip(broker)
    procs = []

    def make(**train):
        cfg = tiny_cfg.with_overrides(
            continual={**tiny_cfg.continual.model_dump(), "train_on": "passage", "state_dir": str(tmp_path / "state")},
            service={"mode": "celery", "broker_url": broker, "result_backend": broker,
                     "queue": f"seal-test-{uuid.uuid4().hex[:8]}", "visibility_timeout_s": 5,
                     "restore_interval_s": 1},
            runtime={"threads": 1}, train={**tiny_cfg.train.model_dump(), **train})
        path = tmp_path / "celery.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump()))
        return cfg, path

    def start(path, name):
        log = open(path.parent / f"{name}.log", "w")
        p = subprocess.Popen([SEAL, "worker", "--config", str(path), "--name", f"{name}@test", "--loglevel",
                              "INFO"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    yield make, start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _until(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _log(path, name):
    f = path.parent / f"{name}.log"
    return f.read_text()[-3000:] if f.is_file() else ""


def test_celery_workers_run_jobs_and_a_redelivery_does_nothing(dist):
    from agent.continual import memory_target
    from memory.jobs import JobStore
    from agent.transport import CeleryTransport
    from student.stack import StackStore

    make, start = dist
    cfg, path = make()
    jobs, transport = JobStore(memory_target(cfg)), CeleryTransport(cfg)
    start(path, "w1")
    ids = []
    for d in DOCS:
        job, _ = jobs.submit(d)
        transport.submit(job.id)
        ids.append(job.id)
    done = _until(lambda: all(jobs.get(i).done for i in ids), 120, "two jobs; worker log:\n" + _log(path, "w1"))
    assert done and [jobs.get(i).state for i in ids] == ["promoted", "promoted"], _log(path, "w1")
    stack = StackStore(Path(cfg.continual.state_dir) / "stack")
    assert stack.versions() == [1, 2] and stack.aliases()["prod"] == 2
    transport.submit(ids[0])  # the same task delivered again
    log = path.parent / "w1.log"
    _until(lambda: log.read_text().count("succeeded") >= 3, 60, "the duplicate delivery to be consumed")
    time.sleep(0.5)
    assert stack.versions() == [1, 2] and jobs.get(ids[0]).attempts == 1  # nothing re-ran


def test_a_worker_killed_mid_training_loses_nothing_and_duplicates_nothing(dist):
    from agent.continual import memory_target
    from memory.jobs import JobStore
    from agent.transport import CeleryTransport
    from student.stack import StackStore

    make, start = dist
    cfg, path = make(epochs=400)  # long enough training to be killed in the middle of it
    jobs, transport = JobStore(memory_target(cfg)), CeleryTransport(cfg)
    w1 = start(path, "w1")
    job, _ = jobs.submit(DOCS[0])
    transport.submit(job.id)
    _until(lambda: jobs.get(job.id).state == "training", 120, "training to start:\n" + _log(path, "w1"))
    time.sleep(1.0)
    os.killpg(w1.pid, signal.SIGKILL)
    w1.wait()
    assert jobs.get(job.id).state == "training"  # died mid-job: nothing finished it
    stack = StackStore(Path(cfg.continual.state_dir) / "stack")
    assert stack.versions() == []
    start(path, "w2")
    final = _until(lambda: (j := jobs.get(job.id, events=True)).done and j, 180,
                   "the redelivered job:\n" + _log(path, "w2"))
    assert final.state == "promoted" and final.attempts == 2, final.to_json(events=True)
    assert any("restarted (attempt 2)" in e["message"] for e in final.events)
    assert stack.versions() == [1] and stack.aliases()["prod"] == 1
    folders = sorted(p.name for p in (stack.root / "adapters").iterdir() if not p.name.startswith("."))
    assert folders == ["a00001"]  # one adapter for the one document


def test_twenty_documents_through_the_api_and_two_workers_and_an_api_restart(dist, tmp_path):
    """The whole distributed path: `seal serve --mode celery` + 2 `seal worker` processes on real Redis."""
    import socket

    import httpx

    from student.stack import StackStore

    make, start = dist
    cfg, path = make()
    key = "integration-write-key"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SEAL_API_KEYS": f"{key}:write"}
    apis = []

    def start_api():
        log = open(tmp_path / f"api{len(apis)}.log", "w")
        p = subprocess.Popen([SEAL, "serve", "--config", str(path), "--port", str(port)], stdout=log,
                             stderr=subprocess.STDOUT, env=env, start_new_session=True)
        apis.append(p)
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

        def up():
            try:
                return http.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        _until(up, 120, "the API")
        return http

    try:
        http = start_api()
        start(path, "w1")
        start(path, "w2")
        docs = [{"title": f"Fact {i}", "context": f"The station number {i} of the Quarn line opens at dawn "
                                                  f"and is painted colour {i * 7}.",
                 "questions": [{"question": f"What colour is station {i} painted?", "answer": str(i * 7)}]}
                for i in range(20)]
        r = http.post("/v1/documents", json={"documents": docs[:10]})
        r2 = http.post("/v1/documents", json={"documents": docs[10:]})
        assert r.status_code == r2.status_code == 202
        ids = [j["id"] for j in r.json()["jobs"] + r2.json()["jobs"]]
        assert len(set(ids)) == 20

        def all_done():
            jobs = http.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
            return len(jobs) == 20 and all(j["state"] in ("promoted", "rejected", "failed", "cancelled")
                                           for j in jobs) and jobs

        jobs = _until(all_done, 600, "20 jobs: " + _log(path, "w1")[-1500:])
        assert {j["state"] for j in jobs} == {"promoted"}, [(j["title"], j["state"], j["error"]) for j in jobs]
        stack = StackStore(Path(cfg.continual.state_dir) / "stack")
        per_doc: dict[str, set] = {}
        for v in stack.versions():
            for a in stack.manifest(v).adapters:
                if a.kind == "lora":
                    for d in a.doc_ids:
                        per_doc.setdefault(d, set()).add(a.id)
        promoted_docs = {j["doc_id"] for j in jobs}
        assert set(per_doc) == promoted_docs and all(len(x) == 1 for x in per_doc.values()), per_doc
        prod = stack.resolve("prod")
        assert sorted(prod.doc_ids) == sorted(promoted_docs)  # every document, once, in prod
        worked = {"w1": _log(path, "w1").count("succeeded"), "w2": _log(path, "w2").count("succeeded")}
        before = (http.get("/v1/adapters").json(), http.get("/v1/forgetting").json())
        # restart the API process: everything is in the database and the stack folder
        os.killpg(apis[-1].pid, signal.SIGTERM)
        apis[-1].wait(timeout=30)
        http = start_api()
        after = (http.get("/v1/adapters").json(), http.get("/v1/forgetting").json())
        assert after == before
        assert sorted(j["id"] for j in http.get("/v1/jobs", params={"limit": 100}).json()["jobs"]) == sorted(ids)
        m = http.get("/metrics").text
        assert 'seal_jobs{state="promoted"} 20.0' in m and "seal_queue_depth 0.0" in m
        assert sum(worked.values()) >= 1
    finally:
        for p in apis:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_rl_candidates_evaluated_by_a_celery_group_match_the_local_run(dist, runtime, tmp_path):
    """`rl.evaluate_on: celery`: each context's K candidates go to `seal worker` processes as one group; the
    rows are the ones the RL process would have measured itself, each recorded once; a worker started with
    other inner-loop settings refuses the job with a reason instead of measuring something else."""
    import json as _json

    from agent.rl_workers import CeleryCandidates
    from teacher.rl.rest_em import RestEM

    make, start = dist
    cfg, path = make()
    rl = {"rounds": 1, "contexts": 2, "samples": 2, "threshold": -1.0, "selection": "threshold",
          "train": {"epochs": 1, "rank": 4, "alpha": 8}, "remote_timeout_s": 240}
    teacher = {**cfg.teacher.model_dump(), "max_new_tokens": 16, "grounding": {"enabled": False}}
    cfg = cfg.with_overrides(rl=rl, teacher=teacher)
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    local = RestEM(type(runtime)(cfg, runtime.student, runtime.model_name), DOCS, tmp_path / "local").run()
    start(path, "w1")
    start(path, "w2")
    remote_cfg = cfg.with_overrides(rl={**rl, "evaluate_on": "celery"})
    remote = RestEM(type(runtime)(remote_cfg, runtime.student, runtime.model_name), DOCS, tmp_path / "remote",
                    remote=CeleryCandidates).run()
    rows = {n: [_json.loads(x) for x in (tmp_path / n / "candidates.jsonl").read_text().splitlines()]
            for n in ("local", "remote")}
    key = lambda r: (r["doc_id"], r["k"])  # noqa: E731
    assert sorted(map(key, rows["remote"])) == sorted(map(key, rows["local"])) and len(rows["remote"]) == 4
    by = {key(r): r for r in rows["local"]}
    for r in rows["remote"]:
        assert (r["raw"], r["units"], r["before"]) == (by[key(r)]["raw"], by[key(r)]["units"], by[key(r)]["before"])
        assert r["seconds"]["train"] > 0
    assert remote[0]["candidates"] == local[0]["candidates"] == 4
    logs = _log(path, "w1") + _log(path, "w2")
    assert logs.count("seal.rl_candidate") >= 4 and "succeeded" in logs

    # a driver whose settings differ from the workers' (here: the seed) gets a refusal, not a measurement
    bad = RestEM(type(runtime)(remote_cfg.with_overrides(seed=cfg.seed + 1), runtime.student, runtime.model_name),
                 DOCS, tmp_path / "bad", remote=CeleryCandidates)
    with pytest.raises(Exception, match="start the workers with the RL run's config"):
        bad.run()
