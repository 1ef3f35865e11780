"""Retries of outbound provider calls: Retry-After (seconds or a date), a provider's own hint
(Telegram's JSON retry_after, Meta's throttling 400s), refusals and exhausted attempts."""

from __future__ import annotations

import asyncio
import email.utils
import time

import httpx
import pytest

from connectors.delivery import request_with_retries, retry_after
from connectors.messenger import _throttled
from connectors.telegram import _flood_wait
from core.errors import DeliveryFailed


def run(answers: list[httpx.Response], **kwargs: object) -> tuple[httpx.Response, list[float]]:
    waits: list[float] = []
    queue = list(answers)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go() -> httpx.Response:
        transport = httpx.MockTransport(lambda request: queue.pop(0))
        async with httpx.AsyncClient(transport=transport) as client:
            return await request_with_retries(
                client, "POST", "https://api.example/send", what="test", sleep=sleep, **kwargs
            )

    return asyncio.run(go()), waits


def test_busy_answers_are_retried_as_long_as_the_provider_asks() -> None:
    later = email.utils.formatdate(time.time() + 7, usegmt=True)
    answers = [
        httpx.Response(429, headers={"Retry-After": "3"}),
        httpx.Response(503, headers={"Retry-After": later}),
        httpx.Response(200, json={"ok": True}),
    ]
    response, waits = run(answers)
    assert response.status_code == 200
    assert waits[0] == 3 and 5 <= waits[1] <= 7


def test_a_refusal_fails_at_once_and_busy_forever_gives_up() -> None:
    with pytest.raises(DeliveryFailed, match="refused"):
        run([httpx.Response(403, json={"error": "forbidden"})])
    with pytest.raises(DeliveryFailed, match="after 4 attempts"):
        run([httpx.Response(502)] * 4)


def test_providers_hints_are_honoured() -> None:
    telegram = [
        httpx.Response(429, json={"ok": False, "parameters": {"retry_after": 11}}),
        httpx.Response(200, json={"ok": True}),
    ]
    assert run(telegram, wait_hint=_flood_wait)[1] == [11]
    meta = [
        httpx.Response(400, json={"error": {"code": 613, "message": "Calls exceeded"}}),
        httpx.Response(200, json={"recipient_id": "1"}),
    ]
    assert run(meta, wait_hint=_throttled)[1] == [5.0]
    with pytest.raises(DeliveryFailed):  # a real 400 is still a refusal
        run([httpx.Response(400, json={"error": {"code": 100}})], wait_hint=_throttled)
    assert retry_after(httpx.Response(429)) is None
