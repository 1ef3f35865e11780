"""The web chat connector: Parley's own widget, built in for every bot (not created as a
channel). One connector serves one open socket.

``verify`` checks the page's ``Origin`` against the bot's ``allowed_origins``; ``parse`` reads a
frame (a ``message`` becomes an ``InboundMessage`` whose ``uploads`` are images the widget
uploaded first; a ``ping`` is answered with ``pong`` at once); ``send`` writes a bot's message
to this socket and publishes it to the conversation's other listeners (other tabs of the same
session, agents watching) through the gateway's hub, handed over as ``listeners``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field

from connectors.base import (
    Capabilities,
    Connector,
    ConnectorConfig,
    WebhookReply,
    WebhookRequest,
    WebhookResult,
)
from connectors.registry import builtin_connectors
from connectors.webchat.access import check_origin
from connectors.webchat.frames import FrameError, inbound_of, message_frame, read_frame
from core.messages import OutboundMessage

__all__ = ["SocketWriter", "WebchatConfig", "WebchatConnector"]

SocketWriter = Callable[[dict[str, Any]], Awaitable[None]]
"""Sends one JSON frame to this connector's own socket."""

PONG = json.dumps({"type": "pong"}, separators=(",", ":")).encode()


class WebchatConfig(ConnectorConfig):
    """The bot's web chat settings (from its definition)."""

    allowed_origins: list[str] = Field(
        default=[], description="pages that may embed the widget; `*` for any"
    )


@builtin_connectors.register("webchat")
class WebchatConnector(Connector[WebchatConfig]):
    """One web chat socket of one conversation (see the module docstring)."""

    type = "webchat"
    Config = WebchatConfig
    title = "Web chat"
    webhook_path = "/v1/bots/{bot_id}/ws"
    setup_steps = (
        "Every bot has a web chat: add the pages that may embed it to the bot definition's "
        "allowed_origins.",
        "Paste the widget snippet (the bot's widget key) into those pages; the widget talks "
        "to the bot over the websocket at /v1/bots/{bot_id}/ws.",
    )
    capabilities = Capabilities(
        buttons=True, quick_replies=True, images=True, cards=True, inbound_images=True
    )

    def __init__(
        self,
        config: WebchatConfig,
        *,
        bot_id: str,
        session_id: str,
        conversation_id: str,
        socket: SocketWriter,
    ) -> None:
        self.config = config
        self.webhook_url = ""  # the gateway's socket route; no provider calls it
        self.bot_id = bot_id
        self.session_id = session_id
        self.conversation_id = conversation_id
        self.socket = socket

    def verify(self, request: WebhookRequest) -> None:
        """``Forbidden`` unless the page's ``Origin`` may use the widget (a socket without one
        is refused when the bot names its origins)."""
        check_origin(
            self.config.allowed_origins,
            request.header("origin"),
            required=True,
            bot_id=self.bot_id,
        )

    def parse(self, request: WebhookRequest) -> WebhookResult:
        """One frame (its UTF-8 bytes as the body); ``FrameError`` for one the server does
        not take."""
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FrameError("frames are JSON text in UTF-8") from e
        return self.parse_frame(text)

    def parse_frame(self, text: str) -> WebhookResult:
        """A frame's text: a ``message`` (the customer's turn) or a ``ping`` (a ``pong``)."""
        frame = read_frame(text)
        kind = frame["type"]
        if kind == "ping":
            return WebhookResult(reply=WebhookReply(body=PONG, media_type="application/json"))
        if kind != "message":
            raise FrameError(f'unknown frame type "{kind}"; send "message" or "ping"')
        return WebhookResult(messages=[inbound_of(frame, self.session_id)])

    async def send(
        self,
        recipient: str,
        message: OutboundMessage,
        metadata: dict[str, Any],
    ) -> None:
        """The message to this socket (the gateway tells the conversation's other listeners)."""
        await self.socket(message_frame(message))
