"""Train jobs in-process: claiming, running, failing, cancelling and recovering, on a real
(migrated) SQLite database and a local artifact store, with the ``toy-bow`` backend."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from core.backends import BackendContext, load_model
from core.db import get_engine, session_scope, upgrade, utcnow
from core.errors import InvalidInput
from core.evaluation import classification_metrics, stratified_split
from core.storage import LocalStore, sha256_dir
from core.tables import Alias, Model
from core.tenants import create_tenant
from tests.support.data import INTENTS, intent_csv, intent_rows
from tests.support.toy_backend import ToyBowBackend, ToyBowModel
from training.datasets.importers import Limits
from training.datasets.service import create_dataset, delete_dataset, run_import, snapshot
from training.jobs import JobRunner, artifact_key
from training.queue.base import recover_interrupted, worker_name
from training.registry import cancel_model, create_model, resolve

LIMITS = Limits(max_examples=1000, max_labels=100, max_text_chars=500)
LABELS = sorted(INTENTS)


@dataclass
class Env:
    engine: Engine
    store: LocalStore
    tenant_id: str
    dataset_id: str
    cache_dir: Path

    def runner(self, name: str = "w1", **kwargs: Any) -> JobRunner:
        kwargs.setdefault("report_interval", 0.0)
        return JobRunner(
            engine=self.engine,
            store=self.store,
            context=BackendContext(cache_dir=self.cache_dir),
            worker_name=name,
            **kwargs,
        )

    def dataset(self, data: bytes, name: str = "more", filename: str = "data.csv") -> str:
        with session_scope(self.engine) as session:
            dataset_id = create_dataset(
                session,
                self.store,
                tenant_id=self.tenant_id,
                name=name,
                dataset_type="text-intent",
                filename=filename,
                data=data,
            ).id
        assert run_import(self.engine, self.store, dataset_id, LIMITS).status == "ready"
        return dataset_id

    def create(
        self,
        params: dict[str, Any] | None = None,
        *,
        alias: str | None = None,
        dataset_id: str | None = None,
    ) -> str:
        with session_scope(self.engine) as session:
            return create_model(
                session,
                tenant_id=self.tenant_id,
                dataset_id=dataset_id or self.dataset_id,
                backend="toy-bow",
                params=params,
                alias=alias,
            ).id

    def model(self, model_id: str) -> Model:
        with session_scope(self.engine) as session:
            model = session.get(Model, model_id)
            assert model is not None
            return model

    def alias(self, name: str) -> str | None:
        with session_scope(self.engine) as session:
            row = session.get(Alias, (self.tenant_id, name))
            return None if row is None else row.model_id

    def set(self, model_id: str, **values: Any) -> None:
        with session_scope(self.engine) as session:
            session.execute(update(Model).where(Model.id == model_id).values(**values))

    def claim_and_run(self, runner: JobRunner, expected: str) -> str:
        model_id = runner.claim_next()
        assert model_id == expected
        return runner.run(model_id)

    def load(self, model_id: str) -> ToyBowModel:
        key = self.model(model_id).artifact_key
        assert key is not None
        directory = self.store.local_dir(key)
        return ToyBowBackend(BackendContext(cache_dir=self.cache_dir)).load(directory)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    upgrade(url)
    engine = get_engine(url)
    store = LocalStore(tmp_path / "artifacts")
    with session_scope(engine) as session:
        tenant, _ = create_tenant(session, "acme")
        tenant_id = tenant.id
    e = Env(engine, store, tenant_id, "", tmp_path / "cache")
    e.dataset_id = e.dataset(intent_csv(), name="intents")
    yield e
    engine.dispose()


# --- claiming ---------------------------------------------------------------------------------


def test_claim_takes_the_oldest_queued_job_once(env: Env) -> None:
    first, second = env.create(), env.create()
    one, two = env.runner("w1"), env.runner("w2")

    assert one.claim_next() == first
    assert two.claim_next() == second
    assert one.claim_next() is None
    assert two.claim_next() is None
    for model_id, worker in ((first, "w1"), (second, "w2")):
        record = env.model(model_id)
        assert (record.status, record.worker, record.attempts) == ("running", worker, 1)
        assert record.started_at is not None and record.progress == 0.0


def test_claim_skips_jobs_that_are_not_queued(env: Env) -> None:
    cancelled, queued = env.create(), env.create()
    with session_scope(env.engine) as session:
        cancel_model(session, env.tenant_id, cancelled)

    assert env.runner().claim_next() == queued
    assert env.model(cancelled).status == "cancelled"


def test_concurrent_runners_claim_every_job_exactly_once(env: Env) -> None:
    ids = [env.create() for _ in range(12)]
    claims: dict[str, list[str]] = {}
    start = threading.Barrier(4)

    def claim_all(name: str) -> None:
        runner = env.runner(name)
        mine = claims.setdefault(name, [])
        start.wait()
        while True:
            model_id = runner.claim_next()
            if model_id is not None:
                mine.append(model_id)
                continue
            with session_scope(env.engine) as session:
                left = session.scalar(
                    select(func.count()).select_from(Model).where(Model.status == "queued")
                )
            if not left:
                return

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(claim_all, f"w{i}") for i in range(4)]:
            future.result(timeout=60)

    claimed = [model_id for mine in claims.values() for model_id in mine]
    assert sorted(claimed) == sorted(ids), "every job claimed, none twice"
    for name, mine in claims.items():
        for model_id in mine:
            record = env.model(model_id)
            assert (record.worker, record.attempts, record.status) == (name, 1, "running")


# --- a successful run -------------------------------------------------------------------------


def test_run_stores_metrics_curve_artifact_and_hashes(env: Env) -> None:
    model_id = env.create({"epochs": 7})
    runner = env.runner()

    assert env.claim_and_run(runner, model_id) == "succeeded"

    record = env.model(model_id)
    assert record.status == "succeeded" and record.progress == 1.0
    assert record.failure_message is None and record.finished_at is not None
    assert record.labels == LABELS
    m = record.metrics
    assert m is not None
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
    assert set(m["per_label"]) == set(LABELS)
    assert m["confusion_matrix"]["labels"] == LABELS
    assert sum(map(sum, m["confusion_matrix"]["matrix"])) == m["num_evaluated"] == 8
    assert m["train_examples"] == 24 and m["refit_on_all"] is True
    curve = record.learning_curve
    assert curve is not None
    assert [p["epoch"] for p in curve] == list(range(1, 8))
    assert all(p["validation_accuracy"] is not None for p in curve)
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]

    key = artifact_key(env.tenant_id, model_id, 1)  # the first attempt's own folder
    assert record.artifact_key == key == f"tenants/{env.tenant_id}/models/{model_id}/1"
    assert record.artifact_sha256 == sha256_dir(env.store.local_dir(key))
    with session_scope(env.engine) as session:
        expected_hash = snapshot(session, env.tenant_id, env.dataset_id).content_hash
    assert record.dataset_hash == expected_hash


def test_stored_model_predicts_and_was_refit_on_all_examples(env: Env) -> None:
    model_id = env.create({"epochs": 200})
    env.claim_and_run(env.runner(), model_id)

    model = env.load(model_id)

    assert model.labels == LABELS
    assert model.num_examples == len(intent_rows())
    assert model.predict(["where is my parcel?", "hello there", "i want a refund", "bye now"]) == [
        "track_order",
        "greet",
        "refund",
        "goodbye",
    ]


def test_without_refit_the_stored_model_is_the_evaluated_one(env: Env) -> None:
    model_id = env.create({"epochs": 20, "refit_on_all": False})
    env.claim_and_run(env.runner(), model_id)

    record = env.model(model_id)
    model = env.load(model_id)

    assert record.metrics is not None and record.metrics["refit_on_all"] is False
    assert model.num_examples == record.metrics["train_examples"] == 24
    assert record.learning_curve is not None and len(record.learning_curve) == 20
    # The reported metrics describe the stored model on the examples it never saw.
    rows = intent_rows()
    _, held = stratified_split([label for _, label in rows], 0.8, seed=0)
    predicted = model.predict([rows[i][0] for i in held])
    expected = classification_metrics([rows[i][1] for i in held], predicted, LABELS)
    assert record.metrics["confusion_matrix"] == expected["confusion_matrix"]
    assert record.metrics["accuracy"] == pytest.approx(expected["accuracy"])


def test_the_model_learns_from_the_data_not_a_fixed_answer(env: Env) -> None:
    swap = {
        "greet": "goodbye",
        "goodbye": "greet",
        "refund": "track_order",
        "track_order": "refund",
    }
    swapped = env.dataset(intent_csv([(t, swap[lab]) for t, lab in intent_rows()]), "swapped")
    model_id = env.create({"epochs": 200}, dataset_id=swapped)
    env.claim_and_run(env.runner(), model_id)

    predicted = env.load(model_id).predict(["hello there", "where is my parcel?"])

    assert predicted == ["goodbye", "refund"]


def test_progress_only_moves_forward_and_ends_at_one(env: Env) -> None:
    model_id = env.create({"epochs": 10})
    runner = env.runner()
    seen: list[float] = []
    report = runner.report

    def recording(mid: str, fraction: float) -> None:
        seen.append(fraction)
        report(mid, fraction)

    runner.report = recording  # type: ignore[method-assign]
    env.claim_and_run(runner, model_id)

    assert seen == sorted(seen), seen
    assert seen[-1] == 1.0 and len(seen) >= 20  # featurize + 10 epochs + 10 refit epochs


def test_alias_points_at_the_model_after_success_and_moves_to_the_next(env: Env) -> None:
    first = env.create(alias="prod")
    assert env.alias("prod") is None, "the alias waits for the model to succeed"
    env.claim_and_run(env.runner(), first)
    assert env.alias("prod") == first

    second = env.create(alias="prod")
    env.claim_and_run(env.runner(), second)

    assert env.alias("prod") == second
    with session_scope(env.engine) as session:
        assert resolve(session, env.tenant_id, "prod").id == second


# --- failures ---------------------------------------------------------------------------------


def test_backend_error_fails_the_job_and_the_runner_runs_the_next(env: Env) -> None:
    good = env.create(alias="prod")
    env.claim_and_run(env.runner(), good)
    broken, after = env.create({"fail": True}, alias="prod"), env.create()
    runner = env.runner()

    assert env.claim_and_run(runner, broken) == "failed"
    assert env.claim_and_run(runner, after) == "succeeded"

    record = env.model(broken)
    assert record.status == "failed" and record.finished_at is not None
    assert record.failure_message is not None
    assert "RuntimeError" in record.failure_message and "toy failure" in record.failure_message
    assert record.artifact_key is None and record.metrics is None
    assert not env.store.exists(artifact_key(env.tenant_id, broken))
    assert env.alias("prod") == good, "a failed model takes no alias"


def test_job_whose_dataset_was_deleted_fails_naming_the_dataset(env: Env) -> None:
    model_id = env.create()
    with session_scope(env.engine) as session:
        delete_dataset(session, env.store, env.tenant_id, env.dataset_id)

    assert env.claim_and_run(env.runner(), model_id) == "failed"

    message = env.model(model_id).failure_message
    assert message is not None and env.dataset_id in message and "not found" in message


def test_job_for_an_unknown_backend_fails_naming_the_known_ones(env: Env) -> None:
    model_id = env.create()
    env.set(model_id, backend="uninstalled-backend")

    assert env.claim_and_run(env.runner(), model_id) == "failed"

    message = env.model(model_id).failure_message
    assert message is not None and "uninstalled-backend" in message and "toy-bow" in message


# --- cancellation -----------------------------------------------------------------------------


def wait_progress(env: Env, model_id: str, above: float, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while env.model(model_id).progress <= above:
        assert time.monotonic() < deadline, f"progress stayed at {env.model(model_id).progress}"
        time.sleep(0.01)


def test_cancel_during_training_stops_the_job(env: Env) -> None:
    good = env.create(alias="prod")
    env.claim_and_run(env.runner(), good)
    slow = env.create({"epochs": 100, "sleep_per_epoch": 0.05}, alias="prod")
    runner = env.runner()
    assert runner.claim_next() == slow

    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(runner.run, slow)
        wait_progress(env, slow, 0.62)  # training has begun (featurizing ends at 0.6)
        with session_scope(env.engine) as session:
            cancel_model(session, env.tenant_id, slow)
        cancelled_at = time.monotonic()
        assert result.result(timeout=10) == "cancelled"
    assert time.monotonic() - cancelled_at < 3, "stops at its next progress report (~5 s left)"

    record = env.model(slow)
    assert record.status == "cancelled" and record.progress < 1.0
    assert record.artifact_key is None and record.artifact_sha256 is None
    assert record.metrics is None and record.failure_message is None
    assert not env.store.exists(artifact_key(env.tenant_id, slow))
    assert env.alias("prod") == good

    after = env.create()
    assert env.claim_and_run(runner, after) == "succeeded"


def test_cancel_while_the_artifact_is_stored_leaves_no_files(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = env.create()
    put_dir = env.store.put_dir

    def cancel_then_put(prefix: str, directory: Path) -> None:
        with session_scope(env.engine) as session:
            cancel_model(session, env.tenant_id, model_id)
        put_dir(prefix, directory)

    monkeypatch.setattr(env.store, "put_dir", cancel_then_put)

    assert env.claim_and_run(env.runner(), model_id) == "cancelled"
    assert env.model(model_id).status == "cancelled"
    assert not env.store.exists(artifact_key(env.tenant_id, model_id, 1))
    assert env.store.size_of(artifact_key(env.tenant_id, model_id)) == 0


# --- recovering interrupted jobs --------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


def test_job_of_a_dead_worker_process_is_requeued_and_runs_again(env: Env) -> None:
    model_id = env.create()
    assert env.runner(worker_name(dead_pid())).claim_next() == model_id
    env.set(model_id, progress=0.4)

    assert recover_interrupted(env.engine, max_attempts=2) == 1

    record = env.model(model_id)
    assert (record.status, record.progress, record.worker) == ("queued", 0.0, None)
    assert env.claim_and_run(env.runner("w2"), model_id) == "succeeded"
    assert env.model(model_id).attempts == 2


def test_a_half_written_folder_of_an_interrupted_attempt_is_removed_when_a_later_one_succeeds(
    env: Env,
) -> None:
    """A worker killed while storing leaves attempt 1's folder half-written: nothing reads it,
    and it would count against the tenant's storage quota for as long as the model lives."""
    model_id = env.create()
    assert env.runner(worker_name(dead_pid())).claim_next() == model_id
    first = artifact_key(env.tenant_id, model_id, 1)
    env.store.put_bytes(f"{first}/weights.partial", b"half of it")
    assert recover_interrupted(env.engine, max_attempts=2) == 1

    assert env.claim_and_run(env.runner("w2"), model_id) == "succeeded"
    assert env.model(model_id).artifact_key == artifact_key(env.tenant_id, model_id, 2)
    assert not env.store.exists(first)
    assert env.load(model_id).labels  # the winner's files are intact


def test_job_of_a_live_worker_process_is_left_running(env: Env) -> None:
    model_id = env.create()
    assert env.runner(worker_name(os.getpid())).claim_next() == model_id
    env.set(model_id, heartbeat_at=ago(30))  # alive and beating

    assert recover_interrupted(env.engine, max_attempts=2, stale_after=60) == 0

    assert env.model(model_id).status == "running"


def test_job_on_another_host_is_recovered_once_its_heartbeat_is_stale(env: Env) -> None:
    beating, silent = env.create(), env.create()
    for model_id in (beating, silent):
        env.set(model_id, status="running", attempts=1, worker="elsewhere.example/4242/0")
    env.set(beating, heartbeat_at=ago(5), started_at=ago(600))
    env.set(silent, heartbeat_at=ago(120), started_at=ago(600))

    assert recover_interrupted(env.engine, max_attempts=2, stale_after=60) == 1

    assert env.model(beating).status == "running"
    assert env.model(silent).status == "queued"


def test_job_interrupted_max_attempts_times_fails_saying_so(env: Env) -> None:
    model_id = env.create()
    env.set(model_id, status="running", attempts=2, worker=worker_name(dead_pid()), progress=0.4)

    assert recover_interrupted(env.engine, max_attempts=2) == 1

    record = env.model(model_id)
    assert record.status == "failed" and record.finished_at is not None
    assert record.failure_message is not None
    assert "interrupted twice" in record.failure_message
    assert "train again" in record.failure_message
    assert env.runner().claim_next() is None


def test_interrupted_once_message_reads_naturally(env: Env) -> None:
    model_id = env.create()
    env.set(model_id, status="running", attempts=1, worker=worker_name(dead_pid()))

    recover_interrupted(env.engine, max_attempts=1)

    message = env.model(model_id).failure_message
    assert message is not None and "interrupted" in message and "1 times" not in message


def test_recovery_for_one_worker_leaves_other_workers_jobs_alone(env: Env) -> None:
    mine, theirs, queued, done = (env.create() for _ in range(4))
    # Both workers beat just now: the named worker's jobs are recovered because its process
    # was seen to die, whatever its heartbeat says.
    env.set(mine, status="running", attempts=1, worker="w1", heartbeat_at=utcnow())
    env.set(theirs, status="running", attempts=1, worker="w2", heartbeat_at=ago(3600))
    env.set(done, status="succeeded", attempts=1, worker="w1")

    assert recover_interrupted(env.engine, max_attempts=2, worker="w1") == 1

    assert env.model(mine).status == "queued"
    assert (env.model(theirs).status, env.model(theirs).worker) == ("running", "w2")
    assert env.model(queued).status == "queued"
    assert env.model(done).status == "succeeded"
    assert recover_interrupted(env.engine, max_attempts=2, worker="w1") == 0


def test_heartbeats_keep_a_long_job_from_being_recovered(env: Env) -> None:
    model_id = env.create({"epochs": 16, "sleep_per_epoch": 0.15, "refit_on_all": False})
    runner = env.runner("elsewhere.example/4242/0", report_interval=3600)
    assert runner.claim_next() == model_id
    recovered = 0

    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(runner.run, model_id, heartbeat_interval=0.05)
        while not result.done():
            time.sleep(0.1)
            recovered += recover_interrupted(env.engine, max_attempts=5, stale_after=1.0)
        assert result.result() == "succeeded"

    assert recovered == 0
    assert env.model(model_id).status == "succeeded"


def test_job_of_an_earlier_process_with_the_same_pid_is_recovered(env: Env) -> None:
    model_id = env.create()
    env.set(
        model_id,
        status="running",
        attempts=1,
        worker=worker_name(os.getpid(), 0),
        started_at=ago(3600),
        heartbeat_at=ago(3600),
    )

    assert recover_interrupted(env.engine, max_attempts=2, stale_after=60) == 1
    assert env.model(model_id).status == "queued"


def test_a_worker_whose_job_was_taken_over_stops(env: Env) -> None:
    model_id = env.create({"epochs": 5, "sleep_per_epoch": 0.2, "refit_on_all": False})
    first, second = env.runner("host-a.example/1/0"), env.runner("host-b.example/2/0")
    assert first.claim_next() == model_id

    with ThreadPoolExecutor(1) as pool:
        first_result = pool.submit(first.run, model_id)
        wait_progress(env, model_id, 0.6)
        deadline = time.monotonic() + 10
        while not recover_interrupted(env.engine, max_attempts=5, stale_after=0.05):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert second.claim_next() == model_id
        second_result = second.run(model_id)
        results = (first_result.result(timeout=30), second_result)

    assert results == ("cancelled", "succeeded")
    assert env.model(model_id).worker == "host-b.example/2/0"


@pytest.mark.slow
def test_a_joint_model_trains_its_entities_with_params_entity_backend(env: Env) -> None:
    from nlu.entities.spacy_ner import SpacyNerModel
    from tests.support.rasa_project import rasa_nlu_yml

    dataset_id = env.dataset(rasa_nlu_yml().encode(), name="rasa", filename="nlu.yml")
    model_id = env.create({"entity_backend": "spacy-ner"}, dataset_id=dataset_id)
    assert env.claim_and_run(env.runner(), model_id) == "succeeded"
    assert env.model(model_id).metrics["entities"]["backend"] == "spacy-ner"
    directory = env.store.local_dir(env.model(model_id).artifact_key or "")
    loaded = load_model("toy-bow", directory, BackendContext(cache_dir=env.cache_dir))
    assert isinstance(loaded.entity_model, SpacyNerModel)
    with pytest.raises(InvalidInput, match="entity_backend 'toy-bow' trains intent models"):
        env.create({"entity_backend": "toy-bow"}, dataset_id=dataset_id)
    with pytest.raises(InvalidInput, match="no-such-ner"):
        env.create({"entity_backend": "no-such-ner"}, dataset_id=dataset_id)


def test_a_sweep_that_lost_the_race_neither_counts_nor_logs_the_job(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import training.queue.base as base

    model_id = env.create()
    env.set(model_id, status="running", attempts=1, worker=worker_name(dead_pid()))
    seen = base._still_stuck

    def recovered_meanwhile(model: Model) -> list[Any]:
        # another sweeper re-queued it between this one's read and its guarded UPDATE, and a
        # worker claimed it again
        env.set(model_id, attempts=2, worker="w2", heartbeat_at=utcnow())
        return seen(model)

    monkeypatch.setattr(base, "_still_stuck", recovered_meanwhile)

    with caplog.at_level("INFO"):
        assert recover_interrupted(env.engine, max_attempts=5) == 0

    assert "job.requeued" not in caplog.text
    assert (env.model(model_id).status, env.model(model_id).worker) == ("running", "w2")


# --- a run that lost its job ------------------------------------------------------------------


def test_a_run_whose_heartbeats_fail_stops_itself_and_the_next_run_wins(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = env.create({"epochs": 60, "sleep_per_epoch": 0.1, "refit_on_all": False})
    cut_off = env.runner("host-a.example/1/0", report_interval=3600, stale_after=0.5)
    assert cut_off.claim_next() == model_id

    def unreachable(_model_id: str) -> bool:
        raise RuntimeError("the database is unreachable from this worker")

    monkeypatch.setattr(cut_off, "heartbeat", unreachable)
    started = time.monotonic()
    assert cut_off.run(model_id, heartbeat_interval=0.05) == "cancelled"
    assert time.monotonic() - started < 4.0, "stopped after stale_after, not after 6 s of epochs"
    assert env.model(model_id).status == "running"  # the database never heard of it

    assert recover_interrupted(env.engine, max_attempts=5, stale_after=0.5) == 1
    assert env.claim_and_run(env.runner("host-b.example/2/0"), model_id) == "succeeded"

    record = env.model(model_id)
    assert record.artifact_key == artifact_key(env.tenant_id, model_id, 2)
    assert env.store.size_of(artifact_key(env.tenant_id, model_id, 1)) == 0
    assert sha256_dir(env.store.local_dir(record.artifact_key)) == record.artifact_sha256


def test_a_run_that_stores_after_losing_its_job_never_touches_the_winners_artifact(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = env.create()
    first, second = env.runner("host-a.example/1/0"), env.runner("host-b.example/2/0")
    put_dir = env.store.put_dir
    winner: list[str] = []

    def taken_over_then_put(prefix: str, directory: Path) -> None:
        if prefix.endswith("/1") and not winner:  # the first run, about to store its files
            env.set(model_id, status="queued", worker=None)  # a sweep re-queued it meanwhile
            winner.append(env.claim_and_run(second, model_id))
        put_dir(prefix, directory)

    monkeypatch.setattr(env.store, "put_dir", taken_over_then_put)

    assert env.claim_and_run(first, model_id) == "cancelled"

    record = env.model(model_id)
    assert winner == ["succeeded"] and record.status == "succeeded"
    assert record.worker == "host-b.example/2/0"
    assert record.artifact_key == artifact_key(env.tenant_id, model_id, 2)
    assert not env.store.exists(artifact_key(env.tenant_id, model_id, 1))  # the loser's: deleted
    assert sha256_dir(env.store.local_dir(record.artifact_key)) == record.artifact_sha256
    assert env.load(model_id).labels == LABELS


# --- the interrupting signal ------------------------------------------------------------------


def test_a_lost_job_is_interrupted_mid_training_by_the_signal(env: Env) -> None:
    model_id = env.create({"epochs": 60, "sleep_per_epoch": 0.1, "refit_on_all": False})
    runner = env.runner(report_interval=3600)  # no progress report to stop at
    assert runner.claim_next() == model_id
    cancelled_at: list[float] = []

    def cancel() -> None:
        with session_scope(env.engine) as session:
            cancel_model(session, env.tenant_id, model_id)
        cancelled_at.append(time.monotonic())

    timer = threading.Timer(0.5, cancel)
    timer.start()
    try:
        assert runner.run(model_id, heartbeat_interval=0.05, interrupt=True) == "cancelled"
    finally:
        timer.cancel()
    assert time.monotonic() - cancelled_at[0] < 3.0, "interrupted, not after 6 s of epochs"
    assert env.model(model_id).status == "cancelled"


def test_the_signal_during_a_progress_write_waits_for_the_write_then_cancels(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    model_id = env.create({"epochs": 10, "refit_on_all": False})
    runner = env.runner()
    assert runner.claim_next() == model_id
    report = runner.report
    written: list[float] = []

    def cancelled_while_writing(job: str, fraction: float) -> None:
        if 0.6 < fraction < 0.95 and not written:  # a report from inside training
            with session_scope(env.engine) as session:
                cancel_model(session, env.tenant_id, model_id)
            # the heartbeat thread's signal arrives while this write is under way
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR2)
            time.sleep(0.05)  # the handler runs here (were it armed, JobCancelled from here)
            written.append(fraction)
        report(job, fraction)

    monkeypatch.setattr(runner, "report", cancelled_while_writing)

    assert runner.run(model_id, heartbeat_interval=60, interrupt=True) == "cancelled"

    assert len(written) == 1, "the write was interrupted by the signal"
    record = env.model(model_id)
    assert record.status == "cancelled" and record.artifact_key is None
    with session_scope(env.engine) as session:  # the connection pool is usable afterwards
        assert session.scalar(select(func.count()).select_from(Model)) >= 1


# --- worker names -----------------------------------------------------------------------------


def test_a_dead_pid_counts_only_in_this_pid_namespace(env: Env) -> None:
    from training.queue.base import pid_namespace

    pid = dead_pid()
    here = worker_name(pid)
    assert here.split("/")[:3] == [socket.gethostname(), str(pid), "0"]
    assert pid_namespace() is not None and here.endswith(f"/{pid_namespace()}")
    other_container = f"{socket.gethostname()}/{pid}/0/00000000.1"  # same host, own pids
    old_style = f"{socket.gethostname()}/{pid}/0"  # a name written before names had one
    ids = {name: env.create() for name in (here, other_container, old_style)}
    for name, model_id in ids.items():
        env.set(model_id, status="running", attempts=1, worker=name, heartbeat_at=utcnow())

    assert recover_interrupted(env.engine, max_attempts=5, stale_after=60) == 2

    assert env.model(ids[here]).status == "queued"
    assert env.model(ids[old_style]).status == "queued"
    assert env.model(ids[other_container]).status == "running"  # beating: left alone


def test_a_worker_process_runner_stops_after_the_queue_s_stale_after(tmp_path: Path) -> None:
    from tests.conftest import make_settings
    from training.worker import make_runner

    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'w.db'}", queue={"stale_after": 42.0}
    )
    runner = make_runner(settings, worker_name="w", threads=1)
    try:
        assert runner.stale_after == 42.0
    finally:
        runner.engine.dispose()
