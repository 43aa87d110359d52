"""How a job id reaches a worker: an in-process thread (embedded default) or Celery on Redis."""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Protocol

from core.config import SealConfig

log = logging.getLogger("seal.transport")


class TransportError(RuntimeError):
    """The job could not be handed to a worker (e.g. the broker is down)."""


class Transport(Protocol):
    def start(self) -> None: ...
    def submit(self, job_id: str) -> None: ...
    def depth(self) -> int | None: ...
    def stop(self) -> None: ...


class EmbeddedTransport:
    """One worker thread in this process. At start it re-enqueues every unfinished job from the database, so
    a service killed mid-job resumes it on restart."""

    def __init__(self, make_context: Callable[[], "object"], unfinished: Callable[[], list[str]]):
        self._make_context, self._unfinished = make_context, unfinished
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.ctx = None
        self.ready = threading.Event()

    def start(self) -> None:
        for job_id in self._unfinished():
            self._q.put(job_id)
        self._thread = threading.Thread(target=self._loop, name="seal-embedded-worker", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from agent.worker import run_job

        self.ctx = self._make_context()  # loads the model in the background: the API is up meanwhile
        self.ready.set()
        while (job_id := self._q.get()) is not None:
            try:
                run_job(self.ctx, job_id)
            except Exception:  # never let one job kill the worker thread
                log.exception("job %s", job_id)
            finally:
                self._q.task_done()

    def submit(self, job_id: str) -> None:
        self._q.put(job_id)

    def depth(self) -> int | None:
        return self._q.qsize()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the queue is drained (tests, `seal ingest`)."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while self._q.unfinished_tasks:
            if end is not None and time.monotonic() > end:
                raise TimeoutError("embedded worker did not drain its queue in time")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=5)


class CeleryTransport:
    def __init__(self, cfg: SealConfig):
        from agent.celery_app import make_celery

        self.cfg = cfg
        self.app = make_celery(cfg)

    def start(self) -> None:
        pass

    def submit(self, job_id: str) -> None:
        from agent.celery_app import TASK

        try:
            self.app.send_task(TASK, args=[job_id], queue=self.cfg.service.queue,
                               retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2})
        except Exception as e:
            raise TransportError(f"could not queue job {job_id} on {self.cfg.service.broker_url}: {e}") from e

    def depth(self) -> int | None:
        try:
            with self.app.connection_for_write() as conn:
                return conn.default_channel.client.llen(self.cfg.service.queue)
        except Exception:
            return None

    def stop(self) -> None:
        pass
