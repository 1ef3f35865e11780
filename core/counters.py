"""Counters that limits are built on, behind one interface: token buckets (rate limits),
windows of recent events (login lockouts, failed authentications) and running totals (quotas).

``memory`` keeps them in this process (the embedded mode). ``redis`` (the distributed mode,
``core.redis_counters``) keeps them in Redis so limits hold across gateways, wrapped in a
``FallbackCounterStore``: while Redis is unreachable, rate limits, the failed-authentication
throttle and quotas count in this process instead (logged once per outage, counted as
``counters.fallback``) and Redis is tried again every ``FallbackCounterStore.RETRY_S`` seconds —
per-gateway limits for a few seconds beat refusing every prediction. What must not be per
process (the agents' login lockout) asks for ``store.strict(what)``, which raises
``Unavailable`` naming Redis instead of falling back.

    store = counter_stores.get(settings.counter_backend)(settings)
    decision = store.take("predict:key:key_123", Rate(per_second=10, burst=20))
    if not decision.allowed: ...  # 429, Retry-After: decision.retry_after
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from core.errors import Unavailable
from core.logging import log_event
from core.metrics import counters
from core.registry import Registry
from core.settings import Rate

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "CounterStore",
    "Decision",
    "FallbackCounterStore",
    "MemoryCounterStore",
    "Window",
    "counter_stores",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Decision:
    """The answer of a token bucket: whether the request may go, and the numbers behind the
    ``RateLimit-*`` headers."""

    allowed: bool
    limit: int  # the bucket's size (burst)
    remaining: int  # whole tokens left after this request
    reset: float  # seconds until the bucket is full again
    retry_after: float  # seconds until one token is there (0 when allowed)

    @property
    def retry_after_s(self) -> int:
        """``Retry-After`` in whole seconds (at least 1 when refused)."""
        return max(1, math.ceil(self.retry_after)) if not self.allowed else 0

    @classmethod
    def of(cls, allowed: bool, tokens: float, rate: Rate, cost: float) -> Decision:
        """The decision of a bucket left holding ``tokens`` after this request."""
        return cls(
            allowed=allowed,
            limit=rate.burst,
            remaining=int(tokens),
            reset=(rate.burst - tokens) / rate.per_second,
            retry_after=0.0 if allowed else (cost - tokens) / rate.per_second,
        )


@dataclass(frozen=True)
class Window:
    """Events of one key within a sliding window: how many, and in how many seconds the
    oldest of them leaves it (0 when there are none)."""

    count: int
    oldest_leaves_in: float


class CounterStore(ABC):
    """Where rate-limit buckets, event windows and quota totals live. Every method is atomic
    per key."""

    shared = False
    """Whether every gateway process sees the same counters."""

    @abstractmethod
    def take(self, key: str, rate: Rate, *, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them."""

    @abstractmethod
    def add_event(self, key: str, *, window_s: float) -> Window:
        """Record one event for ``key``; the events within the last ``window_s`` seconds."""

    @abstractmethod
    def try_add_event(self, key: str, *, window_s: float, limit: int) -> tuple[bool, Window]:
        """Record one event for ``key`` only if fewer than ``limit`` are within the last
        ``window_s`` seconds, in one atomic step (so parallel callers cannot all pass a
        check made before the event is added): whether it was recorded, and the events."""

    @abstractmethod
    def events(self, key: str, *, window_s: float) -> Window:
        """The events within the last ``window_s`` seconds, recording none."""

    @abstractmethod
    def clear(self, key: str) -> None:
        """Forget ``key``'s bucket, events and total."""

    @abstractmethod
    def total(self, key: str) -> float | None:
        """``key``'s running total, or None when it is not kept (never seeded, or expired)."""

    @abstractmethod
    def seed(self, key: str, value: float, *, ttl_s: float) -> float:
        """Start ``key``'s total at ``value`` for ``ttl_s`` seconds unless it is kept already;
        the total."""

    @abstractmethod
    def add(self, key: str, amount: float) -> float | None:
        """Add ``amount`` to ``key``'s total if it is kept (None, and nothing kept, if not)."""

    def strict(self, what: str) -> CounterStore:
        """This store, without any fallback: ``Unavailable`` naming the shared store and
        ``what`` (``"the agents' login lockout"``) when it cannot be reached."""
        return self


counter_stores: Registry[Callable[[Settings], CounterStore]] = Registry("counter store")
"""Factories of counter stores by ``settings.counter_backend``."""


class MemoryCounterStore(CounterStore):
    """Counters in this process: exact for one gateway, per process when there are several."""

    MAX_KEYS = 100_000  # idle keys are dropped past this, so a flood of keys cannot grow memory

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._events: dict[str, list[float]] = {}
        self._totals: dict[str, tuple[float, float]] = {}  # key -> (value, expires at)
        self._lock = threading.Lock()

    def take(self, key: str, rate: Rate, *, cost: float = 1.0) -> Decision:
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - at) * rate.per_second)
            allowed = tokens >= cost
            if allowed:
                tokens -= cost
            if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
                self._prune(now, rate)
            self._buckets[key] = (tokens, now)
        return Decision.of(allowed, tokens, rate, cost)

    def _prune(self, now: float, rate: Rate) -> None:
        full_after = rate.burst / rate.per_second
        for k in [k for k, (_, at) in self._buckets.items() if now - at > full_after]:
            del self._buckets[k]
        while len(self._buckets) >= self.MAX_KEYS:  # still full: drop the oldest half
            for k in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: self.MAX_KEYS // 2]:
                del self._buckets[k]

    def add_event(self, key: str, *, window_s: float) -> Window:
        return self._add_event(key, window_s, None)[1]

    def try_add_event(self, key: str, *, window_s: float, limit: int) -> tuple[bool, Window]:
        return self._add_event(key, window_s, limit)

    def _add_event(self, key: str, window_s: float, limit: int | None) -> tuple[bool, Window]:
        now = self._clock()
        with self._lock:
            recent = [t for t in self._events.get(key, []) if now - t < window_s]
            added = limit is None or len(recent) < limit
            if added:
                recent.append(now)
            if len(self._events) >= self.MAX_KEYS and key not in self._events:
                self._events = {
                    k: v for k, v in self._events.items() if v and now - v[-1] < window_s
                }
            if recent:
                self._events[key] = recent
            return added, Window(len(recent), recent[0] + window_s - now if recent else 0.0)

    def events(self, key: str, *, window_s: float) -> Window:
        now = self._clock()
        with self._lock:
            recent = [t for t in self._events.get(key, []) if now - t < window_s]
        return Window(len(recent), recent[0] + window_s - now if recent else 0.0)

    def clear(self, key: str) -> None:
        with self._lock:
            self._buckets.pop(key, None)
            self._events.pop(key, None)
            self._totals.pop(key, None)

    def _kept(self, key: str, now: float) -> float | None:
        hit = self._totals.get(key)
        if hit is None or hit[1] <= now:
            self._totals.pop(key, None)
            return None
        return hit[0]

    def total(self, key: str) -> float | None:
        with self._lock:
            return self._kept(key, self._clock())

    def seed(self, key: str, value: float, *, ttl_s: float) -> float:
        now = self._clock()
        with self._lock:
            kept = self._kept(key, now)
            if kept is not None:
                return kept
            if len(self._totals) >= self.MAX_KEYS:
                self._totals = {k: v for k, v in self._totals.items() if v[1] > now}
            self._totals[key] = (float(value), now + ttl_s)
            return float(value)

    def add(self, key: str, amount: float) -> float | None:
        now = self._clock()
        with self._lock:
            kept = self._kept(key, now)
            if kept is None:
                return None
            self._totals[key] = (kept + amount, self._totals[key][1])
            return kept + amount


class FallbackCounterStore(CounterStore):
    """A shared store (Redis) that gives way to an in-process one while it is unreachable.

    The first failure of an outage is logged (``counters.shared_unreachable``); every answer
    given by the fallback counts ``counters.fallback``; the shared store is tried again
    ``RETRY_S`` seconds after a failure, and its return is logged
    (``counters.shared_back``). Counts made during the outage stay in this process.
    ``strict`` skips the fallback (see the module docstring)."""

    RETRY_S = 3.0

    def __init__(
        self,
        primary: CounterStore,
        fallback: CounterStore | None = None,
        *,
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self._own_fallback = fallback is None  # emptied when the primary is back
        self.fallback = fallback or MemoryCounterStore()
        self.retry_s = retry_s
        self._clock = clock
        self._down_until: float | None = None  # None: the primary is believed up
        self._lock = threading.Lock()
        self.shared = primary.shared

    @property
    def degraded(self) -> bool:
        """Whether the fallback is answering now."""
        return self._down_until is not None

    def _call(self, op: Callable[[CounterStore], T]) -> T:
        down_until = self._down_until
        if down_until is not None and self._clock() < down_until:
            counters.incr("counters.fallback")
            return op(self.fallback)
        try:
            result = op(self.primary)
        except Unavailable as e:
            with self._lock:
                if self._down_until is None:
                    log_event("counters.shared_unreachable", error=e.message, retry_s=self.retry_s)
                self._down_until = self._clock() + self.retry_s
            counters.incr("counters.fallback")
            return op(self.fallback)
        if down_until is not None:
            with self._lock:
                if self._down_until is not None:
                    self._down_until = None
                    if self._own_fallback:  # its counts are stale once Redis counts again
                        self.fallback = MemoryCounterStore()
                    log_event("counters.shared_back")
        return result

    def take(self, key: str, rate: Rate, *, cost: float = 1.0) -> Decision:
        return self._call(lambda s: s.take(key, rate, cost=cost))

    def add_event(self, key: str, *, window_s: float) -> Window:
        return self._call(lambda s: s.add_event(key, window_s=window_s))

    def try_add_event(self, key: str, *, window_s: float, limit: int) -> tuple[bool, Window]:
        return self._call(lambda s: s.try_add_event(key, window_s=window_s, limit=limit))

    def events(self, key: str, *, window_s: float) -> Window:
        return self._call(lambda s: s.events(key, window_s=window_s))

    def clear(self, key: str) -> None:
        self.fallback.clear(key)
        self._call(lambda s: s.clear(key))

    def total(self, key: str) -> float | None:
        return self._call(lambda s: s.total(key))

    def seed(self, key: str, value: float, *, ttl_s: float) -> float:
        return self._call(lambda s: s.seed(key, value, ttl_s=ttl_s))

    def add(self, key: str, amount: float) -> float | None:
        return self._call(lambda s: s.add(key, amount))

    def strict(self, what: str) -> CounterStore:
        return self.primary.strict(what)


@counter_stores.register("memory")
def memory_store(settings: Settings) -> CounterStore:
    """Counters in this process (settings are not needed)."""
    return MemoryCounterStore()


@counter_stores.register("redis")
def redis_store(settings: Settings) -> CounterStore:
    """Counters in Redis (``PARLEY_REDIS__URL``), shared by every gateway, with an in-process
    fallback while Redis is unreachable."""
    from core.redis_counters import RedisCounterStore

    return FallbackCounterStore(RedisCounterStore.from_settings(settings.redis))
