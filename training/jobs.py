"""Running one train job: ``run_train_job`` does the same work in every deployment.

    claim → snapshot the dataset → featurize → split → train on the split (learning curve) →
    metrics on the held-out part → refit on all examples → save + checksum → succeeded

The backend's task base (``core.backends``) says what the targets are, how to split and how
to score the held-out part; nothing here depends on the task's name.

A cancelled job stops at its next progress report; a failure records a message a user can act on.
While a job runs, a heartbeat thread also watches its row: once the job is no longer this
worker's (cancelled, deleted, re-queued), the next progress report stops it even between two
database writes, and a job run in a process's main thread (every worker's) is interrupted at
once by a signal while the backend computes (never inside a database write or a log call), so a
backend that reports progress rarely still stops within a beat. A run whose heartbeats have all
failed for ``stale_after`` (the database unreachable from this worker) stops itself too: a
sweeper may have handed the job to another worker by then.

Each attempt stores its artifact under its own key (``artifact_key(..., attempt)``, recorded in
``Model.artifact_key``), so a run that lost its job never overwrites the winner's files; the
loser deletes what it stored.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import numpy as np
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from core.backends import (
    ENTITIES,
    JOINT_ENTITIES_DIR,
    BackendContext,
    EpochRecord,
    EvaluationOptions,
    JobCancelled,
    Progress,
    backends,
    default_backend,
    resolve_device,
    set_torch_threads,
)
from core.db import session_scope, utcnow
from core.errors import ParleyError
from core.logging import log_event
from core.storage import ArtifactStore, sha256_dir
from core.tables import Model
from core.usage import record_job_time
from training.datasets.service import DatasetSnapshot, StoredImages, snapshot
from training.queue.fair import Claim, claim_job, claim_next_job
from training.registry import JobParams, parse_params, set_alias
from training.tracking import MlflowTracker

__all__ = ["HELD_OUT_FILE", "JobOutcome", "JobRunner", "artifact_key", "run_train_job"]

FinalStatus = Literal["succeeded", "failed", "cancelled"]

HELD_OUT_FILE = "held_out.json"
"""In a classifier's artifact: each held-out example's id, label, prediction and confidence
(``{"examples": [{"example_id", "label", "predicted", "confidence"}]}``)."""

# The signal a job's heartbeat thread sends the main thread when the job is no longer its own.
_INTERRUPT = signal.SIGUSR2


def artifact_key(tenant_id: str, model_id: str, attempt: int | None = None) -> str:
    """Where a model's artifact is stored: one folder per attempt (``.../models/<id>/<attempt>``,
    the one that succeeded is ``Model.artifact_key``); without ``attempt``, the folder of all
    of them (what deleting a model deletes)."""
    key = f"tenants/{tenant_id}/models/{model_id}"
    return key if attempt is None else f"{key}/{attempt}"


@dataclass
class JobRunner:
    """Runs train jobs against one database and store, reporting progress as it goes."""

    engine: Engine
    store: ArtifactStore
    context: BackendContext
    worker_name: str = "worker"
    report_interval: float = 0.5
    # Jobs of one tenant running at once across all workers (``settings.queue``); None: no limit.
    per_tenant_concurrency: int | None = None
    # ``settings.queue.stale_after``: a run with no successful heartbeat for this long stops
    # itself (others take its job for abandoned by then); None: never.
    stale_after: float | None = None
    # ``settings.mlflow``: each finished job is logged to MLflow (training.tracking); None: not.
    tracker: MlflowTracker | None = None

    def claim_next(self) -> str | None:
        """Take the next queued job (atomically; tenants in turn, see ``training.queue.fair``);
        its id, or None."""
        return claim_next_job(
            self.engine, worker=self.worker_name, per_tenant_concurrency=self.per_tenant_concurrency
        )

    def _own(self, session: Session, model_id: str, **values: Any) -> bool:
        """Update the job if it is still running on this worker; False if it is not."""
        changed = session.execute(
            update(Model)
            .where(
                Model.id == model_id,
                Model.status == "running",
                Model.worker == self.worker_name,
            )
            .values(**values)
        )
        return changed.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def heartbeat(self, model_id: str) -> bool:
        """Tell other processes this job's worker is alive (see ``recover_interrupted``);
        False when the job is no longer this worker's."""
        with session_scope(self.engine) as session:
            return self._own(session, model_id, heartbeat_at=utcnow())

    def run(
        self, model_id: str, *, heartbeat_interval: float | None = None, interrupt: bool = False
    ) -> FinalStatus:
        """Run a claimed (running) job to its end; the final status.

        With ``heartbeat_interval``, a thread beats for the job while it runs, so that a long
        step (one big epoch) is not mistaken for a dead worker, and notices a job that is no
        longer this worker's. With ``interrupt`` too, and run in the main thread, that notice
        interrupts training at once (``JobCancelled`` from a signal handler) instead of at the
        backend's next progress report.

        With a ``tracker``, the ended job (succeeded, failed or cancelled) is then logged to
        MLflow; that never changes its outcome and takes at most ``tracker.timeout_s``.
        """
        status = self._run_watched(model_id, heartbeat_interval, interrupt=interrupt)
        if self.tracker is not None:
            self.tracker.job_finished(self.engine, model_id, status)
        return status

    def _run_watched(
        self, model_id: str, heartbeat_interval: float | None, *, interrupt: bool
    ) -> FinalStatus:
        started = time.monotonic()
        stop = threading.Event()
        watch = _Watch(self.stale_after)
        beat: threading.Thread | None = None
        restore = watch.install() if interrupt and heartbeat_interval else None
        if heartbeat_interval:
            beat = threading.Thread(
                target=self._beat, args=(model_id, heartbeat_interval, stop, watch), daemon=True
            )
            beat.start()
        try:
            try:
                self._run(model_id, watch)
            finally:
                watch.armed = False  # the handlers below are never interrupted
        except JobCancelled:
            log_event("job.cancelled", model=model_id)
            return "cancelled"
        except ParleyError as e:
            self._fail(model_id, e.message)
            return "failed"
        except Exception as e:  # noqa: BLE001 - a job must end with a message, whatever broke
            log_event("job.crashed", model=model_id, error=traceback.format_exc())
            self._fail(model_id, f"internal error while training: {type(e).__name__}: {e}")
            return "failed"
        finally:
            stop.set()
            if beat is not None:
                beat.join(timeout=30)
            if restore is not None and (beat is None or not beat.is_alive()):
                restore()
            self._meter(model_id, time.monotonic() - started)
        log_event("job.succeeded", model=model_id, seconds=round(time.monotonic() - started, 2))
        return "succeeded"

    def _meter(self, model_id: str, seconds: float) -> None:
        """The tenant's ``train_seconds`` usage (by device), whatever the job's end."""
        try:
            record_job_time(self.engine, model_id, seconds, resolve_device(self.context.device))
        except Exception as e:  # noqa: BLE001 - the job's outcome stands; the loss is logged
            log_event("job.usage_not_recorded", model=model_id, seconds=seconds, error=repr(e))

    def _beat(self, model_id: str, interval: float, stop: threading.Event, watch: _Watch) -> None:
        while not stop.wait(interval):
            sent = time.monotonic()
            try:
                ours = self.heartbeat(model_id)
            except Exception as e:  # noqa: BLE001 - a missed beat is logged, the job goes on
                log_event("job.heartbeat_failed", model=model_id, error=repr(e))
                if watch.stale() and not stop.is_set():
                    log_event(
                        "job.lost",
                        model=model_id,
                        worker=self.worker_name,
                        reason=f"no heartbeat stored for {self.stale_after} s",
                    )
                    watch.lose()
                    return
                continue
            if ours:
                watch.beaten(sent)
            if not ours and not stop.is_set():
                log_event("job.lost", model=model_id, worker=self.worker_name)
                watch.lose()
                return

    # --- steps --------------------------------------------------------------------------

    def _run(self, model_id: str, watch: _Watch) -> None:
        with session_scope(self.engine) as session:
            record = session.get(Model, model_id)
            if record is None or record.status != "running":
                raise JobCancelled()
            tenant_id, backend_name, params = record.tenant_id, record.backend, dict(record.params)
            attempt = record.attempts
            backend_cls = backends.get(backend_name)
            job, config = parse_params(backend_cls, params)
            data = snapshot(session, tenant_id, record.dataset_id, with_feedback=job.with_feedback)
        set_torch_threads(self.context.threads)  # workers import torch for their first job
        backend = backend_cls(self.context)
        reporter = _Reporter(self, model_id, watch)

        inputs: Any = data.texts
        if any(data.blob_keys):  # an image dataset: the backend gets the decoded images
            inputs = StoredImages(self.store, [k or "" for k in data.blob_keys])
        with watch.interruptible():
            features = backend.featurize(inputs, reporter.span(0.0, 0.6), config=config)
        train_idx, held_idx = backend.split(data, job.train_split, job.seed)
        targets = backend.targets(data)
        curve: list[dict[str, Any]] = []
        refit = job.refit_on_all and bool(held_idx)

        def on_epoch(rec: EpochRecord) -> None:
            curve.append(asdict(rec))

        with watch.interruptible():
            model = backend.train(
                _take(features, train_idx),
                [targets[i] for i in train_idx],
                config,
                seed=job.seed,
                validation=(_take(features, held_idx), [targets[i] for i in held_idx])
                if held_idx
                else None,
                on_epoch=on_epoch,
                progress=reporter.span(0.6, 0.78 if refit else 0.95),
                extras=data.extras,
            )
        metrics: dict[str, Any] | None = None
        held_out: list[dict[str, Any]] | None = None
        if held_idx:
            with watch.interruptible():
                evaluation = backend.evaluate_held_out(
                    model,
                    _take(features, held_idx),
                    [targets[i] for i in held_idx],
                    dataset_labels=sorted(set(data.labels)),
                    options=EvaluationOptions(
                        out_of_scope_threshold=job.out_of_scope_threshold,
                        out_of_scope_share=job.out_of_scope_share,
                    ),
                )
            metrics = evaluation.metrics
            if evaluation.predictions is not None:
                held_out = [
                    {
                        "example_id": data.example_ids[held_idx[p.index]],
                        "label": targets[held_idx[p.index]],
                        "predicted": p.predicted,
                        "confidence": p.confidence,
                    }
                    for p in evaluation.predictions
                ]
            metrics["train_examples"] = len(train_idx)
            metrics["refit_on_all"] = refit
            metrics["device"] = resolve_device(self.context.device)  # for the model card
        if refit:
            with watch.interruptible():
                model = backend.train(
                    features,
                    targets,
                    config,
                    seed=job.seed,
                    validation=None,
                    on_epoch=None,
                    progress=reporter.span(0.78, 0.95),
                    extras=data.extras,
                )
        entity_model = None
        if backend.joint_entities and any(data.annotations):
            entity_model = self._train_joint_entities(
                data, train_idx, held_idx, refit, job, metrics, reporter, watch
            )
        # from here on, only the checks below stop the job (no signal: files are being written)
        reporter(1.0, force=True)  # raises JobCancelled if the job is no longer ours

        key = artifact_key(tenant_id, model_id, attempt)  # this attempt's own folder
        tmp = Path(tempfile.mkdtemp(prefix="parley-model-"))
        try:
            model.save(tmp)
            if held_out is not None:
                (tmp / HELD_OUT_FILE).write_text(json.dumps({"examples": held_out}))
            if entity_model is not None:
                entity_model.save(tmp / JOINT_ENTITIES_DIR)
            digest = sha256_dir(tmp)
            watch.check()  # lost, or no heartbeat for stale_after: store nothing
            self.store.put_dir(key, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        with session_scope(self.engine) as session:
            taken = not self._own(
                session,
                model_id,
                status="succeeded",
                progress=1.0,
                finished_at=utcnow(),
                metrics=metrics,
                learning_curve=curve or None,
                labels=list(model.labels),
                dataset_hash=data.content_hash,
                artifact_key=key,
                artifact_sha256=digest,
                failure_message=None,
            )
            if not taken:
                record = session.get(Model, model_id)
                assert record is not None
                if record.promote_alias:
                    set_alias(session, record.tenant_id, record.promote_alias, record.id)
        if taken:  # cancelled, deleted or handed to another worker while the files were stored
            self.store.delete_prefix(key)  # this attempt's folder: never another run's
            raise JobCancelled()
        self._drop_earlier_attempts(tenant_id, model_id, attempt)

    def _drop_earlier_attempts(self, tenant_id: str, model_id: str, attempt: int) -> None:
        """Folders an interrupted earlier attempt may have left half-written (a worker killed
        while storing): nothing reads them, and they would count against the storage quota.
        Best effort: the job has succeeded whatever happens here."""
        for earlier in range(1, attempt):
            try:
                self.store.delete_prefix(artifact_key(tenant_id, model_id, earlier))
            except Exception as e:  # noqa: BLE001 - logged; the model is stored and serving
                log_event(
                    "job.old_attempt_not_deleted", model=model_id, attempt=earlier, error=repr(e)
                )

    def _train_joint_entities(
        self,
        data: DatasetSnapshot,
        train_idx: list[int],
        held_idx: list[int],
        refit: bool,
        job: JobParams,
        metrics: dict[str, Any] | None,
        reporter: _Reporter,
        watch: _Watch,
    ) -> Any:
        """The entity half of a joint intent + entities model (an intent dataset whose
        examples carry entity spans): trained with ``params.entity_backend`` (default: the
        entities task's default backend, with its default config) on the same split, its
        metrics under ``metrics["entities"]``, then refit like the intents."""
        name = job.entity_backend or default_backend(ENTITIES)
        assert name is not None
        backend = backends.get(name)(self.context)
        config = backend.Config()
        spans = backend.targets(data)
        with watch.interruptible():
            texts = backend.featurize(data.texts, config=config)

        def fit(idx: list[int], progress: Progress) -> Any:
            with watch.interruptible():
                return backend.train(
                    _take(texts, idx),
                    [spans[i] for i in idx],
                    config,
                    seed=job.seed,
                    validation=None,
                    on_epoch=None,
                    progress=progress,
                    extras=data.extras,
                )

        model = fit(train_idx, reporter.span(0.95, 0.97 if refit else 0.99))
        if held_idx and metrics is not None:
            with watch.interruptible():
                metrics["entities"] = backend.evaluate(
                    model,
                    _take(texts, held_idx),
                    [spans[i] for i in held_idx],
                    dataset_labels=sorted(set(data.labels)),
                    options=EvaluationOptions(),
                )
            metrics["entities"]["backend"] = name
        if refit:
            model = fit(list(range(len(texts))), reporter.span(0.97, 0.99))
        return model

    def _fail(self, model_id: str, message: str) -> None:
        with session_scope(self.engine) as session:
            self._own(
                session, model_id, status="failed", failure_message=message, finished_at=utcnow()
            )
        log_event("job.failed", model=model_id, reason=message)

    def report(self, model_id: str, fraction: float) -> None:
        """Store progress; raise ``JobCancelled`` if the job is no longer running."""
        progress = round(min(max(fraction, 0.0), 1.0), 4)
        with session_scope(self.engine) as session:
            if not self._own(session, model_id, progress=progress, heartbeat_at=utcnow()):
                raise JobCancelled()


def _take(features: Any, idx: list[int]) -> Any:
    if isinstance(features, np.ndarray):
        return features[idx]
    take = getattr(features, "take", None)  # lazy sequences (stored images) subset lazily
    if take is not None:
        return take(idx)
    return [features[i] for i in idx]


class _Watch:
    """One running job's link to its heartbeat thread: ``lost`` once the row is no longer this
    worker's (or no heartbeat was stored for ``stale_after``). Installed in the main thread
    (``install``), losing the job also sends that thread ``_INTERRUPT``, whose handler raises
    ``JobCancelled`` while training is ``armed``: only inside ``interruptible`` (the backend's
    own computing), never in a database write or a log call (``held``)."""

    def __init__(self, stale_after: float | None = None) -> None:
        self.lost = threading.Event()
        self.armed = False  # read and written by the training thread (and its signal handler)
        self._thread: int | None = None
        self.stale_after = stale_after
        self.last_beat = time.monotonic()  # when the last heartbeat that was stored was sent

    def beaten(self, sent: float) -> None:
        """A heartbeat (or progress report) sent at ``sent`` was stored."""
        self.last_beat = max(self.last_beat, sent)

    def stale(self) -> bool:
        """No heartbeat stored for ``stale_after``: sweepers may take the job for abandoned."""
        return self.stale_after is not None and time.monotonic() - self.last_beat > self.stale_after

    def check(self) -> None:
        """Raise ``JobCancelled`` if the job is lost or its heartbeats are stale."""
        if self.lost.is_set() or self.stale():
            raise JobCancelled()

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """The backend computes: losing the job interrupts it at once (in the main thread)."""
        self.check()
        self.armed = True
        try:
            yield
        finally:
            self.armed = False

    @contextmanager
    def held(self) -> Iterator[None]:
        """No interruption here (a database write, a log call: a signal there could leave a
        connection mid-query or a lock held); a loss noticed meanwhile stops the job right
        after, where it was interruptible."""
        was = self.armed
        self.armed = False
        try:
            yield
        finally:
            self.armed = was
        if was and self.lost.is_set():
            self.armed = False
            raise JobCancelled()

    def install(self) -> Callable[[], object] | None:
        """Handle ``_INTERRUPT`` in this (main) thread; a function that restores the previous
        handler, or None where signals cannot be handled (not the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.signal(_INTERRUPT, self._interrupted)
        self._thread = threading.get_ident()
        return lambda: signal.signal(_INTERRUPT, previous)

    def lose(self) -> None:
        self.lost.set()
        if self._thread is not None:
            signal.pthread_kill(self._thread, _INTERRUPT)

    def _interrupted(self, _signum: int, _frame: FrameType | None) -> None:
        if self.armed:
            self.armed = False
            raise JobCancelled()


class _Reporter:
    """Throttled progress reports (at most one DB write per interval); a job its heartbeat
    found lost stops at the next report, written or not."""

    def __init__(self, runner: JobRunner, model_id: str, watch: _Watch) -> None:
        self.runner, self.model_id, self.watch = runner, model_id, watch
        self.last = 0.0

    def __call__(self, fraction: float, *, force: bool = False) -> None:
        with self.watch.held():
            self.watch.check()
            now = time.monotonic()
            if force or now - self.last >= self.runner.report_interval:
                self.last = now
                self.runner.report(self.model_id, fraction)
                self.watch.beaten(now)  # the report stored a heartbeat too

    def span(self, lo: float, hi: float) -> Progress:
        return lambda f: self(lo + (hi - lo) * f)


JobStatus = FinalStatus | Literal["not_queued", "tenant_busy", "idle"]


@dataclass(frozen=True)
class JobOutcome:
    """What ``run_train_job`` did: the job it ran (its final status), or why it ran none:
    ``not_queued`` (taken by another worker, cancelled or deleted), ``tenant_busy`` (its
    tenant runs as many jobs as it may; still queued), ``idle`` (no job waiting)."""

    model_id: str | None
    status: JobStatus

    @property
    def ran(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


def run_train_job(
    runner: JobRunner,
    model_id: str | None = None,
    *,
    heartbeat_interval: float | None = None,
    on_claimed: Callable[[str], None] | None = None,
) -> JobOutcome:
    """Claim a job for ``runner``'s worker and run it to its end; every queue calls this.

    ``model_id``: a Celery message names it; the oldest queued job of its tenant is claimed
    (``claim_job``: that job, or an older one), and ``on_claimed(claimed_id)`` is called before
    it runs. None: the next job, tenants in turn (embedded workers poll; ``claim_next_job``).
    A running job is interrupted as soon as a heartbeat finds it is no longer this worker's
    (see ``JobRunner.run``).
    """
    if model_id is None:
        model_id = runner.claim_next()
        if model_id is None:
            return JobOutcome(None, "idle")
    else:
        claim, claimed = claim_job(
            runner.engine,
            model_id,
            worker=runner.worker_name,
            per_tenant_concurrency=runner.per_tenant_concurrency,
        )
        if claim is Claim.NOT_QUEUED:
            return JobOutcome(model_id, "not_queued")
        if claim is Claim.TENANT_BUSY or claimed is None:
            return JobOutcome(model_id, "tenant_busy")
        model_id = claimed
        if on_claimed is not None:
            try:  # the job is ours now: a failing hook (Redis) must not strand it
                on_claimed(model_id)
            except Exception as e:  # noqa: BLE001 - logged; the job runs
                log_event("queue.on_claimed_failed", model=model_id, error=repr(e))
    log_event("job.started", model=model_id, worker=runner.worker_name)
    status = runner.run(model_id, heartbeat_interval=heartbeat_interval, interrupt=True)
    return JobOutcome(model_id, status)
