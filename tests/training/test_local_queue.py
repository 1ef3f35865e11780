"""The embedded train queue for real: the gateway app, its worker subprocess and the real
``embedding-head`` backend. A worker killed mid-job is restarted and its job re-queued (or failed
after ``max_attempts``); a job a crash left ``running`` is re-queued when the server starts. A
worker idle after a job is replaced by one without PyTorch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from bot_gateway.app import create_app
from core.db import get_engine, session_scope, upgrade, utcnow
from core.storage import open_store
from core.tables import Model
from core.tenants import create_tenant
from tests.conftest import make_settings
from tests.support.data import intent_csv
from training.datasets.importers import Limits
from training.datasets.service import create_dataset, run_import
from training.queue.base import worker_name
from training.registry import create_model

pytestmark = pytest.mark.slow

OPERATOR = {"Authorization": "Bearer operator-secret"}
# Seconds of training (validation every epoch): long enough to be caught mid-run.
LONG = {"epochs": 500}


@contextmanager
def gateway(tmp_path: Path, **overrides: Any) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'p.db'}", **overrides)
    with TestClient(create_app(settings, warm_encoder=False)) as client:
        yield client


def tenant_headers(client: TestClient) -> dict[str, str]:
    r = client.post("/v1/tenants", json={"name": "acme"}, headers=OPERATOR)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


def upload(client: TestClient, headers: dict[str, str]) -> str:
    r = client.post(
        "/v1/datasets",
        files={"file": ("data.csv", intent_csv())},
        data={"name": "intents", "type": "text-intent"},
        headers=headers,
    )
    assert r.status_code in (200, 201), r.text
    assert r.json()["status"] == "ready", r.text
    return str(r.json()["id"])


def train(client: TestClient, headers: dict[str, str], dataset_id: str, **params: Any) -> str:
    r = client.post(
        "/v1/models", json={"dataset_id": dataset_id, "params": params}, headers=headers
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def wait_model(
    client: TestClient,
    headers: dict[str, str],
    model_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 90,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        model = client.get(f"/v1/models/{model_id}", headers=headers).json()
        if until(model):
            return model
        assert time.monotonic() < deadline, f"model still {model['status']} ({model['progress']})"
        time.sleep(0.05)


def finished(model: dict[str, Any]) -> bool:
    return model["status"] in ("succeeded", "failed", "cancelled")


def attempts(client: TestClient, model_id: str) -> int:
    with session_scope(client.app.state.gateway.engine) as session:  # type: ignore[attr-defined]
        record = session.get(Model, model_id)
        assert record is not None
        return record.attempts


def kill_worker_mid_job(
    client: TestClient, headers: dict[str, str], model_id: str
) -> tuple[str, int]:
    """SIGKILL the only worker while it trains ``model_id``; (worker name, its old pid)."""
    model = wait_model(
        client, headers, model_id, lambda m: m["status"] != "queued" and m["progress"] > 0
    )
    assert model["status"] == "running", model
    ((name, proc),) = client.app.state.gateway.queue._procs.items()  # type: ignore[attr-defined]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return name, proc.pid


def wait_restarted(client: TestClient, name: str, old_pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    procs = client.app.state.gateway.queue._procs  # type: ignore[attr-defined]
    while name not in procs or procs[name].pid == old_pid:
        assert time.monotonic() < deadline, "the watcher did not restart the killed worker"
        time.sleep(0.05)
    assert procs[name].poll() is None


def test_killed_worker_is_restarted_and_its_job_requeued_then_completed(tmp_path: Path) -> None:
    with gateway(tmp_path) as client:
        headers = tenant_headers(client)
        model_id = train(client, headers, upload(client, headers), **LONG)

        name, old_pid = kill_worker_mid_job(client, headers, model_id)

        requeued = wait_model(client, headers, model_id, lambda m: m["status"] != "running")
        assert (requeued["status"], requeued["progress"]) == ("queued", 0.0), requeued
        wait_restarted(client, name, old_pid)
        done = wait_model(client, headers, model_id, finished)
        assert done["status"] == "succeeded", done["failure_message"]
        assert attempts(client, model_id) == 2
        assert done["progress"] == 1.0 and done["metrics"]["accuracy"] is not None
        r = client.post(
            f"/v1/models/{model_id}/predict", json={"text": "hello there"}, headers=headers
        )
        assert r.status_code == 200, r.text


def test_killed_worker_job_fails_after_max_attempts(tmp_path: Path) -> None:
    with gateway(tmp_path, queue={"max_attempts": 1}) as client:
        headers = tenant_headers(client)
        dataset_id = upload(client, headers)
        model_id = train(client, headers, dataset_id, **LONG)

        name, old_pid = kill_worker_mid_job(client, headers, model_id)

        failed = wait_model(client, headers, model_id, finished)
        assert failed["status"] == "failed"
        assert "interrupted" in failed["failure_message"]
        assert "train again" in failed["failure_message"]
        assert attempts(client, model_id) == 1
        # The restarted worker takes the next job.
        wait_restarted(client, name, old_pid)
        after = train(client, headers, dataset_id, epochs=5)
        done = wait_model(client, headers, after, finished)
        assert done["status"] == "succeeded", done["failure_message"]


def test_job_left_running_by_a_crash_is_requeued_at_startup(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    engine = get_engine(url)
    store = open_store(tmp_path / "artifacts")
    with session_scope(engine) as session:
        tenant, key = create_tenant(session, "acme")
        tenant_id, headers = tenant.id, {"Authorization": f"Bearer {key.secret}"}
        dataset_id = create_dataset(
            session,
            store,
            tenant_id=tenant_id,
            name="intents",
            dataset_type="text-intent",
            filename="data.csv",
            data=intent_csv(),
        ).id
    run_import(engine, store, dataset_id, Limits(1000, 100, 500))
    with session_scope(engine) as session:
        model_id = create_model(
            session, tenant_id=tenant_id, dataset_id=dataset_id, params={"epochs": 10}
        ).id
    # What a server killed mid-job leaves behind: its worker (named after the dead server's
    # pid) took the job, reported some progress, and stopped beating.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    long_ago = utcnow() - timedelta(minutes=10)
    with session_scope(engine) as session:
        session.execute(
            update(Model)
            .where(Model.id == model_id)
            .values(
                status="running",
                attempts=1,
                progress=0.3,
                worker=worker_name(dead.pid, 0),
                started_at=long_ago,
                heartbeat_at=long_ago,
            )
        )

    with gateway(tmp_path) as client:
        at_start = client.get(f"/v1/models/{model_id}", headers=headers).json()
        assert at_start["status"] != "running" or attempts(client, model_id) == 2, at_start
        done = wait_model(client, headers, model_id, finished)
        assert done["status"] == "succeeded", done["failure_message"]
        assert attempts(client, model_id) == 2


def _maps_torch(pid: int) -> bool:
    """Whether process ``pid`` has PyTorch's library mapped (imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_a_worker_idle_after_a_job_is_replaced_by_one_without_torch(tmp_path: Path) -> None:
    with gateway(tmp_path, queue={"recycle_idle_s": 1.0}) as client:
        headers = tenant_headers(client)
        dataset_id = upload(client, headers)
        first = wait_model(client, headers, train(client, headers, dataset_id, epochs=3), finished)
        assert first["status"] == "succeeded", first["failure_message"]
        procs = client.app.state.gateway.queue._procs  # type: ignore[attr-defined]
        ((name, trained),) = procs.items()
        trained.wait(timeout=30)  # it exits by itself, idle
        wait_restarted(client, name, trained.pid)
        time.sleep(1.0)  # the fresh worker has started (and is idle)
        assert not _maps_torch(procs[name].pid)
        again = wait_model(client, headers, train(client, headers, dataset_id, epochs=3), finished)
        assert again["status"] == "succeeded", again["failure_message"]
        assert attempts(client, again["id"]) == 1
