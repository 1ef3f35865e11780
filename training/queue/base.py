"""The train-queue interface. The model row is the job; the queue only gets it run.

Callers create a ``queued`` model row and call ``submit(model_id)``; cancelling flips the row
to ``cancelled`` and the worker stops at its next progress report. A backend that runs jobs
elsewhere (Celery on Redis) implements the same three methods.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from functools import lru_cache
from pathlib import Path
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


# The exit code of a local train worker that exits by itself, idle, to release PyTorch (its
# server starts it again): EX_TEMPFAIL, unlike a stop (0) or a crash.
RECYCLED_EXIT = 75


def worker_name(pid: int, index: int = 0) -> str:
    """``host/pid/index/namespace``: the pid whose death means the worker is gone (its parent
    server's pid for embedded workers, its own for standalone ones), and the pid namespace it
    is a pid of (``pid_namespace``; left out where there is none to tell)."""
    name = f"{socket.gethostname()}/{pid}/{index}"
    namespace = pid_namespace()
    return f"{name}/{namespace}" if namespace else name


@lru_cache(maxsize=1)
def pid_namespace() -> str | None:
    """This process's pid namespace: the boot's id and the namespace's inode (Linux). Two
    containers sharing a host name (``--network host``, Kubernetes ``hostNetwork``) have
    different ones, so neither reads the other's pids. None where /proc cannot tell."""
    try:
        inode = os.stat("/proc/self/ns/pid").st_ino
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return None
    return f"{boot[:8]}.{inode}" if boot else None


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

    On this host and in this pid namespace a dead pid tells at once; otherwise a heartbeat
    older than ``stale_after``. A name without a namespace (written before names had one, or
    where /proc cannot tell) counts as this namespace when the host names match.
    """
    host, pid, namespace = _parse_worker(model.worker or "")
    ours = host == socket.gethostname() and namespace in (None, pid_namespace())
    if ours and pid.isdigit() and not _pid_alive(int(pid)):
        return True
    # elsewhere, or a live pid that may be a new process (a restarted container): the heartbeat
    beat = model.heartbeat_at or model.started_at
    now = now or utcnow()
    return beat is None or (now - beat).total_seconds() > stale_after


def _parse_worker(name: str) -> tuple[str, str, str | None]:
    """``(host, pid, namespace)`` of a ``worker_name`` (namespace None in a name without one)."""
    parts = name.split("/")
    host = parts[0]
    pid = parts[1] if len(parts) > 1 else ""
    namespace = parts[3] if len(parts) > 3 and parts[3] else None
    return host, pid, namespace


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
    running job that ``is_abandoned``. Returns how many jobs this call recovered (a job another
    sweep recovered first is neither counted nor logged).
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
        recovered = 0
        for model in stuck:
            if model.attempts < max_attempts:
                changed = session.execute(
                    update(Model)
                    .where(*_still_stuck(model))
                    .values(status="queued", progress=0.0, worker=None)
                )
                event = "job.requeued"
            else:
                changed = session.execute(
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
                event = "job.abandoned"
            if changed.rowcount == 1:  # type: ignore[attr-defined]
                # another sweep (or the worker's own end) got there first: not ours to report
                recovered += 1
                log_event(event, model=model.id, attempts=model.attempts)
        return recovered
