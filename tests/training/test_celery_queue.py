"""The ``celery`` train queue for real: a redis-server, two Celery worker subprocesses
(``parley worker`` with the ``toy-bow`` test backend, ``tests.support.celery_worker``) and a
SQLite database file they share with this process, which submits jobs like a gateway does.

Fast tests first (no worker): ``claim_job`` (the tenant's oldest job first), the routing of jobs
to the ``gpu`` (only while a gpu worker is registered) and ``cpu`` queues, a send's record that
expires soon after its countdown, tenant-busy messages that never multiply, a message that runs
its tenant's older job while its own goes on. Then, against the workers: a job runs and
succeeds; a ``prefers_gpu`` job runs on a cpu worker (after ``gpu_wait_s``) and nothing is sent
to ``gpu``; duplicated messages never run a job twice; a cancel stops a
running job within 2 s although its backend reports progress only every 20 s; a job submitted
while Redis is down runs once it is back (``202``); a worker killed mid-job (the whole process
tree, then a pool process twice) → the job runs again, or fails after ``max_attempts``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from bot_gateway.app import create_app
from core.backends import BackendContext
from core.db import get_engine, session_scope, upgrade, utcnow
from core.errors import Unavailable
from core.redis import sync_client
from core.settings import Settings
from core.storage import LocalStore, store_for
from core.tables import Model
from core.tenants import create_tenant
from tests.conftest import ROOT, make_settings
from tests.support.data import intent_csv
from tests.support.redis_server import RedisServer, redis_server_path
from tests.support.toy_backend import ToyBowBackend
from training import celery_app
from training.celery_app import Dispatcher
from training.datasets.importers import Limits
from training.datasets.service import create_dataset, run_import
from training.jobs import JobRunner
from training.queue import Claim, claim_job
from training.queue.celery import CeleryQueue
from training.registry import cancel_model, create_model

LIMITS = Limits(max_examples=1000, max_labels=100, max_text_chars=500)
OPERATOR = {"Authorization": "Bearer operator-secret"}
QUICK = {"epochs": 2}
# Trains for a few seconds, reporting progress every epoch: long enough to be caught running.
LONG = {"epochs": 4, "sleep_per_epoch": 0.4}
QUEUE = {
    "backend": "celery",
    "sweep_interval_s": 0.5,
    "max_attempts": 2,
    "stale_after": 30,
    "threads": 1,
}


def _tenant_with_dataset(engine: Engine, store: Any, name: str) -> tuple[str, str]:
    with session_scope(engine) as session:
        tenant, _ = create_tenant(session, name)
        dataset_id = create_dataset(
            session,
            store,
            tenant_id=tenant.id,
            name="intents",
            dataset_type="text-intent",
            filename="data.csv",
            data=intent_csv(),
        ).id
        tenant_id = tenant.id
    assert run_import(engine, store, dataset_id, LIMITS).status == "ready"
    return tenant_id, dataset_id


def _model(engine: Engine, model_id: str) -> Model:
    with session_scope(engine) as session:
        model = session.get(Model, model_id)
        assert model is not None
        return model


# --- fast: claim_job and routing ----------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Engine, LocalStore]]:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    upgrade(url)
    engine = get_engine(url)
    yield engine, LocalStore(tmp_path / "artifacts")
    engine.dispose()


def test_claim_job_claims_the_tenants_oldest_job_once_and_says_why_it_did_not(
    db: tuple[Engine, LocalStore],
) -> None:
    engine, store = db
    tenant_id, dataset_id = _tenant_with_dataset(engine, store, "acme")
    with session_scope(engine) as session:
        other, first, second, third = (
            create_model(session, tenant_id=tenant_id, dataset_id=dataset_id, backend="toy-bow").id
            for _ in range(4)
        )
        # the oldest job is of another backend (routed otherwise: perhaps waiting for a GPU)
        session.execute(update(Model).where(Model.id == other).values(backend="gpu-backend"))

    # a message names the newest job: the tenant's oldest one of that backend starts first
    assert claim_job(engine, third, worker="w1", per_tenant_concurrency=2) == (
        Claim.CLAIMED,
        first,
    )
    record = _model(engine, first)
    assert (record.status, record.worker, record.attempts) == ("running", "w1", 1)
    assert _model(engine, third).status == "queued"
    assert claim_job(engine, first, worker="w2", per_tenant_concurrency=2) == (
        Claim.NOT_QUEUED,
        None,
    )
    assert claim_job(engine, third, worker="w2", per_tenant_concurrency=2) == (
        Claim.CLAIMED,
        second,
    )
    # the tenant runs two jobs: the third waits, still queued
    assert claim_job(engine, third, worker="w3", per_tenant_concurrency=2) == (
        Claim.TENANT_BUSY,
        None,
    )
    assert _model(engine, third).status == "queued"
    assert claim_job(engine, third, worker="w3", per_tenant_concurrency=None) == (
        Claim.CLAIMED,
        third,
    )
    assert _model(engine, other).status == "queued"
    assert claim_job(engine, other, worker="w4", per_tenant_concurrency=None) == (
        Claim.CLAIMED,
        other,
    )
    with session_scope(engine) as session:
        fourth = create_model(
            session, tenant_id=tenant_id, dataset_id=dataset_id, backend="toy-bow"
        ).id
        cancel_model(session, tenant_id, fourth)
    assert claim_job(engine, fourth, worker="w1", per_tenant_concurrency=None)[0] is (
        Claim.NOT_QUEUED
    )
    assert claim_job(engine, "mdl_gone", worker="w1", per_tenant_concurrency=None)[0] is (
        Claim.NOT_QUEUED
    )


@dataclass(frozen=True)
class Message:
    model_id: str
    queue: str
    countdown: float | None
    token: str
    busy: int


class RecordingApp:
    """Stands in for the Celery app: records what would be published."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    @property
    def sent(self) -> list[tuple[str, str, float | None]]:
        return [(m.model_id, m.queue, m.countdown) for m in self.messages]

    def send_task(
        self,
        name: str,
        *,
        args: list[str],
        kwargs: dict[str, Any],
        queue: str,
        countdown: float | None,
        **_: Any,
    ) -> None:
        self.messages.append(Message(args[0], queue, countdown, kwargs["token"], kwargs["busy"]))


def _dispatcher(
    tmp_path: Path, redis_url: str, db_url: str = "sqlite://", **queue: Any
) -> tuple[Dispatcher, RecordingApp]:
    settings = make_settings(tmp_path, db_url, redis={"url": redis_url}, queue=queue)
    app = RecordingApp()
    return Dispatcher(settings, app), app


def test_gpu_jobs_go_to_gpu_while_a_gpu_worker_exists_and_to_cpu_after_gpu_wait_s(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now, sent_now = _dispatcher(tmp_path, redis_url, gpu_wait_s=0)
    assert now.send("mdl_1", "toy-bow")
    assert sent_now.sent == [("mdl_1", "cpu", None)]

    monkeypatch.setattr(ToyBowBackend, "prefers_gpu", True)
    # no worker consumes gpu (the compose default): nothing waits on gpu forever
    assert now.send("mdl_2", "toy-bow")
    later, sent_later = _dispatcher(tmp_path, redis_url, gpu_wait_s=3)
    assert later.send("mdl_3", "toy-bow")
    assert sent_now.sent[1:] == [("mdl_2", "cpu", None)]
    assert sent_later.sent == [("mdl_3", "cpu", 3)]

    later.register_consumer(["gpu", "cpu"])  # a gpu worker's sweep
    assert now.send("mdl_4", "toy-bow")
    assert sent_now.sent[2:] == [("mdl_4", "gpu", None), ("mdl_4", "cpu", None)]
    assert later.send("mdl_5", "toy-bow")
    assert sent_later.sent[1:] == [("mdl_5", "gpu", None), ("mdl_5", "cpu", 3)]
    # both messages of one send carry one token: one chain per queue
    assert len({m.token for m in sent_later.messages[1:]}) == 1

    # a send is recorded: a sweep does not send that job again until a worker took the message
    assert not later.send("mdl_5", "toy-bow", unless_sent=True)
    later.release("mdl_5", "not-its-token")  # a stale message's release changes nothing
    assert not later.send("mdl_5", "toy-bow", unless_sent=True)
    later.release("mdl_5", sent_later.messages[-1].token)
    assert later.send("mdl_5", "toy-bow", unless_sent=True)
    assert len(sent_later.sent) == 5


def _queued_jobs(engine: Engine, store: Any, n: int, tenant: str = "acme") -> list[str]:
    tenant_id, dataset_id = _tenant_with_dataset(engine, store, tenant)
    ids = []
    for _ in range(n):
        with session_scope(engine) as session:
            ids.append(
                create_model(
                    session,
                    tenant_id=tenant_id,
                    dataset_id=dataset_id,
                    backend="toy-bow",
                    params=QUICK,
                ).id
            )
    return ids


def test_a_send_record_outlives_its_countdown_briefly_so_a_lost_message_is_sent_again(
    db: tuple[Engine, LocalStore], tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message held by a worker that died comes back after the visibility timeout (6 h):
    the record expires long before, and the sweep sends the job again."""
    import redis

    engine, store = db
    (model_id,) = _queued_jobs(engine, store, 1)
    dispatcher, app = _dispatcher(tmp_path, redis_url, str(engine.url))
    client = redis.Redis.from_url(redis_url)

    assert dispatcher.send(model_id, "toy-bow")
    ttl = client.ttl(dispatcher.key(model_id))
    assert 0 < ttl <= celery_app.RECORD_SLACK_S
    assert ttl < dispatcher.settings.queue.visibility_timeout_s / 10
    assert dispatcher.send_unsent(engine, older_than=0) == 0  # on its way: not sent twice

    monkeypatch.setattr(celery_app, "RECORD_SLACK_S", 0.5)
    assert dispatcher.send(model_id, "toy-bow")  # a new chain, recorded for 1 s
    assert client.ttl(dispatcher.key(model_id)) == 1
    deadline = time.monotonic() + 10
    while client.exists(dispatcher.key(model_id)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert dispatcher.send_unsent(engine, older_than=0) == 1
    assert app.sent[-1] == (model_id, "cpu", None)


def _worker_process(
    engine: Engine, store: Any, tmp_path: Path, dispatcher: Dispatcher, name: str = "w1"
) -> Any:
    return celery_app._WorkerProcess(
        runner=JobRunner(
            engine=engine,
            store=store,
            context=BackendContext(cache_dir=tmp_path / "cache", device="cpu", threads=1),
            worker_name=name,
            per_tenant_concurrency=1,
        ),
        dispatcher=dispatcher,
        heartbeat_interval=1.0,
    )


def test_tenant_busy_messages_never_multiply(
    db: tuple[Engine, LocalStore], tmp_path: Path, redis_url: str
) -> None:
    """However sweeps and duplicate sends interleave with tenant-busy bounces, a queued job
    keeps at most one live message chain: a message whose token was replaced ends."""
    engine, store = db
    running, waiting = _queued_jobs(engine, store, 2)
    dispatcher, app = _dispatcher(tmp_path, redis_url, str(engine.url))
    worker = _worker_process(engine, store, tmp_path, dispatcher)
    # the tenant's only slot is taken (by another worker): ``waiting`` bounces
    assert claim_job(engine, running, worker="other", per_tenant_concurrency=1)[1] == running

    assert dispatcher.send(waiting, "toy-bow")
    live = list(app.messages)
    for round_ in range(12):
        if round_ % 3 == 1:  # a sweep: the job has a record, so nothing is sent
            assert dispatcher.send_unsent(engine, older_than=0) == 0
        if round_ in (2, 6):  # a racing duplicate send (a new chain replaces the record)
            before = len(app.messages)
            dispatcher.send(waiting, "toy-bow")
            live += app.messages[before:]
        message = live.pop(0)
        before = len(app.messages)
        status = worker.train(
            message.model_id, queue=message.queue, busy=message.busy, token=message.token
        )
        assert status == "tenant_busy"
        resent = app.messages[before:]
        live += resent
        assert len(resent) <= 1
        current = sync_client(dispatcher.settings.redis).get(dispatcher.key(waiting)).decode()
        # only the current chain goes on; a replaced one ends at its next bounce
        assert all(m.token == current for m in resent)
        assert len(live) <= 2
    assert [m.token for m in live] == [current]
    # bounces back off, 1 s doubling up to BUSY_RETRY_MAX_S: a freed slot is taken soon
    assert max(m.countdown or 0 for m in app.messages) == celery_app.BUSY_RETRY_MAX_S


@pytest.mark.slow
def test_a_message_starts_its_tenants_oldest_job_and_its_own_job_goes_on(
    db: tuple[Engine, LocalStore], tmp_path: Path, redis_url: str
) -> None:
    engine, store = db
    older, newer = _queued_jobs(engine, store, 2)
    dispatcher, app = _dispatcher(tmp_path, redis_url, str(engine.url))
    worker = _worker_process(engine, store, tmp_path, dispatcher)
    assert dispatcher.send(newer, "toy-bow")  # the newer job's message arrives first
    (message,) = app.messages

    status = worker.train(newer, queue="cpu", busy=0, token=message.token)

    assert status == "succeeded"
    assert _model(engine, older).status == "succeeded"
    assert _model(engine, newer).status == "queued"
    # the newer job's chain went on at once (before the older job ran), same token
    resent = app.messages[1:]
    assert [(m.model_id, m.queue, m.token, m.busy) for m in resent] == [
        (newer, "cpu", message.token, 0)
    ]
    assert resent[0].countdown == celery_app.BUSY_RETRY_S
    assert worker.train(newer, queue="cpu", busy=0, token=message.token) == "succeeded"
    assert _model(engine, newer).status == "succeeded"
    # its chain ended with the claim: a sweep may send it again should it be re-queued
    assert not sync_client(dispatcher.settings.redis).exists(dispatcher.key(newer))


def test_redis_refusing_writes_is_unavailable_and_a_wrong_command_is_a_fault(
    tmp_path: Path, redis_url: str
) -> None:
    import redis

    dispatcher, app = _dispatcher(tmp_path, redis_url)
    client = redis.Redis.from_url(redis_url)
    client.lpush(dispatcher.key("mdl_list"), "x")  # a key of another type: a bug, not an outage
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        dispatcher.send_again("mdl_list", "cpu", token="t", countdown=1, busy=1)

    client.config_set("maxmemory", 1)  # every write refused: OOM
    try:
        with pytest.raises(Unavailable) as refused:
            dispatcher.send("mdl_1", "toy-bow")
    finally:
        client.config_set("maxmemory", 0)
    assert "memory" in refused.value.message and "unreachable" not in refused.value.message
    assert app.sent == []
    assert dispatcher.send("mdl_1", "toy-bow")


def test_redis_down_at_submit_leaves_the_job_queued_for_the_sweep(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    upgrade(url)
    settings = make_settings(
        tmp_path, url, redis={"url": "redis://127.0.0.1:1/0"}, queue={"backend": "celery"}
    )
    engine = get_engine(url)
    tenant_id, dataset_id = _tenant_with_dataset(engine, store_for(settings), "acme")
    with session_scope(engine) as session:
        model_id = create_model(
            session, tenant_id=tenant_id, dataset_id=dataset_id, backend="toy-bow"
        ).id
    queue = CeleryQueue(settings=settings, engine=engine)
    started = time.monotonic()
    queue.submit(model_id)  # logged and counted, not raised: the job of record exists
    assert time.monotonic() - started < 10  # refused at once: no wait for a timeout
    assert _model(engine, model_id).status == "queued"
    engine.dispose()


# --- against real workers -------------------------------------------------------------------


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Cluster:
    settings: Settings
    engine: Engine
    redis: RedisServer
    queue: CeleryQueue
    tmp: Path
    tenants: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> tenant, dataset
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, *queues: str) -> Worker:
        env = {
            **os.environ,
            **self.settings.worker_env(),
            "PARLEY_QUEUE__BACKEND": "celery",
            "PARLEY_LOG_LEVEL": "INFO",
            **{f"PARLEY_QUEUE__{k.upper()}": str(v) for k, v in QUEUE.items()},
        }
        log = self.tmp / f"worker-{len(self.workers)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.celery_worker", "worker"]
            + ["--queues", ",".join(queues)],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg takes the whole tree
        )
        worker = Worker(proc, log)
        self.workers.append(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "worker.process_ready" not in worker.text():
            assert worker.alive(), worker.text()[-3000:]
            assert time.monotonic() < deadline, worker.text()[-3000:]
            time.sleep(0.1)

    def logs(self) -> str:
        return "".join(w.text() for w in self.workers)

    def dataset(self, tenant: str) -> tuple[str, str]:
        if tenant not in self.tenants:
            self.tenants[tenant] = _tenant_with_dataset(
                self.engine, store_for(self.settings), tenant
            )
        return self.tenants[tenant]

    def train(
        self,
        params: dict[str, Any] | None = None,
        *,
        tenant: str = "acme",
        queue: CeleryQueue | None = None,
    ) -> str:
        tenant_id, dataset_id = self.dataset(tenant)
        with session_scope(self.engine) as session:
            model_id = create_model(
                session,
                tenant_id=tenant_id,
                dataset_id=dataset_id,
                backend="toy-bow",
                params=params or QUICK,
            ).id
        (queue or self.queue).submit(model_id)
        return model_id

    def model(self, model_id: str) -> Model:
        return _model(self.engine, model_id)

    def wait(self, model_id: str, until: Callable[[Model], bool], timeout: float = 90) -> Model:
        deadline = time.monotonic() + timeout
        while True:
            model = self.model(model_id)
            if until(model):
                return model
            assert time.monotonic() < deadline, (
                f"{model_id} still {model.status} ({model.progress}, attempts {model.attempts})"
                f"\n{self.logs()[-4000:]}"
            )
            time.sleep(0.05)

    def running_pid(self, model_id: str) -> int:
        """The pool process running the job (``host/pid/0``), once it reported progress."""
        model = self.wait(model_id, lambda m: m.status == "running" and m.progress > 0)
        assert model.worker is not None
        return int(model.worker.split("/")[1])

    def owner(self, pid: int) -> Worker:
        """The worker whose main process is ``pid``'s parent."""
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        (worker,) = [w for w in self.workers if w.proc.pid == ppid]
        return worker


def finished(model: Model) -> bool:
    return model.status in ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if redis_server_path() is None:
        pytest.skip("redis-server not installed (scripts/install-system-deps redis-server)")
    tmp = tmp_path_factory.mktemp("celery")
    url = f"sqlite:///{tmp / 'parley.db'}"
    upgrade(url)
    with RedisServer() as redis:  # this module's own: one test stops it
        settings = make_settings(tmp, url, redis={"url": redis.url}, queue=QUEUE)
        engine = get_engine(url)
        queue = CeleryQueue(settings=settings, engine=engine)
        c = Cluster(settings, engine, redis, queue, tmp)
        try:
            for worker in (c.start_worker("cpu"), c.start_worker("cpu")):
                c.wait_ready(worker)
            yield c
        finally:
            for worker in c.workers:
                if worker.alive():
                    os.killpg(worker.proc.pid, signal.SIGTERM)
            for worker in c.workers:
                try:
                    worker.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.proc.pid, signal.SIGKILL)
            engine.dispose()


@pytest.mark.slow
def test_a_job_runs_on_a_worker_and_succeeds(cluster: Cluster) -> None:
    model_id = cluster.train()
    model = cluster.wait(model_id, finished)

    assert model.status == "succeeded", model.failure_message
    assert model.metrics is not None and model.metrics["accuracy"] is not None
    assert model.attempts == 1 and model.artifact_sha256
    assert store_for(cluster.settings).exists(f"{model.artifact_key}/model.json")
    # run by a pool process of one of the workers, named so a dead pid is seen at once
    assert model.worker is not None
    cluster.owner(int(model.worker.split("/")[1]))


@pytest.mark.slow
def test_a_gpu_job_runs_on_cpu_workers_after_gpu_wait_s(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ToyBowBackend, "prefers_gpu", True)
    waiting = make_settings(
        cluster.tmp,
        cluster.settings.database_url,
        redis={"url": cluster.redis.url},
        queue={**QUEUE, "gpu_wait_s": 2.0},
    )
    submitted = utcnow()
    # tenants of their own: a message may start its tenant's older job of the same backend
    later = cluster.train(
        tenant="gpu-later", queue=CeleryQueue(settings=waiting, engine=cluster.engine)
    )
    at_once = cluster.train(tenant="gpu-at-once")

    assert cluster.wait(at_once, finished).status == "succeeded"
    model = cluster.wait(later, finished)
    assert model.status == "succeeded", model.failure_message
    assert model.started_at is not None
    assert (model.started_at - submitted).total_seconds() >= 2.0
    # no worker consumes gpu here (the workers registered cpu only): nothing was sent to gpu,
    # where it would have waited forever
    import redis

    client = redis.Redis.from_url(cluster.redis.url)
    assert client.llen("gpu") == 0
    assert client.exists(Dispatcher.consumers_key("cpu"))
    assert not client.exists(Dispatcher.consumers_key("gpu"))


@pytest.mark.slow
def test_two_workers_never_run_one_job_twice(cluster: Cluster) -> None:
    ids = [cluster.train(tenant=name) for name in ("acme", "bravo", "carol") for _ in range(2)]
    for model_id in ids:  # every job's message sent twice more, as a racing sweep might
        cluster.queue.dispatcher.send(model_id, "toy-bow")
        cluster.queue.dispatcher.send(model_id, "toy-bow")

    for model_id in ids:
        model = cluster.wait(model_id, finished)
        assert (model.status, model.attempts) == ("succeeded", 1), model.failure_message
    logs = cluster.logs()
    for model_id in ids:
        assert len(re.findall(rf'job\.started model="{model_id}"', logs)) == 1
    assert "queue.message_skipped" in logs


@pytest.mark.slow
def test_cancel_stops_a_running_job_within_2_s(cluster: Cluster) -> None:
    # one progress report per 20 s: only the heartbeat's check of the row can stop it in time
    model_id = cluster.train({"epochs": 2, "sleep_per_epoch": 20})
    cluster.wait(model_id, lambda m: m.status == "running")
    time.sleep(1.5)  # well inside the first 20-second epoch
    tenant_id, _ = cluster.dataset("acme")
    with session_scope(cluster.engine) as session:
        cancel_model(session, tenant_id, model_id)
    cancelled_at = time.time()

    pattern = re.compile(rf'^(\S+ \S+) INFO job\.cancelled model="{model_id}"', re.M)
    deadline = time.monotonic() + 30
    while (found := pattern.search(cluster.logs())) is None:
        assert time.monotonic() < deadline, cluster.logs()[-3000:]
        time.sleep(0.05)
    stopped_at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    latency = stopped_at - cancelled_at
    print(f"cancel reached the running job in {latency:.2f} s")
    assert latency < 2.0
    model = cluster.model(model_id)
    assert model.status == "cancelled" and model.artifact_key is None
    # the worker is free again: the next job runs
    assert cluster.wait(cluster.train(), finished).status == "succeeded"


@pytest.mark.slow
def test_a_job_submitted_while_redis_is_down_runs_once_it_is_back(cluster: Cluster) -> None:
    # counters in process: this test is about the queue, not about rate limits without Redis
    limits = cluster.settings.rate_limits.model_copy(update={"backend": "memory"})
    settings = cluster.settings.model_copy(update={"rate_limits": limits})
    with TestClient(create_app(settings, warm_encoder=False)) as client:
        r = client.post("/v1/tenants", json={"name": "delta"}, headers=OPERATOR)
        assert r.status_code == 201, r.text
        headers = {"Authorization": f"Bearer {r.json()['api_key']}"}
        r = client.post(
            "/v1/datasets",
            files={"file": ("data.csv", intent_csv())},
            data={"name": "intents", "type": "text-intent"},
            headers=headers,
        )
        assert r.status_code in (200, 201) and r.json()["status"] == "ready", r.text
        dataset_id = r.json()["id"]

        cluster.redis.stop()
        try:
            r = client.post(
                "/v1/models",
                json={"dataset_id": dataset_id, "backend": "toy-bow", "params": QUICK},
                headers=headers,
            )
            assert r.status_code == 202, r.text
            assert r.json()["status"] == "queued" and r.json()["queue_position"] == 0
            model_id = r.json()["id"]
            time.sleep(1.0)  # sweeps meanwhile find Redis away
        finally:
            cluster.redis.start()

        model = cluster.wait(model_id, finished, timeout=120)
        assert model.status == "succeeded", model.failure_message
        assert client.get(f"/v1/models/{model_id}", headers=headers).json()["status"] == (
            "succeeded"
        )


@pytest.mark.slow
def test_a_killed_worker_tree_job_runs_again_on_the_other_worker(cluster: Cluster) -> None:
    model_id = cluster.train(LONG)
    victim = cluster.owner(cluster.running_pid(model_id))
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=10)

    model = cluster.wait(model_id, finished)
    assert model.status == "succeeded", model.failure_message
    assert model.attempts == 2
    survivor = cluster.owner(int((model.worker or "").split("/")[1]))
    assert survivor is not victim


@pytest.mark.slow
def test_a_job_killed_max_attempts_times_fails_with_the_message(cluster: Cluster) -> None:
    model_id = cluster.train(LONG)
    first = cluster.running_pid(model_id)
    os.kill(first, signal.SIGKILL)  # the pool process only: its worker starts another
    cluster.wait(model_id, lambda m: m.attempts == 2 and m.status == "running", timeout=90)
    os.kill(cluster.running_pid(model_id), signal.SIGKILL)

    model = cluster.wait(model_id, finished)
    assert model.status == "failed"
    assert model.failure_message is not None
    assert "training was interrupted twice" in model.failure_message
    time.sleep(1.5)  # three sweeps later, nothing ran it a third time
    assert (cluster.model(model_id).status, cluster.model(model_id).attempts) == ("failed", 2)
