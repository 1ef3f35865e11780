"""The train-queue interface. The model row is the job; the queue only gets it run.

Callers create a ``queued`` model row and call ``submit(model_id)``; cancelling flips the row
to ``cancelled`` and the worker stops at its next progress report. A backend that runs jobs
elsewhere (Celery on Redis) implements the same three methods.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine, select, update

from core.db import session_scope, utcnow
from core.logging import log_event
from core.registry import Registry
from core.tables import Model


class TrainQueue(Protocol):
    def start(self) -> None:
        """Begin running jobs (start workers); recover jobs a crash left behind."""

    def submit(self, model_id: str) -> None:
        """A queued model row is ready to run."""

    def stop(self) -> None:
        """Stop the workers this queue started."""


train_queues: Registry[type[TrainQueue]] = Registry("train queue")


def recover_interrupted(engine: Engine, *, max_attempts: int, worker: str | None = None) -> int:
    """Jobs left ``running`` by a dead worker: re-queued, or failed after ``max_attempts``.

    ``worker`` limits recovery to one worker's jobs; None recovers every running job (at the
    start of an embedded server, when no worker can be alive).
    """
    with session_scope(engine) as session:
        query = select(Model).where(Model.status == "running")
        if worker is not None:
            query = query.where(Model.worker == worker)
        stuck = list(session.scalars(query))
        for model in stuck:
            if model.attempts < max_attempts:
                session.execute(
                    update(Model)
                    .where(Model.id == model.id, Model.status == "running")
                    .values(status="queued", progress=0.0, worker=None)
                )
                log_event("job.requeued", model=model.id, attempts=model.attempts)
            else:
                session.execute(
                    update(Model)
                    .where(Model.id == model.id, Model.status == "running")
                    .values(
                        status="failed",
                        finished_at=utcnow(),
                        failure_message=(
                            f"training was interrupted {model.attempts} times (the worker stopped "
                            "or the server restarted); check the server log, then train again"
                        ),
                    )
                )
                log_event("job.abandoned", model=model.id, attempts=model.attempts)
        return len(stuck)
