"""The ``redis`` counter store: rate-limit buckets, event windows and quota totals in Redis, so
every gateway counts against the same limits (a limit of 10 is 10 in all, not 10 per gateway).

Each operation is one Lua script (atomic on the server) that reads the clock with Redis
``TIME``, never a gateway's own, so gateways on several machines agree:

- a token bucket is a hash ``{tokens, at}`` under ``parley:counters:bucket:<key>``; it expires
  when it would be full again (a missing bucket is a full one);
- an event window is a sorted set of event times under ``parley:counters:events:<key>``:
  ``ZREMRANGEBYSCORE`` (drop what left the window) + ``ZADD`` (for ``try_add_event`` only
  while ``ZCARD`` is below the limit) + ``ZCARD`` + ``PEXPIRE``;
- a total is a number under ``parley:counters:total:<key>`` with a time to live.

Lost connections, timeouts and a Redis refusing to serve (out of memory, read-only, …:
``core.redis.cannot_serve``) become ``Unavailable`` naming Redis; the
registry wraps this store in ``FallbackCounterStore`` (``core.counters``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any

from core.counters import CounterStore, Decision, Window
from core.redis import KEY_PREFIX, redis_errors, sync_client
from core.settings import Rate, RedisSettings

__all__ = ["RedisCounterStore"]

PREFIX = f"{KEY_PREFIX}counters:"

_NOW = (
    "local function f(x) return string.format('%.17g', x) end "
    "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "
)

TAKE = (
    _NOW
    + """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= cost then tokens = tokens - cost allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', f(tokens), 'at', f(now))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((burst - tokens) / rate * 1000)))
return {allowed, f(tokens)}
"""
)

WINDOW = (
    _NOW
    + """
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', f(now - window))
local added = 0
if ARGV[2] ~= '' and (limit == nil or redis.call('ZCARD', KEYS[1]) < limit) then
  redis.call('ZADD', KEYS[1], f(now), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(window * 1000)))
  added = 1
end
local count = redis.call('ZCARD', KEYS[1])
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local first = oldest[2] or ''
return {count, first, f(now), added}
"""
)

SEED = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return redis.call('GET', KEYS[1])
"""

ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
end
return false
"""


@dataclass(frozen=True)
class RedisCounterStore(CounterStore):
    """Counters in Redis (see the module docstring). ``what`` names what needs them in the
    ``Unavailable`` raised when Redis cannot be reached."""

    client: Any
    url: str
    what: str = "the shared rate-limit and quota counters"

    shared = True

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisCounterStore:
        assert settings.url is not None
        return cls(client=sync_client(settings), url=settings.url)

    def strict(self, what: str) -> CounterStore:
        return replace(self, what=what)

    def _run(self, script: str, key: str, *args: object) -> Any:
        with redis_errors(self.url, self.what):
            return _script(self.client, script)(keys=[key], args=list(args))

    def take(self, key: str, rate: Rate, *, cost: float = 1.0) -> Decision:
        allowed, tokens = self._run(
            TAKE, PREFIX + "bucket:" + key, repr(rate.per_second), rate.burst, repr(cost)
        )
        return Decision.of(bool(allowed), float(tokens), rate, cost)

    def _window(
        self, key: str, window_s: float, member: str, limit: int | None = None
    ) -> tuple[bool, Window]:
        count, first, now, added = self._run(
            WINDOW, PREFIX + "events:" + key, repr(window_s), member, "" if limit is None else limit
        )
        if not count:
            return bool(added), Window(0, 0.0)
        return bool(added), Window(int(count), float(first) + window_s - float(now))

    def add_event(self, key: str, *, window_s: float) -> Window:
        return self._window(key, window_s, secrets.token_hex(8))[1]

    def try_add_event(self, key: str, *, window_s: float, limit: int) -> tuple[bool, Window]:
        return self._window(key, window_s, secrets.token_hex(8), limit)

    def events(self, key: str, *, window_s: float) -> Window:
        return self._window(key, window_s, "")[1]

    def clear(self, key: str) -> None:
        with redis_errors(self.url, self.what):
            self.client.delete(*(PREFIX + kind + key for kind in ("bucket:", "events:", "total:")))

    def total(self, key: str) -> float | None:
        with redis_errors(self.url, self.what):
            value = self.client.get(PREFIX + "total:" + key)
        return None if value is None else float(value)

    def seed(self, key: str, value: float, *, ttl_s: float) -> float:
        ttl_ms = max(1, int(ttl_s * 1000))
        return float(self._run(SEED, PREFIX + "total:" + key, repr(float(value)), ttl_ms))

    def add(self, key: str, amount: float) -> float | None:
        value = self._run(ADD, PREFIX + "total:" + key, repr(float(amount)))
        return None if value is None else float(value)


_scripts: dict[tuple[int, str], Any] = {}


def _script(client: Any, source: str) -> Any:
    """The client's registered script (``EVALSHA``, loaded again after a Redis restart)."""
    key = (id(client), source)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = client.register_script(source)
    return script
