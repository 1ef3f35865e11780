"""The Celery side of the distributed train queue: the app, its one task, the sender and the
worker process (``parley worker``).

Celery only carries job ids; the model row is the job of record. ``parley.train(model_id)``
claims the OLDEST queued job of that job's tenant (``training.jobs.run_train_job`` →
``claim_job``: usually that job) and runs it:

- the named job taken by another worker, cancelled, finished or deleted: the message is
  acknowledged as a no-op (logged ``queue.message_skipped``); duplicated messages are harmless;
- its tenant already runs ``per_tenant_concurrency`` jobs: the task sends the job again with a
  countdown (1 s, doubling up to 5 s) and returns, so a worker slot never waits for a tenant and
  other tenants' jobs pass (round-robin emerges); a freed tenant slot is taken within 5 s;
- an older job of the same tenant claimed instead: the named job, still queued, gets its message
  again at once, so one tenant's jobs start oldest first;
- a worker killed mid-job: ``task_acks_late`` and ``task_reject_on_worker_lost`` put the message
  back; its row, still ``running``, is re-queued (or failed after ``max_attempts``) by the
  sweep below and sent again.

``Dispatcher`` records each send in Redis (``parley:queue:sent:<id>`` = a random token that the
message carries) for its countdown plus ``RECORD_SLACK_S``, not for the visibility timeout: a
message held by a worker that died (Celery holds countdown messages unacknowledged in the
worker) comes back only after the visibility timeout, so the sweep sends the job again once the
record expires. A duplicate is harmless (it finds its job taken); a job that waits in the
broker longer than ``RECORD_SLACK_S`` gets one per ``RECORD_SLACK_S``. Only a message whose
token is still the record's sends the job again when its tenant is busy (compare-and-refresh),
and the record is dropped only by that token (compare-and-delete): each send starts one chain
of messages per queue, and a chain whose token was replaced ends, so messages never multiply.

``sweep`` runs every ``sweep_interval_s`` in every gateway and every worker: it re-queues the
jobs of dead workers (``recover_interrupted``) and sends every queued job that has no record:
jobs queued while Redis was down, jobs created without ``submit`` (the demo), re-queued ones,
jobs whose message was lost with a worker. The record is set with ``NX``, so several sweeps do
not send one job twice. A worker's sweep also registers the queues it consumes
(``parley:queue:consumers:<queue>``, expiring ``CONSUMER_TTL_MIN_S`` or more after the last
refresh): a job that prefers a GPU gets a ``gpu`` message only while a worker consumes ``gpu``.

Only errors that mean Redis cannot serve now (``core.redis.cannot_serve``: unreachable, timed
out, or refusing commands such as writes while out of memory) read as Redis being unavailable;
any other Redis error (a wrong command) is a fault and raised as it is.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery, signals  # type: ignore[import-untyped]
from kombu import Queue
from kombu.exceptions import OperationalError
from sqlalchemy import Engine, select

from core.backends import backends, set_torch_threads
from core.db import ensure_schema, get_engine, session_scope, utcnow
from core.errors import ConfigurationError, ParleyError, Unavailable
from core.logging import configure_logging, log_event
from core.redis import COMPARE_AND_DELETE, KEY_PREFIX, cannot_serve, sync_client, unavailable
from core.registry import load_entry_points
from core.settings import Settings
from core.tables import Model
from training.jobs import JobRunner, run_train_job
from training.queue.base import recover_interrupted, worker_name
from training.worker import make_runner, worker_threads

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
BUSY_RETRY_MAX_S = 5.0
RECORD_SLACK_S = 300.0
"""How long a send's record outlives its countdown: the time a message may take to reach a
worker; after it, a sweep sends the job again (a message lost with a dead worker)."""
CONSUMER_TTL_MIN_S = 30.0
"""A worker's registration of its queues lasts at least this long (3 sweeps, if longer)."""
_CONTINUE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""
SWEEP_BATCH = 500
"""Queued jobs one sweep looks at, oldest first (the rest wait for the next sweep)."""


def _cannot_serve(error: BaseException) -> bool:
    """Redis, or the broker connection on it, cannot serve now (kombu wraps the broker's
    connection errors in ``OperationalError``)."""
    return isinstance(error, OperationalError) or cannot_serve(error)


def make_celery(settings: Settings, *, threads: int | None = None) -> Any:
    """The Celery app on ``PARLEY_REDIS__URL`` (broker and result backend), with its task
    (run with ``threads`` torch threads per pool process; default: all cores)."""
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
        worker_proc_alive_timeout=60.0,  # a loaded machine may start a pool process slowly
        task_queues=[Queue(name) for name in QUEUES],  # type: ignore[no-untyped-call]
        task_default_queue="cpu",
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )

    @app.task(name=TRAIN_TASK, bind=True)  # type: ignore[untyped-decorator]
    def train(task: Any, model_id: str, busy: int = 0, token: str = "") -> str:
        queue = (task.request.delivery_info or {}).get("routing_key") or "cpu"
        state = _process_state(settings, app, threads=threads or worker_threads(settings))
        return state.train(model_id, queue=queue, busy=busy, token=token)

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

    @staticmethod
    def consumers_key(queue: str) -> str:
        return f"{KEY_PREFIX}queue:consumers:{queue}"

    def register_consumer(self, queues: list[str]) -> None:
        """This worker consumes ``queues`` (refreshed by its sweep; expires on its own)."""
        ttl = math.ceil(max(CONSUMER_TTL_MIN_S, 3 * self.settings.queue.sweep_interval_s))
        with (
            self._redis("registering the worker's queues") as client,
            client.pipeline(transaction=False) as pipe,
        ):
            for queue in queues:
                pipe.set(self.consumers_key(queue), "1", ex=ttl)
            pipe.execute()

    def routes(self, backend: str) -> list[tuple[str, float | None]]:
        """(queue, countdown) of each message a job of ``backend`` gets: ``cpu``; a job that
        prefers a GPU: ``cpu`` after ``gpu_wait_s``, and ``gpu`` at once while a worker consumes
        ``gpu`` (whichever worker claims it first runs it)."""
        if not _prefers_gpu(backend):
            return [("cpu", None)]
        later = ("cpu", self.settings.queue.gpu_wait_s or None)
        with self._redis("routing the train job") as client:
            gpu_consumed = bool(client.exists(self.consumers_key("gpu")))
        return [("gpu", None), later] if gpu_consumed else [later]

    def send(self, model_id: str, backend: str, *, unless_sent: bool = False) -> bool:
        """Send the job's messages (a new chain: a new token); ``Unavailable`` naming Redis
        when it cannot serve. With ``unless_sent``, only when no send is recorded (False:
        nothing was sent)."""
        routes = self.routes(backend)
        token = secrets.token_hex(8)
        with self._redis("sending the train job") as client:
            recorded = client.set(self.key(model_id), token, ex=self._ttl(routes), nx=unless_sent)
        if not recorded:
            return False
        self._publish(model_id, routes, token=token, busy=0)
        log_event("queue.sent", model=model_id, queues=[q for q, _ in routes])
        return True

    def send_again(
        self, model_id: str, queue: str, *, token: str, countdown: float, busy: int
    ) -> bool:
        """Continue the message chain of ``token`` on ``queue`` (``busy``: how many times so
        far); False, sending nothing, when ``token`` is no longer the job's record (another
        chain carries the job, or the record expired and a sweep sends it)."""
        routes: list[tuple[str, float | None]] = [(queue, countdown)]
        with self._redis("sending the train job again") as client:
            current = client.eval(_CONTINUE, 1, self.key(model_id), token, self._ttl(routes))
        if not current:
            return False
        self._publish(model_id, routes, token=token, busy=busy)
        return True

    def release(self, model_id: str, token: str) -> None:
        """The chain of ``token`` ends (its job was claimed or is no longer queued): a sweep
        may send the job again once it is queued again. Another chain's record is kept."""
        try:
            sync_client(self.settings.redis).eval(COMPARE_AND_DELETE, 1, self.key(model_id), token)
        except Exception as e:
            if not _cannot_serve(e):
                raise
            log_event("queue.record_not_deleted", model=model_id, error=repr(e))  # it expires

    def _ttl(self, routes: list[tuple[str, float | None]]) -> int:
        return math.ceil(max(c or 0 for _, c in routes) + RECORD_SLACK_S)

    def _publish(
        self, model_id: str, routes: list[tuple[str, float | None]], *, token: str, busy: int
    ) -> None:
        """Publish after recording; a failed publish drops the record (a sweep sends the job
        once Redis is back)."""
        try:
            for queue, countdown in routes:
                self.app.send_task(
                    TRAIN_TASK,
                    args=[model_id],
                    kwargs={"busy": busy, "token": token},
                    queue=queue,
                    countdown=countdown,
                    retry=False,
                )
        except Exception as e:
            if not _cannot_serve(e):
                raise
            self.release(model_id, token)
            raise unavailable(self.settings.redis.url, "sending the train job", e) from e

    @contextmanager
    def _redis(self, what: str) -> Iterator[Any]:
        """The Redis client; Redis unable to serve raises ``Unavailable`` naming it."""
        try:
            yield sync_client(self.settings.redis)
        except Exception as e:
            if not _cannot_serve(e):
                raise
            raise unavailable(self.settings.redis.url, what, e) from e

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
        with (
            self._redis("sending queued train jobs") as client,
            client.pipeline(transaction=False) as pipe,
        ):
            for model_id, _ in rows:
                pipe.exists(self.key(model_id))
            recorded = pipe.execute()
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
    main process of every worker, which also registers the queues it ``consumes``); Redis being
    away is logged and tried again."""

    def __init__(
        self, engine: Engine, dispatcher: Dispatcher, *, consumes: list[str] | None = None
    ) -> None:
        self.engine, self.dispatcher = engine, dispatcher
        self.consumes = list(consumes or [])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="queue-sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.dispatcher.settings.queue.sweep_interval_s
        while True:
            try:
                if self.consumes:
                    self.dispatcher.register_consumer(self.consumes)
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

    def train(self, model_id: str, *, queue: str, busy: int, token: str) -> str:
        def claimed(job: str) -> None:
            if job == model_id:
                self.dispatcher.release(model_id, token)
                return
            # an older job of the tenant runs instead: this one, still queued, goes on
            log_event("queue.older_job_first", model=model_id, claimed=job)
            self._send_again(model_id, queue, token=token, busy=0)

        outcome = run_train_job(
            self.runner,
            model_id,
            heartbeat_interval=self.heartbeat_interval,
            on_claimed=claimed,
        )
        if outcome.status == "tenant_busy":
            self._send_again(model_id, queue, token=token, busy=busy + 1)
        elif outcome.status == "not_queued":
            self.dispatcher.release(model_id, token)
            log_event("queue.message_skipped", model=model_id, queue=queue)
        return outcome.status

    def _send_again(self, model_id: str, queue: str, *, token: str, busy: int) -> None:
        countdown = min(BUSY_RETRY_S * 2 ** max(busy - 1, 0), BUSY_RETRY_MAX_S)
        try:
            sent = self.dispatcher.send_again(
                model_id, queue, token=token, countdown=countdown, busy=busy
            )
        except Unavailable as e:  # the record expires; a sweep sends the job then
            log_event("queue.send_again_deferred", model=model_id, error=e.message)
            return
        if not sent:
            log_event("queue.message_dropped", model=model_id, queue=queue)


_state: dict[int, _WorkerProcess] = {}


def _process_state(settings: Settings, app: Any, *, threads: int) -> _WorkerProcess:
    """This process's runner, built on its first job (after the fork: a pool child's own pid),
    so a pool process starts fast (the object store's client is built here, not at start)."""
    pid = os.getpid()
    state = _state.get(pid)
    if state is None:
        state = _WorkerProcess(
            runner=make_runner(
                settings,
                worker_name=worker_name(pid),
                threads=threads,
            ),
            dispatcher=Dispatcher(settings, app),
            heartbeat_interval=min(settings.queue.heartbeat_interval, CANCEL_CHECK_S),
        )
        _state[pid] = state
    return state


def run_worker(
    settings: Settings, *, queues: list[str], concurrency: int, name: str | None = None
) -> None:
    """Run a Celery worker for train jobs (prefork pool) until it is stopped."""
    configure_logging(settings.log_level)
    load_entry_points()  # backends (and torch) imported once, before the pool forks
    threads = worker_threads(settings, concurrency)
    set_torch_threads(threads)
    if settings.storage_url.startswith("s3://"):
        import boto3  # noqa: F401 - imported before the fork, not in every pool process
        import botocore.config  # noqa: F401
    ensure_schema(settings.database_url)
    app = make_celery(settings, threads=threads)
    sweeper = Sweeper(get_engine(settings.database_url), Dispatcher(settings, app), consumes=queues)

    def process_init(**_: Any) -> None:
        set_torch_threads(threads)
        log_event("worker.process_ready", worker=worker_name(os.getpid()))

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
