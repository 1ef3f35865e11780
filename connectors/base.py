"""What every channel connector is: a config schema, capabilities, what a person needs to set
it up (``title``, ``setup_steps``, ``docs_url``, ``webhook_path``), and four jobs —
``verify`` a webhook (signatures, replay window; never optional), ``parse`` it into
``InboundMessage``s, ``fetch`` the media a message points to, and ``send`` an outbound message;
``handoff`` (optional) tells a platform with agents of its own that a person should take over.

Connectors know nothing of FastAPI or the database: the gateway owns the routes
(``POST /webhooks/{channel_id}``, and ``GET`` for platforms with a verification handshake),
hands a connector a framework-free ``WebhookRequest``, and gives it an ``httpx.AsyncClient``
(tests pass ``httpx.MockTransport``). Outbound messages are ``core.messages.OutboundMessage``
(``text``, ``buttons``, ``quick_replies``, ``image``, ``cards``, ``custom``; re-exported here);
kinds a channel cannot show degrade to text (``as_text``).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict

from core.messages import Button, Card, OutboundMessage
from core.secrets import secret_fields

__all__ = [
    "Button",
    "Capabilities",
    "Card",
    "Connector",
    "ConnectorConfig",
    "InboundMessage",
    "Media",
    "OutboundMessage",
    "WebhookReply",
    "WebhookRequest",
    "WebhookResult",
    "as_text",
]


class ConnectorConfig(BaseModel):
    """A connector's settings; secrets are ``SecretStr`` and never returned by the API."""

    model_config = ConfigDict(extra="forbid")


C = TypeVar("C", bound=ConnectorConfig)

WEBHOOK_PATH = "/webhooks/{channel_id}"
"""Where a provider calls a connected channel (the gateway's route; ``webhook_url`` in full)."""


@dataclass(frozen=True)
class Capabilities:
    """What a channel can show; the rest degrades to text."""

    buttons: bool = False
    quick_replies: bool = False
    images: bool = False
    cards: bool = False
    inbound_images: bool = False


@dataclass(frozen=True)
class WebhookRequest:
    """A webhook call as the provider made it."""

    method: str
    url: str  # the full public URL it was sent to (Twilio signs it)
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Media:
    """An image a customer sent, to be fetched with ``Connector.fetch``."""

    url: str | None = None
    file_id: str | None = None  # Telegram: resolved through getFile
    media_type: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class InboundMessage:
    """One customer message from a channel."""

    sender_id: str  # who to answer: a chat, a phone number, a page-scoped id, a Slack channel
    text: str = ""
    payload: str | None = None  # a button, postback or callback (``/intent``)
    media: tuple[Media, ...] = ()
    uploads: tuple[str, ...] = ()  # images already kept by the gateway (web chat, REST): ids
    message_id: str | None = None  # the provider's id: a redelivery is answered once
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookReply:
    """What the gateway answers the provider (a challenge, a plain 200)."""

    status: int = 200
    body: bytes = b""
    media_type: str = "text/plain"


@dataclass(frozen=True)
class WebhookResult:
    messages: list[InboundMessage] = field(default_factory=list)
    reply: WebhookReply = field(default_factory=WebhookReply)


class Connector(Generic[C]):
    """Base of every connector; subclasses set ``type``, ``Config``, ``capabilities``, what a
    person needs to set the channel up (``title``, ``setup_steps``, ``docs_url``) and
    implement ``verify``, ``parse``, ``send`` (and ``fetch`` when customers can send images)."""

    type: ClassVar[str]
    Config: ClassVar[builtins.type[ConnectorConfig]]  # builtins: ``type`` here is the name above
    capabilities: ClassVar[Capabilities] = Capabilities()
    title: ClassVar[str]
    """The channel's name as people know it (``Slack``, ``SMS and WhatsApp (Twilio)``)."""
    setup_steps: ClassVar[tuple[str, ...]] = ()
    """What to do at the provider, in order; ``{webhook_url}`` stands for the channel's URL."""
    docs_url: ClassVar[str | None] = None
    """The provider's documentation of what the setup steps touch."""
    webhook_path: ClassVar[str | None] = WEBHOOK_PATH
    """Where the provider calls the gateway; the built-in channels name their own route."""
    self_hosted: ClassVar[bool] = False
    """The provider's API is at an address the tenant configures (an install of its own): the
    gateway gives the connector a client whose calls obey ``PARLEY_OUTBOUND__ALLOW_HOSTS``
    (``core.outbound``), private addresses refused unless allowed."""
    replay_window_s: ClassVar[float] = 300.0
    _sleep = staticmethod(asyncio.sleep)  # the waits between retries (tests replace it)

    def __init__(self, config: C, client: httpx.AsyncClient, *, webhook_url: str) -> None:
        self.config = config
        self.client = client
        self.webhook_url = webhook_url

    def verify(self, request: WebhookRequest) -> None:
        """Raise ``core.errors.Unauthenticated`` unless the provider signed this request
        (and, where the provider stamps it, it is inside the replay window)."""
        raise NotImplementedError

    def handshake(self, request: WebhookRequest) -> WebhookReply | None:
        """The answer to a GET verification handshake (Messenger's ``hub.challenge``), or
        None when the platform has none."""
        return None

    def parse(self, request: WebhookRequest) -> WebhookResult:
        """The messages in a verified webhook. A payload of a shape the connector does not
        know raises ``core.errors.InvalidInput`` (the gateway still answers 200, so the
        provider stops retrying, and logs why)."""
        raise NotImplementedError

    async def fetch(self, media: Media, *, max_bytes: int) -> bytes:
        """The bytes of an image a customer sent (at most ``max_bytes``)."""
        raise NotImplementedError

    async def send(
        self, recipient: str, message: OutboundMessage, metadata: dict[str, Any]
    ) -> None:
        """Deliver one outbound message; raise ``DeliveryFailed`` when it cannot be.
        ``metadata`` is the reply address ``parse`` put on the customer's message."""
        raise NotImplementedError

    async def handoff(self, recipient: str, metadata: dict[str, Any]) -> None:
        """The conversation with ``recipient`` was handed to a person: tell a platform that has
        human agents of its own (open the conversation to them); raise ``DeliveryFailed`` when
        it cannot be told. Most channels have nothing to tell (the default)."""
        return None

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        """The JSON Schema of ``Config``, each secret (``SecretStr``) field ``writeOnly``: it is
        set, never shown again."""
        schema = cls.Config.model_json_schema()
        properties = schema.get("properties", {})
        for name in secret_fields(cls.Config):
            properties[name]["writeOnly"] = True
        return schema

    async def register(self) -> None:
        """Tell the platform where the webhook is, where it has an API for that; raise
        ``DeliveryFailed`` when it cannot be told. Connectors of platforms without such an API
        do not override this (the gateway then reports the registration ``not_needed``)."""
        return None


def as_text(message: OutboundMessage) -> str:
    """A message for a text-only channel: its text, then each card's title (and subtitle), the
    image URL, and the buttons and quick replies as numbered options (the customer answers
    with the number)."""
    lines = [message.text] if message.text else []
    for card in message.cards:
        lines.append(" - ".join(p for p in (card.title, card.subtitle) if p))
    if message.image:
        lines.append(message.image)
    lines.extend(f"{i}. {b.title}" for i, b in enumerate(message.options(), 1))
    return "\n".join(lines)
