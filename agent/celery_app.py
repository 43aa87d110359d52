"""The distributed transport: Celery on Redis, configured so that no accepted job is lost or done twice.

- acks_late + reject_on_worker_lost: a task is acknowledged only after it ran; a worker killed mid-job
  leaves it unacknowledged, and Redis hands it out again after the visibility timeout.
- prefetch 1: a worker holds at most the job it is running (jobs are long, and one per model).
- the visibility timeout must exceed the longest job, or a job still running would be handed out again
  (which would still be safe: the update lock and the learner's idempotency make the second run a no-op).
"""
from __future__ import annotations

from celery import Celery

from agent.config import SealConfig

TASK = "seal.run_job"


def make_celery(cfg: SealConfig) -> Celery:
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

    @app.task(name=TASK, acks_late=True, reject_on_worker_lost=True)
    def run_job_task(job_id: str) -> str | None:
        from agent.worker import open_worker, run_job

        if "ctx" not in state:  # the model is loaded once per worker process, on its first job
            state["ctx"] = open_worker(cfg)
        job = run_job(state["ctx"], job_id)
        return job.state if job else None

    return app
