"""The fair train queue: tenants are served in turn and each keeps to its concurrency limit, with
several workers claiming at once, on real SQLite and PostgreSQL, with the ``toy-bow`` backend
(jobs of milliseconds; ``sleep_per_epoch`` makes them overlap)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

import tests.support.toy_backend  # noqa: F401 - registers ``toy-bow``
from core.backends import BackendContext
from core.db import get_engine, session_scope
from core.settings import Settings
from core.storage import LocalStore
from core.tables import Model
from core.tenants import create_tenant
from tests.conftest import DB_KINDS, make_db_url, make_settings
from tests.support.data import intent_csv
from training.datasets.importers import Limits
from training.datasets.service import create_dataset, run_import
from training.jobs import JobRunner
from training.queue import claim_next_job
from training.registry import create_model

LIMITS = Limits(max_examples=1000, max_labels=100, max_text_chars=500)
QUICK = {"epochs": 2}
# Long enough that a job of one tenant is still running when the other worker picks.
OVERLAPPING = {"epochs": 3, "sleep_per_epoch": 0.05}


@dataclass
class Queue:
    engine: Engine
    store: LocalStore
    cache_dir: Path
    datasets: dict[str, str]  # tenant name -> dataset id
    tenants: dict[str, str]  # tenant name -> tenant id

    def tenant(self, name: str) -> None:
        with session_scope(self.engine) as session:
            tenant, _ = create_tenant(session, name)
            self.tenants[name] = tenant.id
            dataset_id = create_dataset(
                session,
                self.store,
                tenant_id=tenant.id,
                name="intents",
                dataset_type="text-intent",
                filename="data.csv",
                data=intent_csv(),
            ).id
        assert run_import(self.engine, self.store, dataset_id, LIMITS).status == "ready"
        self.datasets[name] = dataset_id

    def submit(self, name: str, count: int, params: dict[str, Any]) -> list[str]:
        ids = []
        for _ in range(count):
            with session_scope(self.engine) as session:
                ids.append(
                    create_model(
                        session,
                        tenant_id=self.tenants[name],
                        dataset_id=self.datasets[name],
                        backend="toy-bow",
                        params=params,
                    ).id
                )
        return ids

    def runner(self, name: str, per_tenant_concurrency: int | None) -> JobRunner:
        return JobRunner(
            engine=self.engine,
            store=self.store,
            context=BackendContext(cache_dir=self.cache_dir),
            worker_name=name,
            report_interval=0.0,
            per_tenant_concurrency=per_tenant_concurrency,
        )

    def work(self, workers: int, per_tenant_concurrency: int | None) -> None:
        """``workers`` threads loop like ``training.worker`` (claim, run) until no job is left."""

        def loop(name: str) -> None:
            runner = self.runner(name, per_tenant_concurrency)
            while True:
                model_id = runner.claim_next()
                if model_id is not None:
                    assert runner.run(model_id) == "succeeded"
                elif not self.count("queued") and not self.count("running"):
                    return
                else:
                    time.sleep(0.01)  # the jobs left belong to tenants at their limit

        with ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(loop, f"w{i}") for i in range(workers)]:
                future.result(timeout=120)

    def count(self, status: str, tenant: str | None = None) -> int:
        query = select(func.count()).select_from(Model).where(Model.status == status)
        if tenant is not None:
            query = query.where(Model.tenant_id == self.tenants[tenant])
        with session_scope(self.engine) as session:
            return int(session.scalar(query) or 0)

    def runs(self) -> list[tuple[str, datetime, datetime]]:
        """(tenant name, started, finished) of every job, in the order they started."""
        names = {tenant_id: name for name, tenant_id in self.tenants.items()}
        with session_scope(self.engine) as session:
            rows = session.execute(
                select(Model.tenant_id, Model.started_at, Model.finished_at).order_by(
                    Model.started_at
                )
            ).all()
        assert all(started and finished for _, started, finished in rows), rows
        return [(names[tenant_id], started, finished) for tenant_id, started, finished in rows]


@pytest.fixture(params=DB_KINDS)
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Queue]:
    url = make_db_url(request.param, tmp_path, request)
    if request.param == "sqlite":
        from core.db import upgrade

        upgrade(url)
    engine = get_engine(url)
    yield Queue(engine, LocalStore(tmp_path / "artifacts"), tmp_path / "cache", {}, {})
    engine.dispose()


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of the intervals that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = now = 0
    for _, step in events:  # an end sorts before a start at the same instant
        now += step
        best = max(best, now)
    return best


@pytest.mark.parametrize(("workers", "limit"), [(1, 1), (2, 2), (2, None)])
def test_a_tenants_backlog_does_not_hold_another_tenants_job(
    queue: Queue, workers: int, limit: int | None
) -> None:
    queue.tenant("acme")
    queue.tenant("bravo")
    queue.submit("acme", 10, QUICK)
    queue.submit("bravo", 1, QUICK)  # queued after all ten of acme's

    queue.work(workers, per_tenant_concurrency=limit)

    order = [tenant for tenant, _, _ in queue.runs()]
    assert len(order) == 11 and queue.count("succeeded") == 11
    # Oldest-first would have started bravo's job eleventh.
    assert order.index("bravo") <= workers, order
    if workers == 1:
        assert order[:2] == ["acme", "bravo"], order


def test_tenants_are_served_in_turn(queue: Queue) -> None:
    for name in ("acme", "bravo", "carol"):
        queue.tenant(name)
    queue.submit("acme", 3, QUICK)
    queue.submit("bravo", 2, QUICK)
    queue.submit("carol", 1, QUICK)

    queue.work(1, per_tenant_concurrency=None)

    order = [tenant for tenant, _, _ in queue.runs()]
    assert order == ["acme", "bravo", "carol", "acme", "bravo", "acme"]


def test_per_tenant_concurrency_holds_with_two_workers(queue: Queue) -> None:
    queue.tenant("acme")
    queue.tenant("bravo")
    queue.submit("acme", 4, OVERLAPPING)
    queue.submit("bravo", 2, OVERLAPPING)

    queue.work(2, per_tenant_concurrency=1)

    runs = queue.runs()
    assert queue.count("succeeded") == 6
    for tenant in ("acme", "bravo"):
        mine = [(start, end) for name, start, end in runs if name == tenant]
        assert most_at_once(mine) == 1, f"{tenant} ran more than one job at once: {mine}"
    # The second worker was not idle: the two tenants' jobs ran side by side.
    assert most_at_once([(start, end) for _, start, end in runs]) == 2
    # (Which tenant goes third depends on whose job ends first: a worker never waits for a
    # tenant at its limit while another tenant has work.)
    assert sorted(tenant for tenant, _, _ in runs[:2]) == ["acme", "bravo"]


def test_concurrent_claims_never_exceed_the_tenant_limit(queue: Queue) -> None:
    queue.tenant("acme")
    queue.tenant("bravo")
    acme = queue.submit("acme", 8, QUICK)
    bravo = queue.submit("bravo", 8, QUICK)
    start = threading.Barrier(6)

    def claim(name: str) -> list[str]:
        start.wait()
        mine = []
        for _ in range(4):
            model_id = claim_next_job(queue.engine, worker=name, per_tenant_concurrency=2)
            if model_id is not None:
                mine.append(model_id)
        return mine

    with ThreadPoolExecutor(6) as pool:
        claims = [f.result(timeout=60) for f in [pool.submit(claim, f"w{i}") for i in range(6)]]

    claimed = [model_id for mine in claims for model_id in mine]
    assert len(claimed) == len(set(claimed)) == 4, claims
    assert (queue.count("running", "acme"), queue.count("running", "bravo")) == (2, 2)
    # oldest first within a tenant
    assert sorted(claimed) == sorted(acme[:2] + bravo[:2])


def test_a_claim_not_yet_committed_holds_the_tenants_slot(queue: Queue) -> None:
    """A worker whose claim is slow to commit: a second worker claiming meanwhile must wait
    for it and see its job running, not take a second job of the same tenant."""
    queue.tenant("acme")
    queue.tenant("bravo")
    first, second = queue.submit("acme", 2, QUICK)
    (other,) = queue.submit("bravo", 1, QUICK)
    claimed_once = threading.Event()

    def slow_commit(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name == "slow" and statement.startswith("UPDATE models"):
            claimed_once.set()
            time.sleep(0.5)  # the claim's transaction stays open

    event.listen(queue.engine, "after_cursor_execute", slow_commit)
    try:
        results: dict[str, str | None] = {}

        def claim(name: str) -> None:
            results[name] = claim_next_job(queue.engine, worker=name, per_tenant_concurrency=1)

        slow = threading.Thread(target=claim, args=("slow",), name="slow")
        slow.start()
        assert claimed_once.wait(10)
        claim("fast")
        slow.join(10)
    finally:
        event.remove(queue.engine, "after_cursor_execute", slow_commit)

    assert results == {"slow": first, "fast": other}
    assert queue.count("running", "acme") == 1 and queue.count("queued", "acme") == 1
    assert second not in results.values()


def test_workers_started_by_the_server_get_the_per_tenant_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LocalQueue`` starts workers with ``settings.worker_env()``; a worker builds its settings
    from that environment, so an operator's limit reaches every worker."""
    server = make_settings(tmp_path, "sqlite://", queue={"per_tenant_concurrency": 3})
    for name, value in server.worker_env().items():
        monkeypatch.setenv(name, value)

    assert Settings().queue.per_tenant_concurrency == 3
