"""Outbound calls to a provider's API with retries: 429 and 5xx (and dropped connections) are
retried with exponential backoff, honouring ``Retry-After``; other 4xx fail at once. A message
that cannot be delivered raises ``DeliveryFailed``, which the gateway records on the
conversation."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from core.errors import DeliveryFailed
from core.logging import log_event

__all__ = ["DeliveryFailed", "request_with_retries", "retry_after"]

Sleep = Callable[[float], Awaitable[None]]
WaitHint = Callable[[httpx.Response], float | None]
"""A provider's own way of saying "retry in N seconds" (a JSON field; throttling sent as a
400): the seconds to wait, or None for the usual rules."""


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def request_with_retries(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    attempts: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    sleep: Sleep = asyncio.sleep,
    wait_hint: WaitHint | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """``client.request`` until it succeeds (2xx) or ``attempts`` run out."""
    problem = ""
    for attempt in range(1, attempts + 1):
        delay = min(max_delay, base_delay * 2 ** (attempt - 1))
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TransportError as e:
            problem = f"{type(e).__name__}: {e}"
        else:
            if response.is_success:
                return response
            problem = f"{response.status_code} {response.text[:200]}"
            hinted = wait_hint(response) if wait_hint is not None else None
            if hinted is None and response.status_code != 429 and response.status_code < 500:
                raise DeliveryFailed(f"{what}: the provider refused it ({problem})")
            delay = min(max_delay, hinted if hinted is not None else retry_after(response) or delay)
        if attempt < attempts:
            log_event("connector.retry", what=what, attempt=attempt, problem=problem, wait=delay)
            await sleep(delay)
    raise DeliveryFailed(f"{what}: failed after {attempts} attempts ({problem})")
