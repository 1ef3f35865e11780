"""Admission of a request: rate limits per API key and per tenant, and the tenant's quotas.

Every route belongs to a class (``ROUTE_CLASSES``, the one table; anything else keyed by an
API key is ``api``). A request takes a token from its key's bucket and from its tenant's
bucket of that class (``settings.rate_limits``: ``predict_key``, ``predict_tenant``, …;
``webhook_tenant`` for channel webhooks, which carry no key), with the operator's per-tenant
overrides (``Tenant.rate_limits``, cached ``LIMITS_TTL`` seconds). Past either: ``429
rate_limited`` with ``Retry-After``. Every answer of a limited route carries
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds) of the tighter
bucket (``RateLimitHeaders``, the middleware). ``PARLEY_RATE_LIMITS__ENABLED=false`` turns the
rate limits off (quotas stay). The buckets live in ``gateway.counter_store``.

Then the quotas that guard the class (``core.quotas``): ``predictions_per_month`` on
``predict``, ``models`` and ``train_minutes_per_day`` on ``train``, ``storage_bytes`` on
``upload`` (stored bytes plus the request's ``Content-Length``). Tenants without quotas pay
nothing for them; others a cached total (no query per request).

Where the running totals live: with a shared counter store (Redis), in it, so every gateway
counts against one total — the tenant's predictions this month
(``quota:predictions:<tenant>:<YYYY-MM>``, seeded from the usage records, then incremented by
every gateway's predictions, ``Admission.predicted``, and seeded again every
``PREDICTIONS_TTL`` seconds, so predictions counted in a gateway's own memory while Redis was
away count again in the shared total within a minute of its return) and its stored bytes
(``quota:storage:<tenant>``, measured every ``STORAGE_TTL`` seconds, uploads added meanwhile).
With a shared store the rate-limit buckets are taken in a worker thread (a Redis round trip
must not stall the event loop while Redis hangs). Otherwise (one gateway) in this process:
``UsageRecorder``'s cached totals and ``_storage``. The usage records stay the record either
way; the models and train-minutes quotas are read from the database each time.

Callers: ``deps.get_principal`` (every route keyed by an API key), ``/model/parse``,
channel webhooks and the chat routes (per tenant of the bot or channel).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.counters import CounterStore, Decision
from core.db import session_scope
from core.errors import QuotaExceeded, QuotaFull, RateLimited
from core.metrics import counters
from core.quotas import (
    LimitsCache,
    TenantLimits,
    check_models,
    check_train_minutes,
    load_limits,
    month_start,
    next_month,
    refuse,
)
from core.settings import Rate
from core.tenants import Principal
from core.usage import UsageRecorder, stored_bytes

if TYPE_CHECKING:
    from bot_gateway.deps import Gateway

__all__ = [
    "ROUTE_CLASSES",
    "Admission",
    "RateLimitHeaders",
    "RouteClass",
    "route_class",
    "route_template",
]

RouteClass = Literal["predict", "train", "upload", "webhook", "api"]

ROUTE_CLASSES: dict[tuple[str, str], RouteClass] = {
    ("POST", "/v1/models/{model_id}/predict"): "predict",
    ("POST", "/v1/models/{model_id}/parse"): "predict",
    ("POST", "/v1/ocr"): "predict",
    ("POST", "/model/parse"): "predict",
    ("POST", "/v1/models"): "train",
    ("POST", "/v1/models/remote"): "train",  # a remote model counts against the models quota
    ("POST", "/v1/datasets"): "upload",
    ("POST", "/v1/datasets/{dataset_id}/examples"): "upload",
    ("POST", "/v1/bots/{bot_id}/uploads"): "upload",
    ("GET", "/webhooks/{channel_id}"): "webhook",
    ("POST", "/webhooks/{channel_id}"): "webhook",
    ("POST", "/v1/bots/{bot_id}/webhooks/rest"): "webhook",
}
"""(method, route template) → class; every other route keyed by an API key is ``api``."""

LIMITS_TTL = 10.0
"""Seconds a tenant's quotas and rate overrides are cached per process."""
STORAGE_TTL = 30.0
"""Seconds a tenant's measured storage is trusted (uploads meanwhile are added to it)."""
PREDICTIONS_TTL = 60.0
"""Seconds a tenant's shared predictions total is trusted (predictions meanwhile are added to
it) before it is read again from the usage records, which hold what a gateway counted while the
shared store was away."""
STATE = "rate_limit"  # the request.state attribute the middleware reads


def route_template(scope: Scope) -> str:
    """The matched route's full template (``/v1/models/{model_id}/predict``): the route's own
    path (FastAPI keeps it relative to the router it was included from) after the request
    path's leading segments (the include prefix)."""
    path = scope["path"]
    own = getattr(scope.get("route"), "path", None)
    if not own:
        return str(path)
    own_segments = own.strip("/").split("/")
    segments = path.strip("/").split("/")
    return "/" + "/".join([*segments[: max(0, len(segments) - len(own_segments))], *own_segments])


def route_class(request: Request) -> RouteClass:
    return ROUTE_CLASSES.get((request.method, route_template(request.scope)), "api")


class Admission:
    """Rate limits and quotas of one gateway process (see the module docstring)."""

    def __init__(self, gateway: Gateway, usage: UsageRecorder) -> None:
        self.gateway = gateway
        self.settings = gateway.settings.rate_limits
        self.buckets: CounterStore = gateway.counter_store
        self.usage = usage
        self.limits_cache = LimitsCache(LIMITS_TTL)
        self._storage: dict[str, tuple[float, int]] = {}  # tenant -> (measured at, bytes)

    # --- entry points --------------------------------------------------------------------

    async def admit(self, request: Request, principal: Principal) -> None:
        """A request made with an API key (``deps.get_principal``)."""
        await self._admit(request, principal.tenant_id, principal.key_id)

    async def admit_tenant(self, request: Request, tenant_id: str) -> None:
        """A request without an API key (a channel's webhook, the widget): the tenant's
        bucket only."""
        await self._admit(request, tenant_id, None)

    def forget(self, tenant_id: str) -> None:
        """The operator changed the tenant's limits here: read them again."""
        self.limits_cache.forget(tenant_id)

    async def limits(self, tenant_id: str) -> TenantLimits:
        cached = self.limits_cache.get(tenant_id)
        if cached is not None:
            return cached
        return await run_in_threadpool(self._load_limits, tenant_id)

    def _load_limits(self, tenant_id: str) -> TenantLimits:
        with session_scope(self.gateway.engine) as session:
            limits = load_limits(session, tenant_id)
        self.limits_cache.put(tenant_id, limits)
        return limits

    # --- the work ------------------------------------------------------------------------

    async def _admit(self, request: Request, tenant_id: str, key_id: str | None) -> None:
        if getattr(request.state, "admitted", False):  # one charge per request
            return
        request.state.admitted = True
        cls = route_class(request)
        limits = await self.limits(tenant_id)
        if self.settings.enabled:
            if self.buckets.shared:  # Redis: a network round trip, off the event loop
                await run_in_threadpool(self._take, request, cls, tenant_id, key_id, limits)
            else:  # this process's memory: no I/O, no thread hop on every request
                self._take(request, cls, tenant_id, key_id, limits)
        try:
            if cls == "predict" and "predictions_per_month" in limits.quotas:
                await self._check_predictions(tenant_id, limits)
            elif cls == "train" and limits.quotas.keys() & {"models", "train_minutes_per_day"}:
                await run_in_threadpool(self._check_training, tenant_id, limits)
            elif cls == "upload" and "storage_bytes" in limits.quotas:
                length = request.headers.get("content-length", "")
                incoming = int(length) if length.isdigit() else 0
                await run_in_threadpool(self._check_storage, tenant_id, limits, incoming)
        except (QuotaExceeded, QuotaFull) as e:
            counters.incr_tenant("tenant.quota_exceeded", tenant_id, kind=str(e.details["quota"]))
            raise

    def _take(
        self,
        request: Request,
        cls: RouteClass,
        tenant_id: str,
        key_id: str | None,
        limits: TenantLimits,
    ) -> None:
        decisions: list[tuple[str, Decision]] = []
        if key_id is not None and cls != "webhook":
            rate = self._rate(limits, f"{cls}_key")
            decisions.append(("key", self.buckets.take(f"rate:{cls}:key:{key_id}", rate)))
        if decisions and not decisions[0][1].allowed:  # a refused key leaves the tenant's alone
            tightest = decisions[0]
        else:
            rate = self._rate(limits, f"{cls}_tenant")
            decisions.append(("tenant", self.buckets.take(f"rate:{cls}:tenant:{tenant_id}", rate)))
            refused = [d for d in decisions if not d[1].allowed]
            tightest = refused[0] if refused else min(decisions, key=lambda d: d[1].remaining)
        scope, decision = tightest
        setattr(request.state, STATE, decision)
        if not decision.allowed:
            counters.incr_tenant("tenant.rate_limited", tenant_id, kind=cls)
            who = "this API key" if scope == "key" else "this tenant"
            raise RateLimited(
                f"too many {cls} requests for {who}: at most {decision.limit} at once, "
                f"refilled at {self._rate(limits, f'{cls}_{scope}').per_second:g}/s; retry "
                f"after {decision.retry_after_s} s",
                limit=f"{cls}_{scope}",
                retry_after=decision.retry_after_s,
            )

    def _rate(self, limits: TenantLimits, name: str) -> Rate:
        default: Rate = getattr(self.settings, name)
        return limits.rate(name, default)

    async def predicted(self, tenant_id: str, count: int) -> None:
        """``count`` predictions were made for the tenant: add them to its shared monthly
        total (only with a shared store, and for a tenant with that quota)."""
        if not self.buckets.shared:
            return  # UsageRecorder.record counts them in this process's running total
        limits = self.limits_cache.get(tenant_id)
        if limits is None or "predictions_per_month" not in limits.quotas:
            return
        key = _predictions_key(tenant_id, month_start(datetime.now(UTC)))
        await run_in_threadpool(self.buckets.add, key, count)

    def _shared_predictions(self, tenant_id: str, now: datetime) -> float:
        since = month_start(now)
        key = _predictions_key(tenant_id, since)
        used = self.buckets.total(key)
        if used is None:
            total = self.usage.total(tenant_id, "predictions", since)
            used = self.buckets.seed(key, total, ttl_s=PREDICTIONS_TTL)
        return used

    async def _check_predictions(self, tenant_id: str, limits: TenantLimits) -> None:
        now = datetime.now(UTC)
        since = month_start(now)
        used: float | None
        if self.buckets.shared:
            used = await run_in_threadpool(self._shared_predictions, tenant_id, now)
        else:
            used = self.usage.cached_total(tenant_id, "predictions", since)
        if used is None:
            used = await run_in_threadpool(self.usage.total, tenant_id, "predictions", since)
        limit = limits.quotas["predictions_per_month"]
        if used >= limit:
            raise refuse(
                "predictions_per_month", limit=limit, used=used, retry_at=next_month(now), now=now
            )

    def _check_training(self, tenant_id: str, limits: TenantLimits) -> None:
        now = datetime.now(UTC)
        with session_scope(self.gateway.engine) as session:
            check_models(session, tenant_id, limits, now)
            check_train_minutes(session, tenant_id, limits, now)

    def _check_storage(self, tenant_id: str, limits: TenantLimits, incoming: int) -> None:
        limit = limits.quotas["storage_bytes"]
        if self.buckets.shared:
            key = f"quota:storage:{tenant_id}"
            used: float | None = self.buckets.total(key)
            if used is None:
                measured_bytes = stored_bytes(self.gateway.store, tenant_id)
                used = self.buckets.seed(key, measured_bytes, ttl_s=STORAGE_TTL)
            if used + incoming > limit:
                raise refuse("storage_bytes", limit=limit, used=used, now=datetime.now(UTC))
            self.buckets.add(key, incoming)  # until it is measured again
            return
        measured = self._storage.get(tenant_id)
        if measured is None or time.monotonic() - measured[0] > STORAGE_TTL:
            measured = (time.monotonic(), stored_bytes(self.gateway.store, tenant_id))
        if measured[1] + incoming > limit:
            self._storage[tenant_id] = measured
            raise refuse("storage_bytes", limit=limit, used=measured[1], now=datetime.now(UTC))
        self._storage[tenant_id] = (measured[0], measured[1] + incoming)  # until measured again


def _predictions_key(tenant_id: str, month: datetime) -> str:
    return f"quota:predictions:{tenant_id}:{month:%Y-%m}"


class RateLimitHeaders:
    """ASGI middleware: ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``
    on every answer of a request that took a token (successes and errors alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            decision = state.get(STATE) if message["type"] == "http.response.start" else None
            if isinstance(decision, Decision):
                headers = list(message.get("headers", []))
                headers += [
                    (b"ratelimit-limit", str(decision.limit).encode()),
                    (b"ratelimit-remaining", str(max(0, decision.remaining)).encode()),
                    (b"ratelimit-reset", str(math.ceil(decision.reset)).encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
