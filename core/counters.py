"""Counters that limits are built on, behind one interface: token buckets (rate limits) and
windows of recent events (login lockouts, failed authentications).

``memory`` keeps them in this process (the embedded mode); a Redis store (the distributed
mode) registers under another name in ``counter_stores`` so limits hold across gateways.

    store = counter_stores.get("memory")()
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

from core.registry import Registry
from core.settings import Rate

__all__ = ["CounterStore", "Decision", "MemoryCounterStore", "Window", "counter_stores"]


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


@dataclass(frozen=True)
class Window:
    """Events of one key within a sliding window: how many, and in how many seconds the
    oldest of them leaves it (0 when there are none)."""

    count: int
    oldest_leaves_in: float


class CounterStore(ABC):
    """Where rate-limit buckets and event windows live. Every method is atomic per key."""

    @abstractmethod
    def take(self, key: str, rate: Rate, *, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them."""

    @abstractmethod
    def add_event(self, key: str, *, window_s: float) -> Window:
        """Record one event for ``key``; the events within the last ``window_s`` seconds."""

    @abstractmethod
    def events(self, key: str, *, window_s: float) -> Window:
        """The events within the last ``window_s`` seconds, recording none."""

    @abstractmethod
    def clear(self, key: str) -> None:
        """Forget ``key``'s bucket and events."""


counter_stores: Registry[Callable[[], CounterStore]] = Registry("counter store")


@counter_stores.register("memory")
class MemoryCounterStore(CounterStore):
    """Counters in this process: exact for one gateway, per process when there are several."""

    MAX_KEYS = 100_000  # idle keys are dropped past this, so a flood of keys cannot grow memory

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._events: dict[str, list[float]] = {}
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
        return Decision(
            allowed=allowed,
            limit=rate.burst,
            remaining=int(tokens),
            reset=(rate.burst - tokens) / rate.per_second,
            retry_after=0.0 if allowed else (cost - tokens) / rate.per_second,
        )

    def _prune(self, now: float, rate: Rate) -> None:
        full_after = rate.burst / rate.per_second
        for k in [k for k, (_, at) in self._buckets.items() if now - at > full_after]:
            del self._buckets[k]
        while len(self._buckets) >= self.MAX_KEYS:  # still full: drop the oldest half
            for k in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: self.MAX_KEYS // 2]:
                del self._buckets[k]

    def add_event(self, key: str, *, window_s: float) -> Window:
        now = self._clock()
        with self._lock:
            recent = [t for t in self._events.get(key, []) if now - t < window_s]
            recent.append(now)
            if len(self._events) >= self.MAX_KEYS and key not in self._events:
                self._events = {
                    k: v for k, v in self._events.items() if v and now - v[-1] < window_s
                }
            self._events[key] = recent
            return Window(len(recent), recent[0] + window_s - now)

    def events(self, key: str, *, window_s: float) -> Window:
        now = self._clock()
        with self._lock:
            recent = [t for t in self._events.get(key, []) if now - t < window_s]
        return Window(len(recent), recent[0] + window_s - now if recent else 0.0)

    def clear(self, key: str) -> None:
        with self._lock:
            self._buckets.pop(key, None)
            self._events.pop(key, None)
