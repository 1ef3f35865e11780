"""What the Slack and Messenger tests share: a connector built from its kit, talking to the
kit's fake provider (or to ``handler``), whose waits between retries are recorded, not slept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from connectors.base import Connector
from connectors.registry import connectors
from tests.connectors.kits import Kit

__all__ = ["Waits", "build"]

Handler = Callable[[httpx.Request], httpx.Response]


class Waits(list[float]):
    """A ``sleep`` that records how long it was asked to wait."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def build(
    kit: Kit, *, url: str, image: bytes, handler: Handler | None = None
) -> tuple[Connector[Any], list[httpx.Request], Waits]:
    """The kit's connector at ``url``, the requests its provider got, and its retry waits."""
    calls: list[httpx.Request] = []
    transport = kit.provider(image, calls) if handler is None else httpx.MockTransport(handler)
    cls = connectors.get(kit.type)
    connector = cls(
        cls.Config.model_validate(kit.config()),
        httpx.AsyncClient(transport=transport),
        webhook_url=url,
    )
    waits = Waits()
    connector._sleep = waits  # type: ignore[attr-defined]
    return connector, calls, waits
