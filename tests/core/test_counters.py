"""The counter stores behind rate limits, lockouts and quotas: one contract, run against the
memory store and against a real redis-server; then what only Redis does (one bucket shared by
two gateways) and the fallback while Redis is away."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pytest
import redis

from core.counters import (
    CounterStore,
    FallbackCounterStore,
    MemoryCounterStore,
    Window,
    counter_stores,
)
from core.errors import Unavailable, UnknownPluginError
from core.metrics import counters
from core.redis import cannot_serve, redis_errors
from core.redis_counters import RedisCounterStore
from core.settings import Rate, RedisSettings, Settings
from tests.support.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def redis_store(url: str) -> RedisCounterStore:
    """A store with its own connection pool, as another gateway process would have."""
    return RedisCounterStore(client=redis.Redis.from_url(url, socket_timeout=2), url=url)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> CounterStore:
    if request.param == "memory":
        return MemoryCounterStore()
    return redis_store(request.getfixturevalue("redis_url"))


# --- the contract, for every store ----------------------------------------------------------


def test_bucket_allows_the_burst_then_refuses_with_the_wait(store: CounterStore) -> None:
    rate = Rate(per_second=0.1, burst=3)
    decisions = [store.take("k", rate) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert refused.limit == 3
    assert refused.retry_after == pytest.approx(10.0, abs=0.5)  # 0.05 token refills in 0.5 s
    assert refused.retry_after_s == 10
    assert refused.reset == pytest.approx(30.0, abs=0.5)


def test_bucket_refills_at_its_rate_and_keys_are_independent(store: CounterStore) -> None:
    rate = Rate(per_second=1, burst=1)
    assert store.take("a", rate).allowed
    assert not store.take("a", rate).allowed
    assert store.take("b", rate).allowed  # another key has its own bucket
    time.sleep(1.05)
    assert store.take("a", rate).allowed


def test_refused_requests_take_no_tokens(store: CounterStore) -> None:
    rate = Rate(per_second=1, burst=1)
    store.take("a", rate)
    for _ in range(10):
        assert not store.take("a", rate).allowed
    time.sleep(1.05)  # had the refusals taken tokens, the bucket would be 10 in debt
    assert store.take("a", rate).allowed


def test_event_window_counts_recent_events_and_says_when_the_oldest_leaves(
    store: CounterStore,
) -> None:
    assert store.events("login", window_s=2.0) == Window(0, 0.0)
    store.add_event("login", window_s=2.0)
    time.sleep(1.0)
    window = store.add_event("login", window_s=2.0)
    assert window.count == 2
    assert 0 < window.oldest_leaves_in <= 1.01  # the first event's, not the second's (2.0)
    time.sleep(window.oldest_leaves_in + 0.1)  # the first event left the window
    assert store.events("login", window_s=2.0).count == 1  # the second stays ~0.9 s more
    store.clear("login")
    assert store.events("login", window_s=2.0).count == 0


def test_an_event_is_added_only_below_the_limit(store: CounterStore) -> None:
    added = [store.try_add_event("guess", window_s=60, limit=3) for _ in range(5)]
    assert [a for a, _ in added] == [True, True, True, False, False]
    assert [w.count for _, w in added] == [1, 2, 3, 3, 3]  # a refused one is not counted
    assert 59 < added[-1][1].oldest_leaves_in <= 60
    store.clear("guess")
    assert store.try_add_event("guess", window_s=60, limit=3)[0]


def test_totals_are_kept_once_seeded_and_until_they_expire(store: CounterStore) -> None:
    assert store.total("q") is None
    assert store.add("q", 5) is None  # nothing is kept before a seed
    assert store.total("q") is None
    assert store.seed("q", 100, ttl_s=1.5) == 100
    assert store.seed("q", 7, ttl_s=1.5) == 100  # a second seed keeps what is there
    assert store.add("q", 2.5) == 102.5
    assert store.total("q") == 102.5
    time.sleep(1.6)
    assert store.total("q") is None
    store.seed("q", 1, ttl_s=10)
    store.clear("q")
    assert store.total("q") is None


# --- memory only: exact with a clock, bounded ------------------------------------------------


def test_memory_bucket_refills_exactly_with_its_clock() -> None:
    clock = Clock()
    store = MemoryCounterStore(clock)
    rate = Rate(per_second=1, burst=1)
    assert store.take("a", rate).allowed
    assert not store.take("a", rate).allowed
    clock.now += 1.0
    assert store.take("a", rate).allowed
    store.add_event("e", window_s=300)
    clock.now += 100
    assert store.add_event("e", window_s=300).oldest_leaves_in == pytest.approx(200)


def test_a_flood_of_keys_does_not_grow_memory_without_bound() -> None:
    clock = Clock()
    store = MemoryCounterStore(clock)
    store.MAX_KEYS = 100  # type: ignore[misc]
    rate = Rate(per_second=1, burst=5)
    for i in range(1000):
        store.take(f"k{i}", rate)
    assert len(store._buckets) <= 100


def test_stores_are_plugins(redis_url: str) -> None:
    settings = Settings(redis=RedisSettings(url=redis_url))
    assert isinstance(counter_stores.get("memory")(settings), MemoryCounterStore)
    shared = counter_stores.get("redis")(settings)
    assert isinstance(shared, FallbackCounterStore) and shared.shared
    with pytest.raises(UnknownPluginError, match="memory"):
        counter_stores.get("nope")


# --- Redis: shared by gateways ---------------------------------------------------------------


def test_two_gateways_share_one_bucket(redis_url: str) -> None:
    a, b = redis_store(redis_url), redis_store(redis_url)
    rate = Rate(per_second=0.01, burst=10)
    allowed = [s.take("rate:predict:key:k1", rate).allowed for _ in range(10) for s in (a, b)]
    assert allowed.count(True) == 10  # 10 in all, not 10 per gateway
    a.add_event("agent_login:t:bo", window_s=60)
    assert b.add_event("agent_login:t:bo", window_s=60).count == 2
    assert b.seed("quota", 3, ttl_s=60) == 3
    assert a.add("quota", 1) == 4


def test_parallel_events_on_two_gateways_stay_within_the_limit(redis_url: str) -> None:
    a, b = redis_store(redis_url), redis_store(redis_url)

    def attempt(i: int) -> bool:
        store = a if i % 2 else b
        return store.try_add_event("agent_login:t:cy", window_s=60, limit=5)[0]

    with ThreadPoolExecutor(max_workers=10) as pool:
        counted = list(pool.map(attempt, range(20)))
    assert counted.count(True) == 5  # a check and an add in one step: no race between them
    assert a.events("agent_login:t:cy", window_s=60).count == 5


def test_a_full_bucket_leaves_no_key_behind(redis_url: str) -> None:
    store = redis_store(redis_url)
    store.take("idle", Rate(per_second=2, burst=2))
    key = "parley:counters:bucket:idle"
    assert store.client.exists(key)
    time.sleep(0.7)  # refilled after 1/2 s
    assert not store.client.exists(key)


# --- Redis away: the fallback, and what may not fall back ------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


class Events(logging.Handler):
    """The names of the events Parley logs while attached."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.names.append(record.getMessage().split()[0])


@pytest.fixture
def events() -> Iterator[Events]:
    logger, handler = logging.getLogger("parley"), Events()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_rate_limits_fall_back_to_this_process_while_redis_is_away(
    own_redis: RedisServer, events: Events
) -> None:
    store = FallbackCounterStore(redis_store(own_redis.url), retry_s=0.2)
    rate = Rate(per_second=0.01, burst=2)
    assert store.take("k", rate).allowed and not store.degraded
    own_redis.stop()
    fallbacks = counters.get("counters.fallback")
    assert [store.take("k", rate).allowed for _ in range(3)] == [True, True, False]  # here
    assert store.degraded
    time.sleep(0.25)
    assert not store.take("k", rate).allowed  # Redis tried again, still away: still here
    assert [n for n in events.names if n.startswith("counters.")] == [
        "counters.shared_unreachable"  # once per outage
    ]
    assert counters.get("counters.fallback") == fallbacks + 4
    lockout = store.strict("the agents' login lockout")
    with pytest.raises(Unavailable, match="login lockout") as refused:
        lockout.add_event("agent_login:x", window_s=60)
    assert f"Redis at redis://127.0.0.1:{own_redis.port}/0 is unreachable" in str(refused.value)
    assert refused.value.code == "unavailable"
    own_redis.start()
    time.sleep(0.25)
    assert store.take("k", rate).allowed  # Redis again (its bucket went with it)
    assert not store.degraded
    assert events.names[-1] == "counters.shared_back"
    assert lockout.add_event("agent_login:x", window_s=60).count == 1


# --- Redis up but refusing to serve: the same as away -----------------------------------------


URL = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (redis.exceptions.ConnectionError("Connection refused"), True),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), True),
        (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (redis.exceptions.OutOfMemoryError("command not allowed", status_code="OOM"), True),
        (redis.exceptions.ReadOnlyError("You can't write", status_code="READONLY"), True),
        (redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB"), True),
        (redis.exceptions.ResponseError("NOREPLICAS Not enough good replicas to write."), True),
        (redis.exceptions.ResponseError("MASTERDOWN Link with MASTER is down"), True),
        (redis.exceptions.ResponseError("BUSY Redis is busy running a script."), True),
        (redis.exceptions.ResponseError("TRYAGAIN Multiple keys request during rehashing"), True),
        (redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding"), False),
        (redis.exceptions.ResponseError("BUSYKEY Target key name already exists."), False),
        (redis.exceptions.ResponseError("ERR unknown command 'NOPE'"), False),
        (ValueError("not Redis"), False),
    ],
)
def test_which_redis_errors_are_an_outage(error: Exception, outage: bool) -> None:
    assert cannot_serve(error) is outage
    with pytest.raises(Unavailable if outage else type(error)), redis_errors(URL, "the test"):
        raise error


@pytest.mark.parametrize(("how", "code"), [("oom", "OutOfMemoryError"), ("readonly", "ReadOnly")])
def test_a_redis_refusing_writes_is_an_outage_not_a_crash(
    own_redis: RedisServer, how: Literal["oom", "readonly"], code: str
) -> None:
    store = FallbackCounterStore(redis_store(own_redis.url), retry_s=0.2)
    rate = Rate(per_second=0.01, burst=2)
    assert store.take("k", rate).allowed and not store.degraded
    lockout = store.strict("the agents' login lockout")
    with own_redis.refusing_writes(how):
        assert [store.take("k", rate).allowed for _ in range(3)] == [True, True, False]  # here
        assert store.degraded
        with pytest.raises(Unavailable, match="login lockout") as refused:
            lockout.take("agent_login:x", rate)
        message = str(refused.value)
        assert f"Redis at redis://127.0.0.1:{own_redis.port}/0 refuses commands" in message
        assert code in message and refused.value.code == "unavailable"
    time.sleep(0.25)
    assert [store.take("k", rate).allowed for _ in range(2)] == [True, False]  # Redis's bucket
    assert not store.degraded
    assert lockout.take("agent_login:x", rate).allowed
