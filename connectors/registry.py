"""The registries of channel connectors (the one plug-in mechanism, ``core.registry``):
``connectors``, the channel types a bot can be connected to (``POST /v1/bots/{id}/channels``),
and ``builtin_connectors``, the channels every bot has without being connected (web chat, the
REST channel), which cannot be created as channels."""

from __future__ import annotations

from connectors.base import Connector
from core.registry import Registry

__all__ = ["builtin_connectors", "connectors"]

connectors: Registry[type[Connector]] = Registry("channel type")  # type: ignore[type-arg]
builtin_connectors: Registry[type[Connector]] = Registry("built-in channel")  # type: ignore[type-arg]
