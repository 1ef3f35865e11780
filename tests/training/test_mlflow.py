"""Train jobs logged to MLflow (``training.tracking``), against a real MLflow tracking store:
MLflow's SQL store on a SQLite file (``sqlite:///…``, what ``mlflow server`` runs on), read back
with ``MlflowClient``. Jobs run in-process with the ``toy-bow`` backend on a real (migrated)
SQLite database; a failing, refusing and a hanging MLflow never fail or hold up a job.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from core.backends import BackendContext
from core.db import get_engine, session_scope, upgrade
from core.metrics import counters
from core.settings import MlflowSettings
from core.storage import LocalStore
from core.tables import Model
from core.tenants import create_tenant
from tests.support.data import intent_csv
from tests.support.toy_backend import ToyBowBackend  # noqa: F401 - registers toy-bow
from training.cards import model_card, render_markdown
from training.datasets.importers import Limits
from training.datasets.service import create_dataset, run_import
from training.jobs import JobRunner
from training.registry import create_model
from training.tracking import MlflowTracker, metric_key

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (mlflow-skinny) is not installed")
from mlflow.tracking import MlflowClient  # noqa: E402

LIMITS = Limits(max_examples=1000, max_labels=100, max_text_chars=500)


@dataclass
class Env:
    engine: Engine
    store: LocalStore
    tenant_id: str
    dataset_id: str
    tmp: Path

    def train(self, tracker: MlflowTracker | None, **params: Any) -> tuple[str, str]:
        """Queue, claim and run one toy-bow job; (model id, final status)."""
        with session_scope(self.engine) as session:
            model_id = create_model(
                session,
                tenant_id=self.tenant_id,
                dataset_id=self.dataset_id,
                name="greeter",
                backend="toy-bow",
                params=params,
            ).id
        runner = JobRunner(
            engine=self.engine,
            store=self.store,
            context=BackendContext(cache_dir=self.tmp / "cache"),
            worker_name="w1",
            report_interval=0.0,
            tracker=tracker,
        )
        assert runner.claim_next() == model_id
        return model_id, runner.run(model_id)

    def model(self, model_id: str) -> Model:
        with session_scope(self.engine) as session:
            model = session.get(Model, model_id)
            assert model is not None
            session.expunge(model)
            return model


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    upgrade(url)
    engine = get_engine(url)
    store = LocalStore(tmp_path / "artifacts")
    with session_scope(engine) as session:
        tenant_id = create_tenant(session, "acme")[0].id
        dataset_id = create_dataset(
            session,
            store,
            tenant_id=tenant_id,
            name="intents",
            dataset_type="text-intent",
            filename="data.csv",
            data=intent_csv(),
        ).id
    assert run_import(engine, store, dataset_id, LIMITS).status == "ready"
    yield Env(engine, store, tenant_id, dataset_id, tmp_path)
    engine.dispose()


@pytest.fixture
def tracking(tmp_path: Path) -> tuple[str, MlflowClient]:
    """A real MLflow store; the experiment ``parley/acme`` keeps its artifacts under tmp."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("parley/acme", artifact_location=(tmp_path / "mlruns").as_uri())
    return uri, client


@pytest.fixture
def events() -> Iterator[list[str]]:
    """Parley's log lines at WARNING and above while the test runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("parley")
    handler, level = Keep(logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level or logging.WARNING, logging.WARNING))
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def only_run(client: MlflowClient, experiment: str) -> Any:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_a_succeeded_job_logs_params_epochs_final_metrics_and_its_card(
    env: Env, tracking: tuple[str, MlflowClient], tmp_path: Path
) -> None:
    uri, client = tracking
    model_id, status = env.train(MlflowTracker(uri), epochs=7)
    assert status == "succeeded"
    model = env.model(model_id)
    assert model.metrics is not None and model.learning_curve is not None

    run = only_run(client, "parley/acme")
    assert run.info.run_name == "greeter"
    assert run.info.status == "FINISHED"
    assert run.data.params["backend"] == "toy-bow"
    assert run.data.params["dataset_id"] == env.dataset_id
    assert run.data.params["epochs"] == "7"
    assert run.data.params["num_labels"] == str(len(model.labels or []))
    assert run.data.tags["parley.model_id"] == model_id
    assert run.data.tags["parley.tenant_id"] == env.tenant_id
    assert run.data.tags["parley.device"] == "cpu"

    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [p["epoch"] for p in model.learning_curve]
    assert len(history) == 7
    assert [m.value for m in history] == pytest.approx(
        [p["train_loss"] for p in model.learning_curve]
    )
    accuracy_steps = client.get_metric_history(run.info.run_id, "validation_accuracy")
    assert len(accuracy_steps) == 7

    assert run.data.metrics["accuracy"] == pytest.approx(model.metrics["accuracy"])
    assert run.data.metrics["macro_f1"] == pytest.approx(model.metrics["macro_f1"])
    for label, row in model.metrics["per_label"].items():
        assert run.data.metrics[metric_key(f"f1.{label}")] == pytest.approx(row["f1"])
    threshold = model.metrics["out_of_scope"]["threshold"]
    assert run.data.metrics["out_of_scope_threshold"] == pytest.approx(threshold)

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"model_card.md", "model_card.json"}
    md = Path(client.download_artifacts(run.info.run_id, "model_card.md", str(tmp_path / "dl")))
    with session_scope(env.engine) as session:
        row = session.get(Model, model_id)
        assert row is not None
        expected = render_markdown(model_card(session, row))
    assert md.read_text() == expected
    card = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "model_card.json", str(tmp_path / "dl"))
        ).read_text()
    )
    assert card["id"] == model_id
    assert card["metrics"]["accuracy"] == pytest.approx(model.metrics["accuracy"])
    # the run spans the job's own times
    assert run.info.start_time <= run.info.end_time


def test_a_failed_job_is_a_failed_run_with_its_message_and_no_card(
    env: Env, tracking: tuple[str, MlflowClient]
) -> None:
    uri, client = tracking
    model_id, status = env.train(MlflowTracker(uri), fail=True)
    assert status == "failed"

    run = only_run(client, "parley/acme")
    assert run.info.status == "FAILED"
    assert "toy failure" in run.data.tags["parley.failure_message"]
    assert run.data.params["fail"] == "true"
    assert client.list_artifacts(run.info.run_id) == []
    assert env.model(model_id).failure_message == run.data.tags["parley.failure_message"]


def test_the_experiment_is_created_per_tenant_on_first_use(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns) lands in tmp
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    tracker = MlflowTracker(uri, experiment="team/{tenant}/{tenant_id}")
    env.train(tracker)
    env.train(tracker)  # the second job finds the experiment the first one made

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"team/acme/{env.tenant_id}")
    assert experiment is not None
    assert len(client.search_runs([experiment.experiment_id])) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_refusing_connections_never_fails_the_job(
    env: Env, events: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, not retried
    before = counters.get("mlflow.log_failed")
    tracker = MlflowTracker(f"http://127.0.0.1:{_closed_port()}", timeout_s=60)
    started = time.monotonic()
    model_id, status = env.train(tracker)

    assert status == "succeeded"
    assert env.model(model_id).status == "succeeded"
    assert time.monotonic() - started < 30  # the error ended it, not the 60 s timeout
    assert counters.get("mlflow.log_failed") == before + 1
    failed = [line for line in events if line.startswith("mlflow.log_failed")]
    assert len(failed) == 1 and model_id in failed[0]
    assert "did not answer" not in failed[0]


def test_a_hanging_mlflow_server_is_given_up_on_after_timeout_s(
    env: Env, events: list[str]
) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts connections (the kernel does) and never answers
    stop = threading.Event()
    try:
        tracker = MlflowTracker(f"http://127.0.0.1:{server.getsockname()[1]}", timeout_s=1.0)
        started = time.monotonic()
        _, status = env.train(tracker)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        server.close()
    assert status == "succeeded"
    assert elapsed < 10
    assert any("did not answer within 1.0 s" in line for line in events)


def test_the_tracker_is_off_without_a_tracking_uri_and_built_from_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "x")  # so that the test's end restores what was there
        monkeypatch.delenv(name)
    assert MlflowTracker.from_settings(MlflowSettings()) is None
    tracker = MlflowTracker.from_settings(
        MlflowSettings(tracking_uri="http://mlflow:5000", experiment="x/{tenant}", timeout_s=3)
    )
    assert tracker is not None
    assert (tracker.tracking_uri, tracker.experiment, tracker.timeout_s) == (
        "http://mlflow:5000",
        "x/{tenant}",
        3,
    )
    # MLflow's own retries and request timeout stay within the tracker's time
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"


def test_a_worker_process_gets_the_tracker_from_its_environment(tmp_path: Path) -> None:
    from tests.conftest import make_settings
    from training.worker import make_runner

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    server = make_settings(tmp_path, f"sqlite:///{tmp_path / 'w.db'}", mlflow={"tracking_uri": uri})
    env = server.worker_env()
    assert env["PARLEY_MLFLOW__TRACKING_URI"] == uri
    runner = make_runner(server, worker_name="w", threads=1)
    try:
        assert runner.tracker is not None and runner.tracker.tracking_uri == uri
    finally:
        runner.engine.dispose()
    plain = make_runner(
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'w.db'}"), worker_name="w", threads=1
    )
    try:
        assert plain.tracker is None
    finally:
        plain.engine.dispose()
