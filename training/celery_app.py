"""The Celery side of the distributed train queue: the app, its one task, the sender and the
worker process (``parley worker``).

Celery only carries job ids; the model row is the job of record. ``parley.train(model_id)``
claims THAT job (``training.jobs.run_train_job`` → ``claim_job``) and runs it:

- taken by another worker, cancelled, finished or deleted: the message is acknowledged as a
  no-op (logged ``queue.message_skipped``); duplicated messages are therefore harmless;
- its tenant already runs ``per_tenant_concurrency`` jobs: the task sends the job again with a
  countdown (1 s, doubling up to 15 s) and returns, so a worker slot never waits for a tenant
  and other tenants' jobs pass (round-robin emerges);
- a worker killed mid-job: ``task_acks_late`` and ``task_reject_on_worker_lost`` put the message
  back; its row, still ``running``, is re-queued (or failed after ``max_attempts``) by the
  sweep below and sent again.

``Dispatcher`` sends messages and records each send in Redis (``parley:queue:sent:<id>``, for
about ``visibility_timeout_s``; a worker deletes it when the message arrives). ``sweep`` runs
every ``sweep_interval_s`` in every gateway and every worker: it re-queues the jobs of dead
workers (``recover_interrupted``) and sends every queued job that has no record: jobs queued
while Redis was down, jobs created without ``submit`` (the demo), re-queued ones. The record is
set with ``NX`` first, so several sweeps do not send one job twice.
"""

from __future__ import annotations

import math
import os
import socket
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery, signals  # type: ignore[import-untyped]
from kombu import Queue
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy import Engine, select

from core import lookup_changes
from core.backends import BackendContext, backends
from core.db import ensure_schema, get_engine, session_scope, utcnow
from core.errors import ConfigurationError, ParleyError, Unavailable
from core.logging import configure_logging, log_event
from core.redis import KEY_PREFIX, sync_client, unavailable
from core.registry import load_entry_points
from core.settings import Settings
from core.storage import store_for
from core.tables import Model
from training.jobs import JobRunner, run_train_job
from training.queue.base import recover_interrupted, worker_name

__all__ = [
    "QUEUES",
    "TRAIN_TASK",
    "Dispatcher",
    "Sweeper",
    "make_celery",
    "run_worker",
    "sweep",
]

TRAIN_TASK = "parley.train"
QUEUES = ("cpu", "gpu")
CANCEL_CHECK_S = 1.0
"""A running job's row is checked (and beaten) at least this often: a cancel stops it within."""
BUSY_RETRY_S = 1.0
BUSY_RETRY_MAX_S = 15.0
_UNREACHABLE = (RedisError, OperationalError, OSError)
"""What Redis (or the broker connection on it) raises when it cannot be reached."""
SWEEP_BATCH = 500
"""Queued jobs one sweep looks at, oldest first (the rest wait for the next sweep)."""


def make_celery(settings: Settings) -> Any:
    """The Celery app on ``PARLEY_REDIS__URL`` (broker and result backend), with its task."""
    url = settings.redis.url
    if not url:
        raise ConfigurationError(
            "PARLEY_QUEUE__BACKEND=celery needs PARLEY_REDIS__URL=redis://host:port/db "
            "(the Celery broker)"
        )
    timeout = settings.redis.socket_timeout_s
    app = Celery("parley", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # the outcome is the model row
        broker_transport_options={
            "visibility_timeout": settings.queue.visibility_timeout_s,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        },
        broker_connection_timeout=timeout,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in QUEUES],  # type: ignore[no-untyped-call]
        task_default_queue="cpu",
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )

    @app.task(name=TRAIN_TASK, bind=True)  # type: ignore[untyped-decorator]
    def train(task: Any, model_id: str, busy: int = 0) -> str:
        queue = (task.request.delivery_info or {}).get("routing_key") or "cpu"
        return _process_state(settings, app).train(model_id, queue=queue, busy=busy)

    return app


# --- sending ----------------------------------------------------------------------------------


def _prefers_gpu(backend: str) -> bool:
    try:
        return bool(getattr(backends.get(backend), "prefers_gpu", False))
    except ParleyError:  # not installed here: the worker that runs it fails it with a message
        log_event("queue.unknown_backend", backend=backend)
        return False


@dataclass
class Dispatcher:
    """Sends ``parley.train`` messages and records, in Redis, which jobs have one on its way."""

    settings: Settings
    app: Any

    def key(self, model_id: str) -> str:
        return f"{KEY_PREFIX}queue:sent:{model_id}"

    def routes(self, backend: str) -> list[tuple[str, float | None]]:
        """(queue, countdown) of each message a job of ``backend`` gets: ``cpu``; or ``gpu`` at
        once and ``cpu`` after ``gpu_wait_s`` (whichever worker claims it first runs it)."""
        if not _prefers_gpu(backend):
            return [("cpu", None)]
        return [("gpu", None), ("cpu", self.settings.queue.gpu_wait_s or None)]

    def send(self, model_id: str, backend: str, *, unless_sent: bool = False) -> bool:
        """Send the job's messages; ``Unavailable`` naming Redis when it cannot be reached.
        With ``unless_sent``, only when no send is recorded (False: nothing was sent)."""
        routes = self.routes(backend)
        if not self._send(model_id, routes, nx=unless_sent):
            return False
        log_event("queue.sent", model=model_id, queues=[q for q, _ in routes])
        return True

    def send_again(self, model_id: str, queue: str, *, countdown: float, busy: int) -> None:
        """The tenant-busy path: the same queue, later (``busy``: how many times so far)."""
        self._send(model_id, [(queue, countdown)], busy=busy)

    def _send(
        self,
        model_id: str,
        routes: list[tuple[str, float | None]],
        *,
        nx: bool = False,
        busy: int = 0,
    ) -> bool:
        """Record the send, then publish; a failed publish drops the record (a sweep sends
        the job once Redis is back)."""
        ttl = math.ceil(self.settings.queue.visibility_timeout_s + max(c or 0 for _, c in routes))
        try:
            if not sync_client(self.settings.redis).set(self.key(model_id), "1", ex=ttl, nx=nx):
                return False
            for queue, countdown in routes:
                self.app.send_task(
                    TRAIN_TASK,
                    args=[model_id],
                    kwargs={"busy": busy} if busy else None,
                    queue=queue,
                    countdown=countdown,
                    retry=False,
                )
        except _UNREACHABLE as e:
            self.forget(model_id)
            raise unavailable(self.settings.redis.url, "sending the train job", e) from e
        return True

    def forget(self, model_id: str) -> None:
        """The job's message arrived (or was never sent): a sweep may send it again."""
        try:
            sync_client(self.settings.redis).delete(self.key(model_id))
        except Exception as e:  # noqa: BLE001 - the record expires by itself; logged
            log_event("queue.record_not_deleted", model=model_id, error=repr(e))

    def send_unsent(self, engine: Engine, *, older_than: float) -> int:
        """Send each queued job (queued at least ``older_than`` seconds ago) that has no
        recorded message; how many were sent."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        with session_scope(engine) as session:
            rows = session.execute(
                select(Model.id, Model.backend)
                .where(Model.status == "queued", Model.created_at <= cutoff)
                .order_by(Model.created_at)
                .limit(SWEEP_BATCH)
            ).all()
        if not rows:
            return 0
        client = sync_client(self.settings.redis)
        try:
            with client.pipeline(transaction=False) as pipe:
                for model_id, _ in rows:
                    pipe.exists(self.key(model_id))
                recorded = pipe.execute()
        except _UNREACHABLE as e:
            raise unavailable(self.settings.redis.url, "sending queued train jobs", e) from e
        sent = 0
        for (model_id, backend), exists in zip(rows, recorded, strict=True):
            if not exists and self.send(model_id, backend, unless_sent=True):
                log_event("queue.resent", model=model_id)
                sent += 1
        return sent


# --- the sweep --------------------------------------------------------------------------------


def sweep(engine: Engine, dispatcher: Dispatcher) -> int:
    """Re-queue the jobs of dead workers, then send queued jobs that have no message."""
    queue = dispatcher.settings.queue
    recover_interrupted(engine, max_attempts=queue.max_attempts, stale_after=queue.stale_after)
    return dispatcher.send_unsent(engine, older_than=queue.sweep_interval_s)


class Sweeper:
    """``sweep`` every ``sweep_interval_s`` in a thread (gateways with the celery queue, and the
    main process of every worker); Redis being away is logged and tried again."""

    def __init__(self, engine: Engine, dispatcher: Dispatcher) -> None:
        self.engine, self.dispatcher = engine, dispatcher
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="queue-sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.dispatcher.settings.queue.sweep_interval_s
        while True:
            try:
                sweep(self.engine, self.dispatcher)
            except Unavailable as e:
                log_event("queue.sweep_deferred", error=e.message)
            except Exception as e:  # noqa: BLE001 - the next sweep tries again; logged
                log_event("queue.sweep_failed", error=repr(e))
            if self._stop.wait(interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


# --- the worker -------------------------------------------------------------------------------


@dataclass
class _WorkerProcess:
    """One pool process of a worker: its runner (named for this pid) and sender."""

    runner: JobRunner
    dispatcher: Dispatcher
    heartbeat_interval: float

    def train(self, model_id: str, *, queue: str, busy: int) -> str:
        self.dispatcher.forget(model_id)  # this message is here; a sweep may send another
        outcome = run_train_job(self.runner, model_id, heartbeat_interval=self.heartbeat_interval)
        if outcome.status == "tenant_busy":
            countdown = min(BUSY_RETRY_S * 2**busy, BUSY_RETRY_MAX_S)
            self.dispatcher.send_again(model_id, queue, countdown=countdown, busy=busy + 1)
        elif outcome.status == "not_queued":
            log_event("queue.message_skipped", model=model_id, queue=queue)
        return outcome.status


_state: dict[int, _WorkerProcess] = {}


def _process_state(settings: Settings, app: Any, *, threads: int | None = None) -> _WorkerProcess:
    """This process's runner, built on first use (after the fork: a pool child's own pid)."""
    pid = os.getpid()
    state = _state.get(pid)
    if state is None:
        engine = get_engine(settings.database_url)
        engine.dispose(close=False)  # connections inherited over fork belong to the parent
        lookup_changes.publish_on(engine, settings.redis)  # an alias promoted here: to gateways
        threads = threads or _threads(settings, 1)
        state = _WorkerProcess(
            runner=JobRunner(
                engine=engine,
                store=store_for(settings),
                context=BackendContext(
                    cache_dir=settings.cache_dir, device=settings.serving.device, threads=threads
                ),
                worker_name=worker_name(pid),
                per_tenant_concurrency=settings.queue.per_tenant_concurrency,
            ),
            dispatcher=Dispatcher(settings, app),
            heartbeat_interval=min(settings.queue.heartbeat_interval, CANCEL_CHECK_S),
        )
        _state[pid] = state
    return state


def _threads(settings: Settings, concurrency: int) -> int:
    return settings.queue.threads or max(1, (os.cpu_count() or 1) // max(1, concurrency))


def _set_torch_threads(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass


def run_worker(
    settings: Settings, *, queues: list[str], concurrency: int, name: str | None = None
) -> None:
    """Run a Celery worker for train jobs (prefork pool) until it is stopped."""
    configure_logging(settings.log_level)
    load_entry_points()
    _set_torch_threads(_threads(settings, concurrency))  # imported once, before the pool forks
    ensure_schema(settings.database_url)
    app = make_celery(settings)
    sweeper = Sweeper(get_engine(settings.database_url), Dispatcher(settings, app))

    def process_init(**_: Any) -> None:
        threads = _threads(settings, concurrency)
        _set_torch_threads(threads)
        state = _process_state(settings, app, threads=threads)
        log_event("worker.process_ready", worker=state.runner.worker_name)

    def ready(**_: Any) -> None:
        sweeper.start()
        log_event("worker.ready", queues=queues, concurrency=concurrency, pid=os.getpid())

    def shutdown(**_: Any) -> None:
        sweeper.stop()

    signals.worker_process_init.connect(process_init, weak=False)
    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
    app.Worker(
        hostname=name or f"parley-{os.getpid()}@{socket.gethostname()}",
        queues=queues,
        concurrency=concurrency,
        pool="prefork",
        loglevel=settings.log_level.upper(),
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    ).start()
