"""The distributed transport: Celery on Redis, configured so that no accepted job is lost or done twice.

- acks_late + reject_on_worker_lost: a task is acknowledged only after it ran; a worker killed mid-job
  leaves it unacknowledged, and Redis hands it out again after the visibility timeout.
- prefetch 1: a worker holds at most the job it is running (jobs are long, and one per model).
- the visibility timeout must exceed the longest job, or a job still running would be handed out again
  (which would still be safe: the update lock and the learner's idempotency make the second run a no-op).
"""
from __future__ import annotations

import contextlib

from core.config import SealConfig
from core.extras import require

Celery = require("celery", "the distributed mode").Celery

TASK = "seal.run_job"
RL_CANDIDATE = "seal.rl_candidate"  # one teacher-RL candidate (teacher/rl/candidates.py)


def make_celery(cfg: SealConfig, preload: bool = False) -> Celery:
    """preload: load the model now (a worker about to serve), so the first task does not pay for it and a
    worker answers pings only once it can work."""
    s = cfg.service
    app = Celery("seal", broker=s.broker_url, backend=s.result_backend)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=s.queue,
        broker_transport_options={"visibility_timeout": s.visibility_timeout_s,
                                  "unacked_restore_interval": s.restore_interval_s,
                                  "unacked_restore_throttle": 1},
        result_backend_transport_options={"visibility_timeout": s.visibility_timeout_s},
        task_ignore_result=True,  # job state lives in the agent's database, not in the result backend
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    state: dict = {}

    def runtime():
        from student.runtime import open_runtime

        if "rt" not in state:  # the model is loaded once per worker process, on its first task
            state["rt"] = open_runtime(cfg)
        return state["rt"]

    if preload:
        runtime()

    @app.task(name=TASK, acks_late=True, reject_on_worker_lost=True, shared=False)
    def run_job_task(job_id: str) -> str | None:
        from agent.worker import open_worker, run_job

        if "ctx" not in state:
            state["ctx"] = open_worker(cfg, runtime())
        job = run_job(state["ctx"], job_id)
        return job.state if job else None

    @app.task(name=RL_CANDIDATE, acks_late=True, reject_on_worker_lost=True, ignore_result=False, shared=False)
    def rl_candidate_task(job: dict) -> dict:
        """One teacher-RL candidate (teacher/rl/candidates.py); the driver waits on the group's results."""
        from teacher.rl.candidates import CandidateJob, candidate_monitor, evaluate_candidate

        rt = runtime()
        lock = state["ctx"].lock if "ctx" in state else contextlib.nullcontext()  # the model also serves jobs
        with lock:
            if "general" not in state:
                state["general"] = candidate_monitor(cfg, rt.student)
            return evaluate_candidate(rt.student, cfg, CandidateJob.from_json(job), state["general"])

    return app
