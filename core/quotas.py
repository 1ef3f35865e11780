"""Per-tenant quotas and rate-limit overrides, set by the operator.

    parley tenants update acme --quota predictions_per_month=100000 --rate predict_tenant=50/100
    PATCH /v1/tenants/{tenant_id}  {"quotas": {"models": 20}, "rate_limits": {...}}  (operator)

Both are kept on the tenant (``Tenant.quotas``, ``Tenant.rate_limits``); ``null`` (``none`` on
the command line) clears one. The quotas (``QUOTAS``):

    predictions_per_month   texts and images predicted this UTC month   429 quota_exceeded
    train_minutes_per_day   minutes of finished train jobs this UTC day  429 quota_exceeded
    models                  models kept (queued, running or succeeded)  403 quota_exceeded
    storage_bytes           bytes of stored datasets, models, uploads   403 quota_exceeded

Quotas over a period answer ``429`` with ``Retry-After`` (the period's end): waiting helps.
Quotas of what the tenant keeps answer ``403``: waiting does not, deleting does. A request is
refused once the quota is reached (a batch that crosses it still runs), and a refused
request changes nothing. The body: ``{"error": "quota_exceeded", "quota", "limit", "used",
"message"}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, QuotaExceeded, QuotaFull
from core.settings import Rate, RateLimitSettings
from core.tables import Model, Tenant, UsageRecord
from core.tenants import get_tenant

__all__ = [
    "QUOTAS",
    "RATE_NAMES",
    "LimitsCache",
    "Quota",
    "QuotaName",
    "RateName",
    "TenantLimits",
    "check_models",
    "check_train_minutes",
    "day_start",
    "load_limits",
    "month_start",
    "refuse",
    "update_limits",
]

QuotaName = Literal["predictions_per_month", "train_minutes_per_day", "models", "storage_bytes"]
RateName = Literal[
    "predict_key",
    "predict_tenant",
    "train_key",
    "train_tenant",
    "upload_key",
    "upload_tenant",
    "webhook_tenant",
    "api_key",
    "api_tenant",
]
RATE_NAMES: tuple[str, ...] = get_args(RateName)
assert set(RATE_NAMES) <= set(RateLimitSettings.model_fields)
MODEL_STATUSES_COUNTED = ("queued", "running", "succeeded")


@dataclass(frozen=True)
class Quota:
    name: QuotaName
    description: str
    per_period: bool  # 429 + Retry-After when true, else 403


QUOTAS: dict[str, Quota] = {
    q.name: q
    for q in (
        Quota("predictions_per_month", "texts and images predicted per UTC month", True),
        Quota("train_minutes_per_day", "minutes of training per UTC day", True),
        Quota("models", "models kept (queued, running or succeeded)", False),
        Quota("storage_bytes", "bytes of stored datasets, models and uploads", False),
    )
}


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's quotas and its rate overrides (by settings name, e.g. ``predict_tenant``)."""

    quotas: Mapping[str, int] = field(default_factory=dict)
    rates: Mapping[str, Rate] = field(default_factory=dict)

    @classmethod
    def of(cls, tenant: Tenant) -> TenantLimits:
        return cls.from_json(tenant.quotas or {}, tenant.rate_limits or {})

    @classmethod
    def from_json(cls, quotas: Mapping[str, object], rates: Mapping[str, object]) -> TenantLimits:
        return cls(
            quotas={k: int(v) for k, v in quotas.items() if k in QUOTAS and v is not None},  # type: ignore[call-overload]
            rates={k: Rate.model_validate(v) for k, v in rates.items() if k in RATE_NAMES and v},
        )

    def rate(self, name: str, default: Rate) -> Rate:
        return self.rates.get(name, default)

    def public(self) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
        return dict(self.quotas), {k: r.model_dump() for k, r in self.rates.items()}


def load_limits(session: Session, tenant_id: str) -> TenantLimits:
    """The tenant's limits (none for an unknown tenant)."""
    row = session.execute(
        select(Tenant.quotas, Tenant.rate_limits).where(Tenant.id == tenant_id)
    ).first()
    return TenantLimits() if row is None else TenantLimits.from_json(row[0] or {}, row[1] or {})


def update_limits(
    session: Session,
    tenant: str,
    *,
    quotas: Mapping[str, int | None] | None = None,
    rates: Mapping[str, Rate | Mapping[str, float] | None] | None = None,
) -> Tenant:
    """Set (or, with ``None``, clear) quotas and rate overrides of a tenant (id or name)."""
    row = get_tenant(session, tenant)
    new_quotas = dict(row.quotas or {})
    for name, value in (quotas or {}).items():
        if name not in QUOTAS:
            raise InvalidInput(f"unknown quota {name!r}; known: {', '.join(QUOTAS)}")
        if value is None:
            new_quotas.pop(name, None)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"quota {name} must be a whole number ≥ 0 (or none to clear)")
        else:
            new_quotas[name] = value
    new_rates = dict(row.rate_limits or {})
    for name, rate in (rates or {}).items():
        if name not in RATE_NAMES:
            raise InvalidInput(f"unknown rate {name!r}; known: {', '.join(RATE_NAMES)}")
        if rate is None:
            new_rates.pop(name, None)
            continue
        try:
            new_rates[name] = Rate.model_validate(rate).model_dump()
        except ValidationError as e:
            raise InvalidInput(
                f"rate {name}: per_second must be > 0 and burst ≥ 1 ({e.errors()[0]['msg']})"
            ) from e
    row.quotas, row.rate_limits = new_quotas, new_rates  # new objects: JSON columns see a change
    session.flush()
    return row


class LimitsCache:
    """Tenants' limits per process, each re-read after ``ttl`` seconds (or when this process
    changes them), so a request pays no database round trip for them."""

    MAX_ENTRIES = 100_000

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, TenantLimits]] = {}
        self._lock = threading.Lock()

    def get(self, tenant_id: str) -> TenantLimits | None:
        hit = self._entries.get(tenant_id)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, tenant_id: str, limits: TenantLimits) -> None:
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[tenant_id] = (time.monotonic() + self.ttl, limits)

    def forget(self, tenant_id: str) -> None:
        with self._lock:
            self._entries.pop(tenant_id, None)


# --- periods and refusals ---------------------------------------------------------------------


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


def refuse(
    name: str, *, limit: int, used: float, retry_at: datetime | None = None, now: datetime
) -> QuotaExceeded | QuotaFull:
    """The error for a quota that is reached (see the module docstring)."""
    quota = QUOTAS[name]
    used_n = round(used, 2) if used != int(used) else int(used)
    details: dict[str, object] = {"quota": name, "limit": limit, "used": used_n}
    if quota.per_period:
        assert retry_at is not None
        details["retry_after"] = max(1, int((retry_at - now).total_seconds()))
        return QuotaExceeded(
            f"the tenant's {name} quota ({quota.description}) is used up: {used_n} of {limit}; "
            f"it renews at {retry_at.isoformat()}, or ask the operator to raise it",
            **details,
        )
    return QuotaFull(
        f"the tenant's {name} quota ({quota.description}) is full: {used_n} of {limit}; "
        "delete what you no longer need, or ask the operator to raise it",
        **details,
    )


def check_models(session: Session, tenant_id: str, limits: TenantLimits, now: datetime) -> None:
    """Refuse a new model when the tenant keeps ``models`` already (403)."""
    limit = limits.quotas.get("models")
    if limit is None:
        return
    used = session.scalar(
        select(func.count())
        .select_from(Model)
        .where(Model.tenant_id == tenant_id, Model.status.in_(MODEL_STATUSES_COUNTED))
    )
    if (used or 0) >= limit:
        raise refuse("models", limit=limit, used=used or 0, now=now)


def check_train_minutes(
    session: Session, tenant_id: str, limits: TenantLimits, now: datetime
) -> None:
    """Refuse a train job when today's finished jobs took ``train_minutes_per_day`` (429)."""
    limit = limits.quotas.get("train_minutes_per_day")
    if limit is None:
        return
    seconds = session.scalar(
        select(func.coalesce(func.sum(UsageRecord.value), 0.0)).where(
            UsageRecord.tenant_id == tenant_id,
            UsageRecord.metric == "train_seconds",
            UsageRecord.hour >= day_start(now),
        )
    )
    minutes = float(seconds or 0.0) / 60
    if minutes >= limit:
        retry_at = day_start(now) + timedelta(days=1)
        raise refuse("train_minutes_per_day", limit=limit, used=minutes, retry_at=retry_at, now=now)
