"""The job lifecycle in the database (SQLite and the machine's PostgreSQL)."""
import pytest

from memory.jobs import JobCancelled, JobError, JobStore
from core.documents import passage_from_dict

DOC = passage_from_dict({"title": "T", "context": "Some text.", "questions": [{"question": "q?", "answer": "a"}]})


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    target = tmp_path / "j.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = JobStore(target)
    yield s
    s.close()


def test_lifecycle_events_and_idempotency_keys(store):
    job, created = store.submit(DOC, "key-1")
    again, created2 = store.submit(DOC, "key-1")
    assert created and not created2 and again.id == job.id and job.state == "queued"
    other, _ = store.submit(DOC)  # no key: a second job for the same document is allowed
    assert other.id != job.id
    claimed = store.claim(job.id, max_attempts=3)
    assert claimed.attempts == 1 and claimed.passage == DOC
    for s in ("writing_probes", "self_editing", "training", "evaluating"):
        store.stage(job.id, s)
    store.finish(job.id, "promoted", result={"version": 1, "seconds": {"train": 2.5}})
    j = store.get(job.id, events=True)
    assert j.state == "promoted" and j.result["version"] == 1 and j.finished_at
    assert [e["state"] for e in j.events] == ["queued", "queued", "writing_probes", "self_editing", "training",
                                              "evaluating", "promoted"]
    assert store.claim(job.id, 3) is None  # a finished job delivered again does nothing
    assert store.counts()["promoted"] == 1 and store.unfinished() == [other.id]
    assert store.stage_seconds() == {"train": [2.5]}
    with pytest.raises(JobError):
        store.get("job_missing")


def test_cancel_queued_running_and_finished(store):
    queued, _ = store.submit(DOC)
    assert store.cancel(queued.id).state == "cancelled"
    assert store.claim(queued.id, 3) is None
    running, _ = store.submit(DOC)
    store.claim(running.id, 3)
    store.stage(running.id, "training")
    j = store.cancel(running.id)
    assert j.state == "training" and j.cancel_requested
    with pytest.raises(JobCancelled):
        store.stage(running.id, "evaluating")
    store.finish(running.id, "cancelled")
    with pytest.raises(JobError, match="already cancelled"):
        store.cancel(running.id)


def test_a_job_whose_worker_keeps_dying_is_failed(store):
    job, _ = store.submit(DOC)
    for attempt in (1, 2):
        assert store.claim(job.id, max_attempts=2).attempts == attempt
        store.stage(job.id, "training")  # ... and the worker dies here
    assert store.claim(job.id, max_attempts=2) is None
    j = store.get(job.id)
    assert j.state == "failed" and "worker lost 2 times" in j.error


def test_a_running_job_cancelled_stops_before_training_and_leaves_no_version(runtime, tiny_cfg, tmp_path):
    from agent.worker import open_worker, run_job

    cfg = tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(), "train_on": "passage",
                                             "state_dir": str(tmp_path / "state")})
    ctx = open_worker(cfg, runtime)
    real_stage = ctx.jobs.stage

    def stage(job_id, state, message=""):
        if state == "training":  # the user's cancel arrives while the self-edit is being written
            ctx.jobs.cancel(job_id)
        return real_stage(job_id, state, message)

    ctx.jobs.stage = stage
    job, _ = ctx.jobs.submit(DOC)
    done = run_job(ctx, job.id)
    assert done.state == "cancelled" and ctx.learner.stack.versions() == []
    ok, _ = ctx.jobs.submit(passage_from_dict({"title": "U", "context": "Other text here."}))
    ctx.jobs.stage = real_stage
    assert run_job(ctx, ok.id).state == "promoted"  # the worker carries on


OTHER = passage_from_dict({"title": "U", "context": "Other text.", "questions": [{"question": "q?", "answer": "b"}]})


def test_concurrent_requests_with_one_key_make_one_job(store):
    """Select-then-insert raced: on PostgreSQL the loser got a unique-key error (a 500). Now it reads the winner's."""
    import threading

    barrier = threading.Barrier(8)
    got, errors = [], []

    def go():
        try:
            barrier.wait()
            got.append(store.submit(DOC, "race-key"))
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({j.id for j, _ in got}) == 1 and sum(created for _, created in got) == 1


def test_a_key_is_tied_to_its_document(store):
    from memory.jobs import IdempotencyConflict

    store.submit(DOC, "tied-key")
    with pytest.raises(IdempotencyConflict, match="another document"):
        store.submit(OTHER, "tied-key")


def test_a_job_the_queue_refused_is_queued_again_by_a_retry_with_its_key(store):
    from memory.jobs import ENQUEUE_FAILED

    job, _ = store.submit(DOC, "retry-key")
    store.finish(job.id, "failed", error=f"{ENQUEUE_FAILED} broker down")
    again, created = store.submit(DOC, "retry-key")
    assert created and again.id == job.id and again.state == "queued" and again.error is None
    store.finish(job.id, "failed", error="ValueError: a real failure")
    third, created = store.submit(DOC, "retry-key")
    assert not created and third.state == "failed"  # a job that ran and failed stays failed


def test_a_final_state_is_never_overwritten(store):
    """A duplicate delivery that fails after the first run promoted must not turn the job into failed (and the
    first run's promote must not overwrite a recorded failure either)."""
    job, _ = store.submit(DOC)
    store.claim(job.id, 3)
    assert store.finish(job.id, "promoted", result={"version": 3})
    assert not store.finish(job.id, "failed", error="IntegrityError: duplicate key")
    j = store.get(job.id, events=True)
    assert j.state == "promoted" and j.result == {"version": 3} and j.error is None
    assert "kept promoted" in j.events[-1]["message"]


def test_batch_keys_cannot_collide_with_a_single_key(tiny_cfg, tmp_path):
    from agent.service import Agent

    cfg = tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(), "state_dir": str(tmp_path / "s")})
    agent = Agent.open(cfg, start=False)
    try:
        batch = agent.submit([DOC, OTHER], "k")
        single = agent.submit([DOC], "k:0")  # was the batch's first key: it returned the batch's job silently
        assert single[0].created and single[0].job.id != batch[0].job.id
        with pytest.raises(ValueError, match="batch"):
            agent.submit([DOC], "k:0/2")
    finally:
        agent.close()
