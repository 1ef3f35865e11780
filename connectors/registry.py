"""The registry of channel connectors (the one plug-in mechanism, ``core.registry``)."""

from __future__ import annotations

from connectors.base import Connector
from core.registry import Registry

__all__ = ["connectors"]

connectors: Registry[type[Connector]] = Registry("channel type")  # type: ignore[type-arg]
