"""The ``celery`` train queue for real: a redis-server, two Celery worker subprocesses
(``parley worker`` with the ``toy-bow`` test backend, ``tests.support.celery_worker``) and a
SQLite database file they share with this process, which submits jobs like a gateway does.

Fast tests first (no worker): ``claim_job`` and the routing of jobs to the ``gpu`` and ``cpu``
queues. Then, against the workers: a job runs and succeeds; a ``prefers_gpu`` job runs on a cpu
worker (after ``gpu_wait_s``); duplicated messages never run a job twice; a cancel stops a
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
from sqlalchemy import Engine

from bot_gateway.app import create_app
from core.db import get_engine, session_scope, upgrade, utcnow
from core.settings import Settings
from core.storage import LocalStore, store_for
from core.tables import Model
from core.tenants import create_tenant
from tests.conftest import ROOT, make_settings
from tests.support.data import intent_csv
from tests.support.redis_server import RedisServer, redis_server_path
from tests.support.toy_backend import ToyBowBackend
from training.celery_app import Dispatcher
from training.datasets.importers import Limits
from training.datasets.service import create_dataset, run_import
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


def test_claim_job_claims_that_job_once_and_says_why_it_did_not(
    db: tuple[Engine, LocalStore],
) -> None:
    engine, store = db
    tenant_id, dataset_id = _tenant_with_dataset(engine, store, "acme")
    with session_scope(engine) as session:
        first, second, third = (
            create_model(session, tenant_id=tenant_id, dataset_id=dataset_id, backend="toy-bow").id
            for _ in range(3)
        )

    # the newest job, not the oldest: a message names its job
    assert claim_job(engine, third, worker="w1", per_tenant_concurrency=2) is Claim.CLAIMED
    assert claim_job(engine, third, worker="w2", per_tenant_concurrency=2) is Claim.NOT_QUEUED
    record = _model(engine, third)
    assert (record.status, record.worker, record.attempts) == ("running", "w1", 1)
    assert claim_job(engine, first, worker="w2", per_tenant_concurrency=2) is Claim.CLAIMED
    # the tenant runs two jobs: the third waits, still queued
    assert claim_job(engine, second, worker="w3", per_tenant_concurrency=2) is Claim.TENANT_BUSY
    assert _model(engine, second).status == "queued"
    assert claim_job(engine, second, worker="w3", per_tenant_concurrency=None) is Claim.CLAIMED
    with session_scope(engine) as session:
        fourth = create_model(
            session, tenant_id=tenant_id, dataset_id=dataset_id, backend="toy-bow"
        ).id
        cancel_model(session, tenant_id, fourth)
    assert claim_job(engine, fourth, worker="w1", per_tenant_concurrency=None) is Claim.NOT_QUEUED
    assert claim_job(engine, "mdl_gone", worker="w1", per_tenant_concurrency=None) is (
        Claim.NOT_QUEUED
    )


class RecordingApp:
    """Stands in for the Celery app: records what would be published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float | None]] = []

    def send_task(
        self, name: str, *, args: list[str], queue: str, countdown: float | None, **_: Any
    ) -> None:
        self.sent.append((args[0], queue, countdown))


def test_gpu_jobs_go_to_gpu_and_to_cpu_after_gpu_wait_s(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dispatcher(gpu_wait_s: float) -> tuple[Dispatcher, RecordingApp]:
        settings = make_settings(
            tmp_path, "sqlite://", redis={"url": redis_url}, queue={"gpu_wait_s": gpu_wait_s}
        )
        app = RecordingApp()
        return Dispatcher(settings, app), app

    now, sent_now = dispatcher(0)
    assert now.send("mdl_1", "toy-bow")
    assert sent_now.sent == [("mdl_1", "cpu", None)]

    monkeypatch.setattr(ToyBowBackend, "prefers_gpu", True)
    assert now.send("mdl_2", "toy-bow")
    assert sent_now.sent[1:] == [("mdl_2", "gpu", None), ("mdl_2", "cpu", None)]
    later, sent_later = dispatcher(3)
    assert later.send("mdl_3", "toy-bow")
    assert sent_later.sent == [("mdl_3", "gpu", None), ("mdl_3", "cpu", 3)]

    # a send is recorded: a sweep does not send that job again until a worker took the message
    assert not later.send("mdl_3", "toy-bow", unless_sent=True)
    later.forget("mdl_3")
    assert later.send("mdl_3", "toy-bow", unless_sent=True)
    assert len(sent_later.sent) == 4


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
    assert time.monotonic() - started < 5
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

    def wait_ready(self, worker: Worker, timeout: float = 60) -> None:
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

    def wait(self, model_id: str, until: Callable[[Model], bool], timeout: float = 40) -> Model:
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
    later = cluster.train(queue=CeleryQueue(settings=waiting, engine=cluster.engine))
    at_once = cluster.train()

    assert cluster.wait(at_once, finished).status == "succeeded"
    model = cluster.wait(later, finished)
    assert model.status == "succeeded", model.failure_message
    assert model.started_at is not None
    assert (model.started_at - submitted).total_seconds() >= 2.0
    # their gpu messages wait for a gpu worker (none here); the cpu ones ran them
    import redis

    assert redis.Redis.from_url(cluster.redis.url).llen("gpu") == 2


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
    deadline = time.monotonic() + 10
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

        model = cluster.wait(model_id, finished, timeout=60)
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
    cluster.wait(model_id, lambda m: m.attempts == 2 and m.status == "running", timeout=30)
    os.kill(cluster.running_pid(model_id), signal.SIGKILL)

    model = cluster.wait(model_id, finished)
    assert model.status == "failed"
    assert model.failure_message is not None
    assert "training was interrupted twice" in model.failure_message
    time.sleep(1.5)  # three sweeps later, nothing ran it a third time
    assert (cluster.model(model_id).status, cluster.model(model_id).attempts) == ("failed", 2)
