"""What the gateways of one deployment share about conversations: the lock that runs a
conversation's messages one at a time, and the transport that carries live frames (web chat
sockets, the agents' console) to listeners on other gateways.

One gateway (the embedded default) shares nothing: ``InProcess`` holds no lock beyond the
runtime's own asyncio lock and sends frames nowhere. With ``PARLEY_REDIS__URL`` set,
``sharing_for`` builds ``bot_gateway.conversations.cluster.RedisSharing`` (Redis locks with a
lease, pub/sub fan-out). The runtime and the ``Hub`` see only these interfaces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from core.settings import Settings

__all__ = [
    "Deliver",
    "Fence",
    "HubTransport",
    "InProcess",
    "Locks",
    "Sharing",
    "sharing_for",
]

Deliver = Callable[[str, dict[str, Any]], None]
"""(topic, frame) -> hand a frame from another gateway to this process's listeners."""


class Fence(Protocol):
    async def check(self) -> None:
        """Raise unless the lock is still held, and keep it held long enough for the save
        that follows (a turn saves only while it holds its conversation's lock)."""


class Locks(Protocol):
    def hold(self, key: str) -> AbstractAsyncContextManager[Fence]:
        """Hold the conversation ``key`` across gateways (the caller already holds it in
        this process)."""


class HubTransport(Protocol):
    def attach(self, deliver: Deliver) -> None:
        """Where frames from other gateways go (the hub's local delivery)."""

    def send(self, topic: str, frame: dict[str, Any]) -> None:
        """Tell the other gateways (never raises, never blocks: a lost frame is logged)."""

    def watch(self, topic: str) -> None:
        """This process has a first listener of ``topic``."""

    def unwatch(self, topic: str) -> None:
        """This process has no listener of ``topic`` any more."""

    async def ready(self, topic: str) -> None:
        """Return once frames of ``topic`` from other gateways reach this process (at once
        when they cannot: the transport is down, or there are no other gateways)."""


class Sharing(Protocol):
    @property
    def locks(self) -> Locks: ...

    @property
    def transport(self) -> HubTransport: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _NoFence:
    async def check(self) -> None:
        return None


class InProcess:
    """One gateway: the runtime's asyncio lock is the whole lock; frames stay here."""

    def __init__(self) -> None:
        self.locks: Locks = self
        self.transport: HubTransport = self

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[Fence]:
        yield _NoFence()

    def attach(self, deliver: Deliver) -> None:
        return None

    def send(self, topic: str, frame: dict[str, Any]) -> None:
        return None

    def watch(self, topic: str) -> None:
        return None

    def unwatch(self, topic: str) -> None:
        return None

    async def ready(self, topic: str) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def sharing_for(settings: Settings) -> Sharing:
    """Redis when ``PARLEY_REDIS__URL`` is set, otherwise nothing shared."""
    if settings.redis.url:
        from bot_gateway.conversations.cluster import RedisSharing

        return RedisSharing(settings.redis)
    return InProcess()
