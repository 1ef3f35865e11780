"""The ``celery`` train queue: jobs run on Celery workers (``parley worker``) over Redis.

``PARLEY_QUEUE__BACKEND=celery`` with ``PARLEY_REDIS__URL``. The model row stays the job of
record (status, progress, queue position, cancel, metrics); a message only names the job
(``training.celery_app``). A gateway with this queue trains nothing itself.

Routing: a job whose backend says ``prefers_gpu`` (fine-tuning, detection) gets a message on
``cpu`` after ``PARLEY_QUEUE__GPU_WAIT_S`` (0: at once), so a deployment without GPU workers
still runs it, and, while some worker consumes ``gpu`` (workers register their queues in
Redis), another on ``gpu`` at once; whichever worker claims it first runs it, and the other
message finds it taken and is dropped. Without a ``gpu`` worker nothing is sent to ``gpu``, so
no message waits there forever. Other jobs go to ``cpu``.

Order: tenants take turns (a busy tenant's message comes back later and others pass), and a
tenant's jobs start oldest first (a message claims its tenant's oldest queued job).

Redis down when a job is submitted: the request still succeeds (``202``, the job ``queued`` in
the database) and the job runs once Redis is back: every gateway and worker sweeps every
``PARLEY_QUEUE__SWEEP_INTERVAL_S`` and sends the queued jobs that have no message (logged
``queue.submit_deferred`` and counted ``queue.submit_deferred`` meanwhile). The same sweep sends
jobs queued without ``submit`` (the demo's) and re-queues the jobs of workers that died
(``recover_interrupted``: at once for a dead pid on the same host, after
``PARLEY_QUEUE__STALE_AFTER`` seconds without a heartbeat elsewhere).
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select

from core.db import session_scope
from core.errors import Unavailable
from core.logging import log_event
from core.metrics import counters
from core.settings import Settings
from core.tables import Model
from training.celery_app import Dispatcher, Sweeper, make_celery
from training.queue.base import train_queues

__all__ = ["CeleryQueue"]


@train_queues.register("celery")
class CeleryQueue:
    """Sends jobs to Celery workers; sweeps for jobs that have no message (see above)."""

    def __init__(self, *, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.dispatcher = Dispatcher(settings, make_celery(settings))
        self.sweeper = Sweeper(engine, self.dispatcher)

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> CeleryQueue:
        return cls(settings=settings, engine=engine)

    def start(self) -> None:
        """No local workers; the sweep starts (and re-queues what a crash left running)."""
        self.sweeper.start()

    def submit(self, model_id: str) -> None:
        with session_scope(self.engine) as session:
            backend = session.scalar(select(Model.backend).where(Model.id == model_id))
        if backend is None:  # deleted meanwhile
            return
        try:
            self.dispatcher.send(model_id, backend)
        except Unavailable as e:
            counters.incr("queue.submit_deferred")
            log_event(
                "queue.submit_deferred", level=logging.WARNING, model=model_id, error=e.message
            )

    def stop(self) -> None:
        self.sweeper.stop()
