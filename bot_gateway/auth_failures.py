"""Failed authentications per client address: wrong or missing API keys, widget keys and
operator tokens, and failed agent logins.

Each failure is an event in the gateway's counter store under the caller's address. The
setting ``rate_limits.auth_failures_per_address`` (``Rate(per_second, burst)``) allows
``burst`` failures within ``burst / per_second`` seconds (20 in 40 s by default, 0.5 a second
in the long run); past that, a failed authentication from the address is answered ``429``
with ``Retry-After`` (until the oldest failure leaves the window) instead of ``401``, so a
guesser learns nothing more. Requests with valid credentials are never refused: many clients
can share one address (a NAT, a proxy), and one of them guessing must not lock the others out.
Only where checking is itself expensive (an agent's password: scrypt) is an address over the
limit refused before the work is done (``expensive=True``).

The address is the connection's peer (``request.client.host``); behind a reverse proxy run
uvicorn with ``--proxy-headers --forwarded-allow-ips <proxy>`` so it is the client's.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from core.errors import TooManyRequests, Unauthenticated

if TYPE_CHECKING:
    from bot_gateway.deps import Gateway

__all__ = ["address_of", "check", "failed", "guarded"]


def address_of(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client is not None else "unknown"


def _key(address: str) -> str:
    return f"auth_failures:{address}"


def _window_s(gateway: Gateway) -> float:
    rate = gateway.settings.rate_limits.auth_failures_per_address
    return rate.burst / rate.per_second


def check(gateway: Gateway, connection: HTTPConnection, *, allowed: int | None = None) -> None:
    """``TooManyRequests`` if the caller's address failed to authenticate more than
    ``allowed`` times lately (default: the setting's burst, less one)."""
    rate = gateway.settings.rate_limits.auth_failures_per_address
    window = gateway.counter_store.events(_key(address_of(connection)), window_s=_window_s(gateway))
    if window.count > (rate.burst - 1 if allowed is None else allowed):
        wait = max(1, math.ceil(window.oldest_leaves_in))
        raise TooManyRequests(
            f"too many failed authentications from your address; try again in {wait} s",
            retry_after=wait,
        )


def failed(gateway: Gateway, connection: HTTPConnection) -> None:
    """Count one failed authentication of the caller's address."""
    gateway.counter_store.add_event(_key(address_of(connection)), window_s=_window_s(gateway))


@asynccontextmanager
async def guarded(
    gateway: Gateway, connection: HTTPConnection, *, expensive: bool = False
) -> AsyncIterator[None]:
    """Count an ``Unauthenticated`` raised inside as a failure of the caller's address, and
    answer it with ``429`` once the address is over the limit. With ``expensive`` the address
    is refused before the block runs. The counter store is used from a worker thread (with
    Redis it is a network round trip, which must not stall the event loop)."""
    if expensive:
        await run_in_threadpool(check, gateway, connection)
    try:
        yield
    except Unauthenticated:
        await run_in_threadpool(failed, gateway, connection)
        allowed = gateway.settings.rate_limits.auth_failures_per_address.burst
        await run_in_threadpool(check, gateway, connection, allowed=allowed)
        raise
