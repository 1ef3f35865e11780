"""The train-queue interface. The model row is the job; the queue only gets it run.

Callers create a ``queued`` model row and call ``submit(model_id)``; cancelling flips the row
to ``cancelled`` and the worker stops at its next progress report. A backend that runs jobs
elsewhere (Celery on Redis) implements the same three methods.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, select, update

from core.db import session_scope, utcnow
from core.logging import log_event
from core.registry import Registry
from core.settings import Settings
from core.tables import Model


class TrainQueue(Protocol):
    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> TrainQueue:
        """The queue ``settings.queue.backend`` names, on ``engine``'s database."""
        ...

    def start(self) -> None:
        """Begin running jobs (start workers); recover jobs a crash left behind."""

    def submit(self, model_id: str) -> None:
        """A queued model row is ready to run."""

    def stop(self) -> None:
        """Stop the workers this queue started."""


train_queues: Registry[type[TrainQueue]] = Registry("train queue")


def worker_name(pid: int, index: int = 0) -> str:
    """``host/pid/index``: the pid whose death means the worker is gone (its parent server's
    pid for embedded workers, its own for standalone ones)."""
    return f"{socket.gethostname()}/{pid}/{index}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_abandoned(model: Model, *, stale_after: float, now: datetime | None = None) -> bool:
    """True when no live worker can be running this job.

    On this host a dead pid tells at once; otherwise a heartbeat older than ``stale_after``.
    """
    host, _, rest = (model.worker or "").partition("/")
    pid = rest.partition("/")[0]
    if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
        return True
    # elsewhere, or a live pid that may be a new process (a restarted container): the heartbeat
    beat = model.heartbeat_at or model.started_at
    now = now or utcnow()
    return beat is None or (now - beat).total_seconds() > stale_after


def _still_stuck(model: Model) -> list[Any]:
    """The run that was seen stuck, not a new run of the same job: another sweep may have
    re-queued it meanwhile, and a worker claimed it again (several sweep at once with Celery)."""
    return [
        Model.id == model.id,
        Model.status == "running",
        Model.worker.is_not_distinct_from(model.worker),
        Model.attempts == model.attempts,
    ]


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def recover_interrupted(
    engine: Engine, *, max_attempts: int, worker: str | None = None, stale_after: float = 60.0
) -> int:
    """Jobs left ``running`` by a dead worker: re-queued, or failed after ``max_attempts``.

    ``worker`` recovers that worker's jobs (its process was seen to die); without it, every
    running job that ``is_abandoned``. Returns how many jobs were recovered.
    """
    with session_scope(engine) as session:
        query = select(Model).where(Model.status == "running")
        if worker is not None:
            query = query.where(Model.worker == worker)
        stuck = [
            m
            for m in session.scalars(query)
            if worker is not None or is_abandoned(m, stale_after=stale_after)
        ]
        for model in stuck:
            if model.attempts < max_attempts:
                session.execute(
                    update(Model)
                    .where(*_still_stuck(model))
                    .values(status="queued", progress=0.0, worker=None)
                )
                log_event("job.requeued", model=model.id, attempts=model.attempts)
            else:
                session.execute(
                    update(Model)
                    .where(*_still_stuck(model))
                    .values(
                        status="failed",
                        finished_at=utcnow(),
                        failure_message=(
                            f"training was interrupted {_times(model.attempts)} (the worker "
                            "stopped or the server restarted); check the server log, then train "
                            "again"
                        ),
                    )
                )
                log_event("job.abandoned", model=model.id, attempts=model.attempts)
        return len(stuck)
