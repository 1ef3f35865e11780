"""Redis, shared by the gateways and workers of a distributed deployment.

Set ``PARLEY_REDIS__URL`` and gateways keep there what must hold across processes:
conversation locks, live fan-out, look-up cache invalidation, login lockouts, rate-limit
counters and the de-duplication of provider redeliveries; Celery uses it as broker. Without it
all of that stays in process (the embedded mode), and nothing here is imported.

Every caller turns "Redis cannot serve" into ``Unavailable`` (503, naming Redis) through
``redis_errors`` (``cannot_serve`` says which errors those are: a lost connection or a timeout,
and Redis refusing commands it would run when well, such as writes while out of memory or on a
read-only replica); callers decide what still works without it (predictions do).

    client = sync_client(settings.redis)
    with redis_errors(settings.redis.url, "the conversation lock"):
        client.set(...)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core.errors import ConfigurationError, Unavailable
from core.settings import RedisSettings

__all__ = [
    "COMPARE_AND_DELETE",
    "KEY_PREFIX",
    "async_client",
    "cannot_serve",
    "describe",
    "redis_errors",
    "sync_client",
    "unavailable",
]

KEY_PREFIX = "parley:"
"""Every key and channel Parley uses starts with this."""

RETRY_AFTER_S = 5

COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
"""A Lua script: delete KEYS[1] only while it holds ARGV[1] (a lock's or a record's token)."""

REFUSAL_CODES = frozenset(
    {
        "OOM",
        "READONLY",
        "MISCONF",
        "NOREPLICAS",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "BUSY",
        "LOADING",
    }
)
"""Error codes of a Redis that cannot serve now (out of memory under ``maxmemory`` with
``noeviction``, a read-only replica, a failed snapshot with ``stop-writes-on-bgsave-error``,
too few replicas, a replica without its master, a cluster slot moving, a script or module
hogging the server, a dataset still loading): an outage to wait out, not a wrong command."""


def describe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _require(settings: RedisSettings) -> str:
    if not settings.url:
        raise ConfigurationError("PARLEY_REDIS__URL is not set; set it to redis://host:port/db")
    return settings.url


@lru_cache(maxsize=8)
def _sync_client(url: str, timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def sync_client(settings: RedisSettings) -> Any:
    """One thread-safe client (a connection pool) per URL in this process."""
    return _sync_client(_require(settings), settings.socket_timeout_s)


def async_client(settings: RedisSettings) -> Any:
    """A new asyncio client; its owner (one event loop) closes it with ``aclose()``."""
    import redis.asyncio

    return redis.asyncio.Redis.from_url(
        _require(settings),
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=30,
    )


def _unreachable(error: BaseException) -> bool:
    import redis

    errors = redis.exceptions
    return isinstance(error, errors.ConnectionError | errors.TimeoutError | OSError)


def cannot_serve(error: BaseException) -> bool:
    """Whether ``error`` means Redis cannot serve now: it cannot be reached or timed out
    (``OSError`` too), or it refused the command with one of ``REFUSAL_CODES``. Other errors
    (a wrong type, a bad argument) are bugs, not outages."""
    import redis

    if _unreachable(error):
        return True
    if not isinstance(error, redis.exceptions.ResponseError):
        return False
    # redis-py strips the codes it knows into status_code; the others lead the message
    # (so do codes from inside a Lua script: "OOM command not allowed ... script: ...")
    code = getattr(error, "status_code", None) or str(error).split(" ", 1)[0]
    return code in REFUSAL_CODES


def unavailable(url: str | None, what: str, error: BaseException | None = None) -> Unavailable:
    """The 503 for ``what`` (``"the conversation lock"``) when Redis cannot serve."""
    where = describe(url) if url else "Redis"
    cause = f" ({type(error).__name__}: {error})" if error is not None else ""
    if error is None or _unreachable(error):
        state, check = "is unreachable", "check that redis-server is running"
    else:
        state = "refuses commands"
        check = "the refusal (in parentheses) names what to fix: memory, replicas or disk"
    return Unavailable(
        f"Redis at {where} {state}{cause}, and {what} needs it; nothing was changed. "
        f"Try again in a few seconds; operators: {check}",
        retry_after=RETRY_AFTER_S,
        service="redis",
    )


@contextmanager
def redis_errors(url: str | None, what: str) -> Iterator[None]:
    """Turn the errors of a Redis that cannot serve (``cannot_serve``) inside the block into
    ``Unavailable``; other errors pass through."""
    try:
        yield
    except Exception as e:
        if cannot_serve(e):
            raise unavailable(url, what, e) from e
        raise
