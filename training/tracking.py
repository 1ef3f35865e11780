"""Logging finished train jobs to MLflow, so ML teams see Parley's runs beside their others.

With ``PARLEY_MLFLOW__TRACKING_URI`` set, every worker (the embedded queue's and Celery's:
``training.worker.make_runner``) hands each job it ran, whatever its end, to ``MlflowTracker``:

- one run per job in the experiment ``settings.mlflow.experiment`` (default
  ``parley/{tenant}``: one experiment per tenant, created on first use), named after the model,
  started and ended at the job's own times, status ``FINISHED`` / ``FAILED`` / ``KILLED``;
- params: ``backend``, ``backend_version``, ``task``, ``dataset_id``, ``num_labels`` and the
  job's own params (as given when it was queued);
- metrics per epoch from the learning curve (``train_loss``, ``validation_accuracy``, … at
  ``step=epoch``), the final held-out metrics (``accuracy``, ``macro_f1``, …, per label
  ``f1.<label>``, ``out_of_scope_threshold``) and ``train_seconds``;
- tags ``parley.tenant_id``, ``parley.tenant``, ``parley.model_id``, ``parley.dataset_id``,
  ``parley.version``, ``parley.worker`` (and ``parley.failure_message`` for a failed job);
- artifacts ``model_card.md`` and ``model_card.json`` (``training.cards``) of a succeeded job.

The job is logged once it has ended (from what the model row recorded), never during training:
MLflow's latency cannot slow an epoch down. MLflow is imported lazily (the ``mlflow`` extra,
``mlflow-skinny``), so Parley runs without it when no URI is set. Logging never changes a
job's outcome: any failure (MLflow down or not installed, a refused request) and any call
taking longer than ``timeout_s`` is logged as an ``mlflow.log_failed`` warning event and counted
(``mlflow.log_failed``), and the worker goes on to its next job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from core.db import session_scope
from core.logging import log_event
from core.metrics import counters
from core.settings import MlflowSettings
from core.tables import Dataset, Model, Tenant
from training.cards import card_json, model_card, parley_version, render_markdown

__all__ = ["JobRecord", "MlflowTracker", "job_record"]

# MLflow run status of each final job status.
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}

# Per-epoch values of ``EpochRecord`` logged as metrics (``epoch`` is the step).
EPOCH_METRICS = (
    "train_loss",
    "validation_accuracy",
    "validation_macro_f1",
    "validation_entity_f1",
    "validation_map50",
)

_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(name: str) -> str:
    """``name`` with the characters MLflow refuses in keys replaced by ``_``."""
    return _UNSAFE_KEY.sub("_", name)[:250]


def _millis(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # the database hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class JobRecord:
    """What one finished job logs to MLflow, read from its rows in one transaction."""

    model_id: str
    run_name: str
    tenant_id: str
    tenant_name: str
    status: str  # MLflow's: FINISHED, FAILED, KILLED
    start_ms: int | None
    end_ms: int | None
    params: dict[str, str]
    tags: dict[str, str]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    card_markdown: str | None = None
    card_json: str | None = None


def job_record(engine: Engine, model_id: str, final_status: str) -> JobRecord | None:
    """The record of a finished job; None when its model was deleted meanwhile."""
    with session_scope(engine) as session:
        model = session.get(Model, model_id)
        if model is None:
            return None
        tenant = session.get(Tenant, model.tenant_id)
        dataset = session.get(Dataset, model.dataset_id)
        labels = model.labels or (list(dataset.label_counts) if dataset is not None else [])
        params = {
            "backend": model.backend,
            "backend_version": model.backend_version or "",
            "task": model.task,
            "dataset_id": model.dataset_id,
            "num_labels": str(len(labels)),
        }
        for key, value in sorted((model.params or {}).items()):
            if key != "headers":  # remote models' header values are secrets
                params[key] = value if isinstance(value, str) else json.dumps(value)
        tags = {
            "parley.tenant_id": model.tenant_id,
            "parley.tenant": tenant.name if tenant is not None else "",
            "parley.model_id": model.id,
            "parley.dataset_id": model.dataset_id,
            "parley.version": parley_version(),
            "parley.worker": model.worker or "",
            "mlflow.source.name": "parley",
        }
        if model.failure_message:
            tags["parley.failure_message"] = model.failure_message[:5000]
        metrics: dict[str, float] = {}
        card_md = card_js = None
        if model.status == "succeeded" and final_status == "succeeded":
            card = model_card(session, model)
            card_md, card_js = render_markdown(card), card_json(card)
            metrics.update(card.metrics)
            for row in card.per_label:
                if row.f1 is not None:
                    metrics[metric_key(f"f1.{row.label}")] = row.f1
            if card.out_of_scope is not None and card.out_of_scope.threshold is not None:
                metrics["out_of_scope_threshold"] = card.out_of_scope.threshold
            if card.training.duration_seconds is not None:
                metrics["train_seconds"] = card.training.duration_seconds
            if card.training.device:
                tags["parley.device"] = card.training.device
        return JobRecord(
            model_id=model.id,
            run_name=model.name,
            tenant_id=model.tenant_id,
            tenant_name=tenant.name if tenant is not None else model.tenant_id,
            status=RUN_STATUS.get(final_status, "FAILED"),
            start_ms=_millis(model.started_at),
            end_ms=_millis(model.finished_at),
            params=params,
            tags=tags,
            epochs=list(model.learning_curve or []),
            metrics=metrics,
            card_markdown=card_md,
            card_json=card_js,
        )


@dataclass
class MlflowTracker:
    """Logs finished jobs to one MLflow tracking URI (see the module docstring)."""

    tracking_uri: str
    experiment: str = "parley/{tenant}"
    timeout_s: float = 15.0
    _experiments: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: MlflowSettings) -> MlflowTracker | None:
        """A tracker when ``tracking_uri`` is set, else None (nothing is logged)."""
        if not settings.tracking_uri:
            return None
        # MLflow's own HTTP retries (7, with backoff) would outlast ``timeout_s`` by minutes
        # in a thread left behind; the operator's own values win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(settings.timeout_s))))
        return cls(settings.tracking_uri, settings.experiment, settings.timeout_s)

    def experiment_name(self, record: JobRecord) -> str:
        return self.experiment.replace("{tenant_id}", record.tenant_id).replace(
            "{tenant}", record.tenant_name
        )

    def job_finished(self, engine: Engine, model_id: str, final_status: str) -> str | None:
        """Log a finished job; its MLflow run id, or None when nothing was logged. Never
        raises, and returns within about ``timeout_s`` whatever MLflow does."""
        try:
            record = job_record(engine, model_id, final_status)
        except Exception as e:  # noqa: BLE001 - logging must never fail the job
            self._failed(model_id, f"could not read the job: {e!r}")
            return None
        if record is None:
            return None
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["run_id"] = self.log(record)
            except BaseException as e:  # noqa: BLE001 - reported by the waiting thread
                outcome["error"] = e

        thread = threading.Thread(target=work, name=f"mlflow-{model_id}", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            self._failed(model_id, f"MLflow did not answer within {self.timeout_s} s")
            return None
        if "error" in outcome:
            self._failed(model_id, repr(outcome["error"]))
            return None
        run_id: str = outcome["run_id"]
        log_event("mlflow.logged", model=model_id, run_id=run_id, status=record.status)
        return run_id

    def _failed(self, model_id: str, reason: str) -> None:
        counters.incr("mlflow.log_failed")
        log_event(
            "mlflow.log_failed",
            level=logging.WARNING,
            model=model_id,
            tracking_uri=self.tracking_uri,
            reason=reason,
        )

    def log(self, record: JobRecord) -> str:
        """Log ``record`` as one MLflow run (raises what MLflow raises); the run id."""
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment_id = self._experiment_id(client, self.experiment_name(record))
        run = client.create_run(
            experiment_id, start_time=record.start_ms, tags=record.tags, run_name=record.run_name
        )
        run_id = str(run.info.run_id)
        at = record.end_ms or record.start_ms or 0
        metrics = [
            Metric(key, float(point[key]), at, int(point["epoch"]))
            for point in record.epochs
            for key in EPOCH_METRICS
            if isinstance(point.get(key), int | float) and "epoch" in point
        ]
        metrics += [Metric(key, value, at, 0) for key, value in record.metrics.items()]
        params = [Param(key, value[:6000]) for key, value in record.params.items()]
        # MLflow takes at most 1000 metrics and 100 params per batch
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        if record.card_markdown is not None:
            client.log_text(run_id, record.card_markdown, "model_card.md")
        if record.card_json is not None:
            client.log_text(run_id, record.card_json, "model_card.json")
        client.set_terminated(run_id, status=record.status, end_time=record.end_ms)
        return run_id

    def _experiment_id(self, client: Any, name: str) -> str:
        with self._lock:
            known = self._experiments.get(name)
        if known is not None:
            return known
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = str(client.create_experiment(name))
            except Exception:  # another worker created it first
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                experiment_id = str(experiment.experiment_id)
        else:
            experiment_id = str(experiment.experiment_id)
        with self._lock:
            self._experiments[name] = experiment_id
        return experiment_id
