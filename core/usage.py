"""Usage metering: what each tenant used, per UTC hour, in ``usage_records``.

    recorder = UsageRecorder(engine)
    recorder.start()                                     # flushes every second
    recorder.predicted(tenant_id, "mdl_1", task="intent", backend="embedding-head", count=3)
    recorder.record(tenant_id, "messages", dimension="webchat")
    recorder.stop()                                      # the last flush

``record`` only adds to a dictionary in memory (the hot path pays no database round trip); a
background thread upserts the sums every ``interval`` seconds (``ON CONFLICT DO UPDATE`` on
SQLite and PostgreSQL), and once more on shutdown. A process that records rarely (a train
worker) writes at once with ``add_usage``.

Metrics (``METRICS``) and their dimensions:

    predictions     model id and kind: ``mdl_1:intent`` (kinds: intent, entities, image,
                    detect, builtin); one per text or image predicted
    ocr_pages       images read by OCR
    train_seconds   by device (``cpu``, ``cuda``); recorded by the worker when a job ends
    conversations   new conversations, by channel
    messages        customers' messages, by channel
    storage_bytes   a gauge: the tenant's stored files now (``stored_bytes``), not recorded

Quotas read running totals through ``total`` / ``cached_total`` (cheap per request: one SUM
query per tenant every ``TOTAL_MAX_AGE`` seconds, exact for this process's own records).
Every record also counts in the per-tenant Prometheus counters (``core.metrics``).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core.db import session_scope, utcnow
from core.errors import InvalidInput
from core.logging import log_event
from core.metrics import counters
from core.storage import ArtifactStore
from core.tables import Model, UsageRecord

__all__ = [
    "METRICS",
    "PREDICTION_KINDS",
    "Granularity",
    "Metric",
    "UsageEntry",
    "UsageRecorder",
    "UsageReport",
    "add_usage",
    "hour_of",
    "prediction_kind",
    "record_job_time",
    "stored_bytes",
    "usage_report",
]

Metric = Literal[
    "predictions", "ocr_pages", "train_seconds", "conversations", "messages", "storage_bytes"
]
METRICS: tuple[Metric, ...] = (
    "predictions",
    "ocr_pages",
    "train_seconds",
    "conversations",
    "messages",
    "storage_bytes",
)
Granularity = Literal["day", "hour"]
PREDICTION_KINDS = ("intent", "entities", "image", "detect", "builtin")
_KIND_OF_TASK = {
    "intent": "intent",
    "entities": "entities",
    "image-classification": "image",
    "image-multi-label": "image",
    "object-detection": "detect",
}
FIXED_CHANNELS = ("webchat", "rest", "test")
"""Channels that keep their name as the Prometheus ``kind``; channel ids count as ``channel``."""
TOTAL_MAX_AGE = 10.0
"""Seconds a running total (for quotas) is trusted before it is read again from the database."""
MAX_RANGE = {"hour": timedelta(days=31), "day": timedelta(days=400)}

Key = tuple[str, datetime, str, str]  # tenant, hour, metric, dimension


def hour_of(when: datetime) -> datetime:
    """The UTC hour ``when`` falls in."""
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def prediction_kind(task: str, backend: str) -> str:
    """The ``kind`` of a prediction: ``builtin`` for the pre-built models, else by task."""
    if backend == "builtin":
        return "builtin"
    return _KIND_OF_TASK.get(task, task)


def add_usage(session: Session, amounts: dict[Key, float]) -> None:
    """Add ``amounts`` to their rows (created where missing) in one statement per row."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:  # pragma: no cover - Parley runs on these two
        raise NotImplementedError(f"usage metering needs SQLite or PostgreSQL, not {dialect}")
    for (tenant_id, hour, metric, dimension), value in sorted(amounts.items()):
        stmt = insert(UsageRecord).values(
            tenant_id=tenant_id, hour=hour, metric=metric, dimension=dimension, value=value
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "hour", "metric", "dimension"],
            set_={"value": UsageRecord.value + stmt.excluded.value},
        )
        session.execute(stmt)


def _prometheus_kind(metric: str, dimension: str) -> str:
    if metric == "predictions":
        return dimension.rpartition(":")[2]
    if metric in ("messages", "conversations"):
        return dimension if dimension in FIXED_CHANNELS else "channel"
    return dimension


@dataclass
class _Total:
    """A running total of one tenant's metric since ``since``: the database's sum when it was
    read (``base``) plus what this process recorded after that (``local``)."""

    since: datetime
    base: float
    local: float
    read_at: float


class UsageRecorder:
    """Buffers usage in memory and flushes it to ``usage_records`` (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine, self.interval, self._clock = engine, interval, clock
        self._pending: dict[Key, float] = defaultdict(float)
        self._totals: dict[tuple[str, str], _Total] = {}
        self._lock = threading.Lock()  # the pending sums and totals
        self._flush_lock = threading.Lock()  # one flush (or total read) at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- recording ---------------------------------------------------------------------

    def record(
        self, tenant_id: str, metric: Metric, value: float = 1.0, *, dimension: str = ""
    ) -> None:
        """Add ``value`` to the tenant's ``metric`` for this hour (memory only; no I/O)."""
        if value == 0:
            return
        key = (tenant_id, hour_of(self._clock()), metric, dimension)
        with self._lock:
            self._pending[key] += value
            total = self._totals.get((tenant_id, metric))
            if total is not None:
                total.local += value
        counters.incr_tenant(
            f"tenant.{metric}", tenant_id, value, kind=_prometheus_kind(metric, dimension)
        )

    def predicted(
        self, tenant_id: str, model_id: str, *, task: str, backend: str, count: int
    ) -> None:
        """``count`` texts or images predicted by a model (and read, for OCR)."""
        kind = prediction_kind(task, backend)
        self.record(tenant_id, "predictions", count, dimension=f"{model_id}:{kind}")
        if task == "ocr":
            self.record(tenant_id, "ocr_pages", count)

    # --- flushing ----------------------------------------------------------------------

    def start(self) -> None:
        """Flush every ``interval`` seconds from a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="usage", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and flush what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as e:  # noqa: BLE001 - kept in memory and retried next time
                log_event("usage.flush_failed", error=repr(e))
                counters.incr("usage.flush_failed")

    def flush(self) -> None:
        """Write the buffered sums now; on failure they stay buffered (and the error is raised)."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, defaultdict(float)
        if not batch:
            return
        try:
            with session_scope(self.engine) as session:
                add_usage(session, batch)
        except Exception:
            with self._lock:  # put them back, added to what came meanwhile
                for key, value in batch.items():
                    self._pending[key] += value
            raise

    # --- running totals for quotas -------------------------------------------------------

    def cached_total(self, tenant_id: str, metric: Metric, since: datetime) -> float | None:
        """The tenant's ``metric`` since ``since``, if read recently enough; no I/O."""
        with self._lock:
            total = self._totals.get((tenant_id, metric))
            if (
                total is None
                or total.since != since
                or time.monotonic() - total.read_at > TOTAL_MAX_AGE
            ):
                return None
            return total.base + total.local

    def total(self, tenant_id: str, metric: Metric, since: datetime) -> float:
        """The tenant's ``metric`` since ``since`` (every process's flushed usage plus this
        process's not yet flushed), read from the database now."""
        with self._flush_lock:  # no flush in flight: the sum sees all of ours before this point
            with self._lock:
                batch, self._pending = self._pending, defaultdict(float)
                total = _Total(since=since, base=0.0, local=0.0, read_at=time.monotonic())
                self._totals[(tenant_id, metric)] = total  # records from now on count in local
            try:
                with session_scope(self.engine) as session:
                    if batch:
                        add_usage(session, batch)
                    base = session.scalar(
                        select(func.coalesce(func.sum(UsageRecord.value), 0.0)).where(
                            UsageRecord.tenant_id == tenant_id,
                            UsageRecord.metric == metric,
                            UsageRecord.hour >= since,
                        )
                    )
            except Exception:
                with self._lock:
                    self._totals.pop((tenant_id, metric), None)
                    for key, value in batch.items():
                        self._pending[key] += value
                raise
            with self._lock:
                total.base = float(base or 0.0)
                return total.base + total.local


def record_job_time(engine: Engine, model_id: str, seconds: float, device: str) -> None:
    """A train job's run time, written at once (workers record too rarely to buffer)."""
    with session_scope(engine) as session:
        tenant_id = session.scalar(select(Model.tenant_id).where(Model.id == model_id))
        if tenant_id is None:  # deleted while it ran: nobody to bill
            return
        add_usage(session, {(tenant_id, hour_of(utcnow()), "train_seconds", device): seconds})
    counters.incr_tenant("tenant.train_seconds", tenant_id, seconds, kind=device)


def stored_bytes(store: ArtifactStore, tenant_id: str) -> int:
    """Bytes of the tenant's stored files: datasets and models (``tenants/<id>/``) and chat
    uploads (``uploads/<id>/``)."""
    return sum(store.size_of(prefix) for prefix in (f"tenants/{tenant_id}", f"uploads/{tenant_id}"))


# --- reading usage back -----------------------------------------------------------------------


@dataclass(frozen=True)
class UsageEntry:
    """One metric of one hour or day, for one dimension (``""`` when it has none)."""

    start: datetime
    metric: str
    dimension: str
    value: float


@dataclass(frozen=True)
class UsageReport:
    tenant_id: str
    start: datetime
    end: datetime
    granularity: Granularity
    entries: list[UsageEntry]
    totals: dict[str, float]


def bucket_of(hour: datetime, granularity: Granularity) -> datetime:
    hour = hour_of(hour)
    return hour if granularity == "hour" else hour.replace(hour=0)


def usage_report(
    session: Session,
    tenant_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    granularity: Granularity = "day",
    now: datetime | None = None,
) -> UsageReport:
    """The tenant's usage from ``start`` (rounded down to its hour or day) up to ``end``
    (exclusive; default now), summed per hour or day, metric and dimension."""
    if granularity not in MAX_RANGE:
        raise InvalidInput(f"granularity {granularity!r}: use day or hour")
    now = now or utcnow()
    end = _utc(end) if end is not None else now
    default_span = timedelta(days=30) if granularity == "day" else timedelta(hours=24)
    start = bucket_of(_utc(start) if start is not None else end - default_span, granularity)
    if end <= start:
        raise InvalidInput(f"`to` ({end.isoformat()}) must come after `from` ({start.isoformat()})")
    if end - start > MAX_RANGE[granularity]:
        raise InvalidInput(
            f"the range is {(end - start).days} days; ask at most "
            f"{MAX_RANGE[granularity].days} days at {granularity} granularity"
        )
    rows = session.execute(
        select(UsageRecord.hour, UsageRecord.metric, UsageRecord.dimension, UsageRecord.value)
        .where(
            UsageRecord.tenant_id == tenant_id,
            UsageRecord.hour >= start,
            UsageRecord.hour < end,
        )
        .order_by(UsageRecord.hour)
    )
    sums: dict[tuple[datetime, str, str], float] = defaultdict(float)
    totals: dict[str, float] = defaultdict(float)
    for hour, metric, dimension, value in rows:
        sums[(bucket_of(hour, granularity), metric, dimension)] += value
        totals[metric] += value
    entries = [
        UsageEntry(start=b, metric=m, dimension=d, value=v) for (b, m, d), v in sorted(sums.items())
    ]
    return UsageReport(
        tenant_id=tenant_id,
        start=start,
        end=end,
        granularity=granularity,
        entries=entries,
        totals=dict(totals),
    )


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def split_dimension(metric: str, dimension: str) -> dict[str, Any]:
    """The named parts of a dimension: ``model_id`` and ``kind`` of predictions, ``device`` of
    training, ``channel`` of conversations and messages."""
    if not dimension:
        return {}
    if metric == "predictions":
        model_id, _, kind = dimension.rpartition(":")
        return {"model_id": model_id, "kind": kind}
    if metric == "train_seconds":
        return {"device": dimension}
    if metric in ("conversations", "messages"):
        return {"channel": dimension}
    return {}


def entries_as_dicts(entries: Iterable[UsageEntry]) -> list[dict[str, Any]]:
    """Entries with their dimension split (``split_dimension``), as the API and CLI show them."""
    return [
        {
            "start": e.start,
            "metric": e.metric,
            "value": e.value,
            **split_dimension(e.metric, e.dimension),
        }
        for e in entries
    ]
