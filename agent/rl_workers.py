"""Teacher-RL candidates evaluated on Celery workers (`rl.evaluate_on: celery`): the dispatcher
`teacher.rl.rest_em.RestEM` is handed by its caller, so the RL loop itself never imports the queue."""
from __future__ import annotations

from core.config import SealConfig
from core.extras import require
from teacher.rl.candidates import CandidateJob


class CeleryCandidates:
    """The K candidates of a context as one Celery group: each worker process holds one student, so K
    candidates train on up to K cores while the driver samples the next context."""

    def __init__(self, cfg: SealConfig):
        from agent.celery_app import RL_CANDIDATE, make_celery

        self.app, self.task, self.timeout = make_celery(cfg), RL_CANDIDATE, cfg.rl.remote_timeout_s

    def submit(self, jobs: list[CandidateJob]):
        group = require("celery", "RL candidates on workers").group

        return group(self.app.signature(self.task, args=(j.to_json(),)) for j in jobs).apply_async()

    def collect(self, handle) -> list[dict]:
        try:
            return handle.get(timeout=self.timeout, propagate=True)
        finally:
            handle.forget()
