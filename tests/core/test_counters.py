"""The counter store behind rate limits and lockouts: token buckets and event windows."""

from __future__ import annotations

import pytest

from core.counters import MemoryCounterStore, counter_stores
from core.errors import UnknownPluginError
from core.settings import Rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_refuses_with_the_wait() -> None:
    clock = Clock()
    store = MemoryCounterStore(clock)
    rate = Rate(per_second=2, burst=3)
    decisions = [store.take("k", rate) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert refused.limit == 3
    assert refused.retry_after == pytest.approx(0.5)
    assert refused.retry_after_s == 1
    assert refused.reset == pytest.approx(1.5)


def test_bucket_refills_at_its_rate_and_keys_are_independent() -> None:
    clock = Clock()
    store = MemoryCounterStore(clock)
    rate = Rate(per_second=1, burst=1)
    assert store.take("a", rate).allowed
    assert not store.take("a", rate).allowed
    assert store.take("b", rate).allowed  # another key has its own bucket
    clock.now += 1.0
    assert store.take("a", rate).allowed


def test_refused_requests_take_no_tokens() -> None:
    clock = Clock()
    store = MemoryCounterStore(clock)
    rate = Rate(per_second=1, burst=1)
    store.take("a", rate)
    for _ in range(10):
        assert not store.take("a", rate).allowed
    clock.now += 1.0
    assert store.take("a", rate).allowed


def test_event_window_counts_recent_events_and_says_when_the_oldest_leaves() -> None:
    clock = Clock()
    store = MemoryCounterStore(clock)
    assert store.events("login", window_s=300).count == 0
    store.add_event("login", window_s=300)
    clock.now += 100
    window = store.add_event("login", window_s=300)
    assert window.count == 2
    assert window.oldest_leaves_in == pytest.approx(200)
    clock.now += 250  # the first event left the window
    assert store.events("login", window_s=300).count == 1
    store.clear("login")
    assert store.events("login", window_s=300).count == 0


def test_a_flood_of_keys_does_not_grow_memory_without_bound() -> None:
    clock = Clock()
    store = MemoryCounterStore(clock)
    store.MAX_KEYS = 100  # type: ignore[misc]
    rate = Rate(per_second=1, burst=5)
    for i in range(1000):
        store.take(f"k{i}", rate)
    assert len(store._buckets) <= 100


def test_stores_are_plugins() -> None:
    assert isinstance(counter_stores.get("memory")(), MemoryCounterStore)
    with pytest.raises(UnknownPluginError, match="memory"):
        counter_stores.get("nope")
