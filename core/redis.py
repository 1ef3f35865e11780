"""Redis, shared by the gateways and workers of a distributed deployment.

Set ``PARLEY_REDIS__URL`` and gateways keep there what must hold across processes:
conversation locks, live fan-out, look-up cache invalidation, login lockouts, rate-limit
counters and the de-duplication of provider redeliveries; Celery uses it as broker. Without it
all of that stays in process (the embedded mode), and nothing here is imported.

Every caller turns a lost connection into ``Unavailable`` (503, naming Redis) through
``redis_errors``; callers decide what still works without it (predictions do).

    client = sync_client(settings.redis)
    with redis_errors("the conversation lock"):
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
    "KEY_PREFIX",
    "async_client",
    "describe",
    "redis_errors",
    "sync_client",
    "unavailable",
]

KEY_PREFIX = "parley:"
"""Every key and channel Parley uses starts with this."""

RETRY_AFTER_S = 5


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


def unavailable(url: str | None, what: str, error: BaseException | None = None) -> Unavailable:
    """The 503 for ``what`` (``"the conversation lock"``) when Redis cannot be reached."""
    where = describe(url) if url else "Redis"
    cause = f" ({type(error).__name__}: {error})" if error is not None else ""
    return Unavailable(
        f"Redis at {where} is unreachable{cause}, and {what} needs it; nothing was changed. "
        "Try again in a few seconds; operators: check that redis-server is running",
        retry_after=RETRY_AFTER_S,
        service="redis",
    )


@contextmanager
def redis_errors(url: str | None, what: str) -> Iterator[None]:
    """Turn Redis connection and timeout errors inside the block into ``Unavailable``."""
    import redis

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
        raise unavailable(url, what, e) from e
