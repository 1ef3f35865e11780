"""Web chat: Parley's embeddable widget (``static/widget.js``, the demo page) and the
connector behind its socket. The protocol is in ``protocol.md``; the gateway owns the routes
(``/v1/bots/{bot_id}/ws``, uploads, ``/widget.js``, ``/demo``) and finds the static files
with ``static_file``."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

from connectors.webchat.connector import SocketWriter, WebchatConfig, WebchatConnector

__all__ = ["SocketWriter", "WebchatConfig", "WebchatConnector", "static_file"]


def static_file(name: str) -> Traversable:
    """One of the widget's static files (``widget.js``, ``demo.html``), from the installed
    package."""
    return files(__name__) / "static" / name
