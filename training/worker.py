"""A train worker process: ``python -m training.worker --name NAME``.

Loops: claim the next queued job (tenants in turn) and run it (``run_train_job``), repeat.
Exits when its parent process (the embedded server) is gone, so no worker outlives the server
that started it. A worker started by a server (``--parent``) that imported PyTorch for a job
exits with ``RECYCLED_EXIT`` after ``queue.recycle_idle_s`` without a job; its server starts a
fresh one, which holds no PyTorch until its next job (training.queue.local).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from core import lookup_changes
from core.backends import BackendContext
from core.db import ensure_schema, get_engine
from core.logging import configure_logging, log_event
from core.registry import load_entry_points
from core.settings import Settings, get_settings
from core.storage import store_for
from training.jobs import JobRunner, run_train_job
from training.queue.base import RECYCLED_EXIT, worker_name
from training.tracking import MlflowTracker


def recycle_due(settings: Settings, idle_since: float) -> bool:
    """Whether a worker idle since ``idle_since`` (``time.monotonic``) should exit to release
    PyTorch, which a job imported and which it would hold until it exits."""
    limit = settings.queue.recycle_idle_s
    return bool(limit) and "torch" in sys.modules and time.monotonic() - idle_since >= limit


def _parent_alive(pid: int | None) -> bool:
    if pid is None:
        return True
    return os.getppid() == pid


def worker_threads(settings: Settings, concurrency: int = 1) -> int:
    """Torch threads of one of ``concurrency`` worker processes on this machine."""
    return settings.queue.threads or max(1, (os.cpu_count() or 1) // max(1, concurrency))


def make_runner(settings: Settings, *, worker_name: str, threads: int) -> JobRunner:
    """The job runner of one worker process (embedded or Celery): its own engine (connections
    inherited over a fork belong to the parent), which publishes look-up changes to gateways
    (an alias promoted here), the artifact store, and the MLflow tracker when
    ``PARLEY_MLFLOW__TRACKING_URI`` is set (training.tracking)."""
    engine = get_engine(settings.database_url)
    engine.dispose(close=False)
    lookup_changes.publish_on(engine, settings.redis)
    return JobRunner(
        engine=engine,
        store=store_for(settings),
        context=BackendContext(
            cache_dir=settings.cache_dir, device=settings.serving.device, threads=threads
        ),
        worker_name=worker_name,
        per_tenant_concurrency=settings.queue.per_tenant_concurrency,
        stale_after=settings.queue.stale_after,
        tracker=MlflowTracker.from_settings(settings.mlflow),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Parley train worker")
    parser.add_argument("--name", default=worker_name(os.getpid()))
    parser.add_argument("--parent", type=int, default=None, help="exit when this pid is gone")
    parser.add_argument("--once", action="store_true", help="run queued jobs, then exit")
    args = parser.parse_args(argv)

    settings = get_settings()
    configure_logging(settings.log_level)
    threads = worker_threads(settings)
    # torch is imported (and given ``threads``) by the first job, not at start: an idle worker
    # holds about 90 MB instead of 560 (training.jobs.JobRunner)
    load_entry_points()
    ensure_schema(settings.database_url)
    runner = make_runner(settings, worker_name=args.name, threads=threads)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    log_event("worker.ready", worker=args.name, threads=threads)
    idle_since = time.monotonic()
    while not stopping and _parent_alive(args.parent):
        outcome = run_train_job(runner, heartbeat_interval=settings.queue.heartbeat_interval)
        if outcome.ran:
            idle_since = time.monotonic()
            continue
        if args.once:
            return 0
        if args.parent is not None and recycle_due(settings, idle_since):
            log_event("worker.recycled", worker=args.name, idle_s=settings.queue.recycle_idle_s)
            return RECYCLED_EXIT
        time.sleep(settings.queue.poll_interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
