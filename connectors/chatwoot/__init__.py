"""Chatwoot, with Parley as an agent bot: the team keeps Chatwoot as its inbox, Parley answers
first and hands conversations to Chatwoot's human agents.

Inbound
    An agent bot's ``outgoing_url`` gets Chatwoot's events (``AgentBotListener``) as
    ``message.webhook_data`` plus ``event``. Chatwoot signed none of them before v4.13, so
    every call must carry the channel's ``webhook_token`` in the URL (``?token=...``, compared
    in constant time): it is part of the URL a person pastes into Chatwoot. Where Chatwoot
    signs them (v4.13 and later, the agent bot's *secret*), set ``webhook_secret`` and the
    ``X-Chatwoot-Signature`` (``sha256=`` HMAC-SHA256 of ``{timestamp}.{body}``) and a fresh
    ``X-Chatwoot-Timestamp`` are required too.

    Understood: ``message_created`` of ``message_type`` ``incoming`` that is not ``private``
    (the contact's message: its ``content``, and its image ``attachments``, fetched from their
    ``data_url``), and ``message_updated`` carrying ``content_attributes.submitted_values`` (the
    contact chose an option of an ``input_select`` message: ``payload`` is the option's
    ``value``). Everything else (the bot's and agents' own outgoing messages, private notes,
    ``conversation_created``, ``conversation_status_changed``, ``webwidget_triggered``, other
    updates) is ``InvalidInput``: answered 200 and ignored. An event of another account than
    ``account_id`` is ignored the same way.
    ``sender_id`` is the conversation's id (``display_id``, what the API calls it) and
    ``message_id`` ``<account>:<message id>`` (``select:`` before it for a choice): the same on
    every redelivery.

Outbound
    ``POST /api/v1/accounts/{account_id}/conversations/{id}/messages`` with the agent bot's
    ``api_access_token`` header: text as ``outgoing`` messages; buttons and quick replies as an
    ``input_select`` (``content_attributes.items`` of ``{title, value}``); cards as ``cards``
    (``media_url``, ``title``, ``description``, ``actions``: a ``postback`` per payload button,
    a ``link`` per URL button). The API takes attachments only as file uploads, so an image
    goes as its link in the text. Chatwoot's documented interactive messages show in the web
    widget and API inboxes; other inboxes show the text.

Handoff
    Conversations of an inbox with an agent bot stay ``pending`` for the bot;
    ``handoff`` opens it (``POST .../conversations/{id}/toggle_status`` ``{"status":
    "open"}``) so it reaches the human agents' queue.

The install is the tenant's (``base_url``): the gateway gives this connector the client whose
calls obey ``PARLEY_OUTBOUND__ALLOW_HOSTS`` (``self_hosted``); a refused address is a
``DeliveryFailed`` naming it.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from connectors._common import check_signature, hmac_sha256, public_url
from connectors._download import download, refuse_oversized
from connectors.base import (
    Button,
    Capabilities,
    Card,
    Connector,
    ConnectorConfig,
    InboundMessage,
    Media,
    OutboundMessage,
    WebhookRequest,
    WebhookResult,
    as_text,
)
from connectors.delivery import request_with_retries
from connectors.registry import connectors
from core.errors import DeliveryFailed, InvalidInput, OutboundRefused, Unauthenticated
from core.logging import log_event

__all__ = ["ChatwootConfig", "ChatwootConnector", "signature"]

TOKEN_PARAM = "token"
SIGNATURE_HEADER = "X-Chatwoot-Signature"
TIMESTAMP_HEADER = "X-Chatwoot-Timestamp"
TOKEN_HEADER = "api_access_token"
TEXT_MAX = 150_000  # Chatwoot's limit on a message's content


class ChatwootConfig(ConnectorConfig):
    """``base_url``: the Chatwoot install (``https://app.chatwoot.com``); ``account_id``: the
    number in its dashboard URLs (``/app/accounts/3/...``); ``api_access_token``: the agent
    bot's access token; ``webhook_token``: yours to choose (16+ characters), it goes in the
    URL Chatwoot calls; ``webhook_secret``: the agent bot's signing secret, where Chatwoot
    shows one (v4.13 and later)."""

    model_config = ConfigDict(hide_input_in_errors=True)  # errors never echo a secret

    base_url: str = Field(description="the Chatwoot install, e.g. https://app.chatwoot.com")
    account_id: int = Field(ge=1, description="the account's id (in its dashboard URLs)")
    api_access_token: SecretStr = Field(description="the agent bot's access token")
    webhook_token: SecretStr = Field(
        description="a secret of 16+ characters you choose; Chatwoot calls the webhook URL "
        "with ?token=<it>"
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="the agent bot's webhook secret (Chatwoot 4.13+ signs its calls with it)",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url_shape(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "base_url is the install's http(s) address, like https://app.chatwoot.com"
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("base_url takes no query, fragment or credentials")
        return value.strip().rstrip("/")

    @field_validator("webhook_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if (
            len(token) < 16
            or not token.isascii()
            or not all(c.isalnum() or c in "-_." for c in token)
        ):
            raise ValueError(
                "webhook_token needs 16 or more characters of A-Z, a-z, 0-9, -, _ and ."
            )
        return value


# -- the parts of Chatwoot's webhook payload that Parley reads (``Message#webhook_data``) --


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Account(_Model):
    id: int


class _Conversation(_Model):
    id: int  # the display_id: what the API's URLs use
    inbox_id: int | None = None
    status: str | None = None


class _Party(_Model):
    id: int | None = None
    name: str | None = None
    type: str | None = None  # contact, user, agent_bot


class _Attachment(_Model):
    id: int | None = None
    file_type: str | None = None  # image, audio, video, file, location, fallback
    data_url: str | None = None
    extension: str | None = None
    file_size: int | None = None


class _Choice(_Model):
    title: str | None = None
    value: str | None = None


class _ContentAttributes(_Model):
    submitted_values: list[_Choice] | None = None


class _Event(_Model):
    event: str
    id: int | None = None
    content: str | None = None
    message_type: Literal["incoming", "outgoing", "activity", "template"] | int | None = None
    content_type: str | None = None
    content_attributes: _ContentAttributes | None = None
    private: bool = False
    attachments: list[_Attachment] = []
    sender: _Party | None = None
    contact: _Party | None = None
    conversation: _Conversation | None = None
    account: _Account | None = None

    @field_validator("content_attributes", mode="before")
    @classmethod
    def _attributes(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else None  # Chatwoot may send a JSON string


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Chatwoot-Signature``: ``sha256=`` and the hex HMAC-SHA256 of ``{timestamp}.{body}``
    under the secret (``Webhooks::Trigger``)."""
    return "sha256=" + hmac_sha256(secret, timestamp.encode() + b"." + body)


def _same(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


@connectors.register("chatwoot")
class ChatwootConnector(Connector[ChatwootConfig]):
    """Parley as a Chatwoot agent bot (see the module docstring)."""

    type: ClassVar[str] = "chatwoot"
    Config = ChatwootConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        buttons=True, quick_replies=True, images=False, cards=True, inbound_images=True
    )
    self_hosted: ClassVar[bool] = True
    title: ClassVar[str] = "Chatwoot (agent bot)"
    docs_url: ClassVar[str | None] = "https://www.chatwoot.com/docs/product/others/agent-bots"
    setup_steps: ClassVar[tuple[str, ...]] = (
        "In Chatwoot (as an administrator), add an agent bot: Settings → Bots → Add bot (on a "
        "self-hosted install, Super Admin → Agent Bots). As its webhook URL give "
        "{webhook_url}?token=<webhook_token>, with the webhook_token you chose (16+ of A-Z, "
        "a-z, 0-9, -, _ and .).",
        "Copy the bot's access token into api_access_token, the account id (the number in "
        "/app/accounts/<id>/ of the dashboard's URLs) into account_id, and the install's "
        "address (https://app.chatwoot.com or your own) into base_url. If Chatwoot shows the "
        "bot a webhook secret (version 4.13 and later), copy it into webhook_secret.",
        "Connect the bot to an inbox: Settings → Inboxes → the inbox → Bot configuration → "
        "choose the bot. Its new conversations then stay pending for the bot.",
        "Write to the inbox (its web widget, say): Parley answers, and when it hands the "
        "conversation to a person, the conversation is opened to the inbox's agents.",
    )

    # -- inbound --

    def verify(self, request: WebhookRequest) -> None:
        if not _same(request.query.get(TOKEN_PARAM), self.config.webhook_token.get_secret_value()):
            reason = (
                "the token query parameter is missing"
                if not request.query.get(TOKEN_PARAM)
                else "the token query parameter does not match this channel's webhook_token"
            )
            self._refuse(reason, "give Chatwoot the webhook URL with ?token=<webhook_token>")
        if self.config.webhook_secret is None:
            return
        stamp = request.header(TIMESTAMP_HEADER) or ""
        secret = self.config.webhook_secret.get_secret_value()
        check_signature(
            request.header(SIGNATURE_HEADER),
            signature(secret, stamp, request.body),
            channel="chatwoot",
            header=SIGNATURE_HEADER,
        )
        try:
            age = abs(request.received_at - float(stamp))
        except ValueError:
            age = float("inf")
        if age > self.replay_window_s:
            self._refuse(
                f"the {TIMESTAMP_HEADER} is outside the {self.replay_window_s:g}s replay window",
                "check the clocks of Chatwoot and Parley",
            )

    def _refuse(self, reason: str, fix: str) -> None:
        log_event("connector.chatwoot.verify_failed", reason=reason)
        raise Unauthenticated(
            f"{reason}; only this channel's Chatwoot agent bot may call it: {fix}"
        )

    def parse(self, request: WebhookRequest) -> WebhookResult:
        try:
            event = _Event.model_validate(json.loads(request.body))
        except (ValueError, ValidationError) as e:
            raise InvalidInput(f"not a Chatwoot agent bot event: {_first_error(e)}") from e
        if event.event == "message_created":
            return WebhookResult(messages=[self._message(event)])
        if event.event == "message_updated":
            return WebhookResult(messages=[self._choice(event)])
        raise InvalidInput(
            f"Chatwoot event {event.event}: only the contact's new messages (message_created) "
            "and chosen options (message_updated with submitted_values) are answered"
        )

    def _address(self, event: _Event) -> tuple[_Conversation, int]:
        if event.conversation is None or event.account is None or event.id is None:
            raise InvalidInput(f"Chatwoot {event.event} without its conversation, account or id")
        if event.account.id != self.config.account_id:
            raise InvalidInput(
                f"a Chatwoot event of account {event.account.id}; this channel answers account "
                f"{self.config.account_id}"
            )
        return event.conversation, event.account.id

    def _message(self, event: _Event) -> InboundMessage:
        conversation, account = self._address(event)
        if event.message_type not in ("incoming", 0) or event.private:
            kind = "a private note" if event.private else f"an {event.message_type} message"
            raise InvalidInput(f"Chatwoot message {event.id} is {kind}, not the contact's")
        media = tuple(
            Media(
                url=a.data_url,
                media_type=_image_type(a.extension),
                size=a.file_size,
            )
            for a in event.attachments
            if a.file_type == "image" and a.data_url
        )
        text = event.content or ""
        if not text.strip() and not media:
            raise InvalidInput(
                f"Chatwoot message {event.id} has no text or image (a file, audio, a location)"
            )
        return InboundMessage(
            sender_id=str(conversation.id),
            text=text,
            media=media,
            message_id=f"{account}:{event.id}",
            metadata=_metadata(event, conversation, account),
        )

    def _choice(self, event: _Event) -> InboundMessage:
        conversation, account = self._address(event)
        chosen = event.content_attributes.submitted_values if event.content_attributes else None
        if not chosen:
            raise InvalidInput(f"Chatwoot message {event.id} was updated without a choice")
        option = chosen[0]
        payload = option.value or option.title
        if not payload:
            raise InvalidInput(f"Chatwoot message {event.id}: the chosen option is empty")
        return InboundMessage(
            sender_id=str(conversation.id),
            payload=payload,
            text="" if payload.startswith("/") else payload,
            message_id=f"select:{account}:{event.id}",
            metadata=_metadata(event, conversation, account),
        )

    # -- media --

    async def fetch(self, media: Media, *, max_bytes: int) -> bytes:
        if not media.url:
            raise InvalidInput("a Chatwoot attachment is fetched from its data_url, and has none")
        refuse_oversized(media.size, max_bytes=max_bytes, what="the Chatwoot image")
        try:  # the blob URL redirects to the install's storage; each hop is checked again
            return await download(
                self.client,
                media.url,
                max_bytes=max_bytes,
                what="the Chatwoot image",
                follow_redirects=True,
            )
        except OutboundRefused as e:
            raise DeliveryFailed(f"the Chatwoot image: {e.message}") from e

    # -- outbound --

    async def send(
        self, recipient: str, message: OutboundMessage, metadata: dict[str, Any]
    ) -> None:
        conversation = _conversation_id(recipient)
        for body in self.bodies(message):
            await self._call(f"conversations/{conversation}/messages", body, what="messages")

    async def handoff(self, recipient: str, metadata: dict[str, Any]) -> None:
        conversation = _conversation_id(recipient)
        await self._call(
            f"conversations/{conversation}/toggle_status", {"status": "open"}, what="toggle_status"
        )

    def bodies(self, message: OutboundMessage) -> list[dict[str, Any]]:
        """The messages API bodies that show ``message``: its text (and the link of its image)
        with its options as an ``input_select``, then its cards as one ``cards`` message."""
        lines = [message.text] if message.text else []
        image = public_url(message.image, self.webhook_url, channel=self.type)
        if image:
            lines.append(image)
        text = "\n".join(lines)
        out: list[dict[str, Any]] = []
        options = message.options()
        if options:
            items = [_item(b) for b in options]
            out.append(
                _outgoing(
                    text or as_text(OutboundMessage(buttons=tuple(options))),
                    content_type="input_select",
                    content_attributes={"items": items},
                )
            )
        elif text:
            out.append(_outgoing(text))
        if message.cards:
            out.append(
                _outgoing(
                    "\n".join(c.title for c in message.cards if c.title) or "\u2022",
                    content_type="cards",
                    content_attributes={"items": [self._card(c) for c in message.cards]},
                )
            )
        if not out:
            log_event("connector.chatwoot.nothing_to_send", kinds=sorted(message.to_wire()))
        return out

    def _card(self, card: Card) -> dict[str, Any]:
        item: dict[str, Any] = {"title": card.title or "", "description": card.subtitle or ""}
        if image := public_url(card.image, self.webhook_url, channel=self.type):
            item["media_url"] = image
        actions = []
        for button in card.buttons:
            title = button.title or button.payload or button.url or ""
            if button.url:
                actions.append({"type": "link", "text": title, "uri": button.url})
            else:
                actions.append(
                    {"type": "postback", "text": title, "payload": button.payload or title}
                )
        item["actions"] = actions
        return item

    async def _call(self, path: str, body: dict[str, Any], *, what: str) -> Any:
        url = f"{self.config.base_url}/api/v1/accounts/{self.config.account_id}/{path}"
        headers = {TOKEN_HEADER: self.config.api_access_token.get_secret_value()}
        try:
            response = await request_with_retries(
                self.client,
                "POST",
                url,
                what=f"chatwoot {what}",
                sleep=self._sleep,
                json=body,
                headers=headers,
            )
        except OutboundRefused as e:
            raise DeliveryFailed(f"chatwoot {what}: {e.message}") from e
        try:
            return response.json()
        except ValueError:
            return None


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        error = e.errors(include_url=False, include_input=False)[0]
        return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
    return str(e)


def _conversation_id(recipient: str) -> int:
    if not recipient.isdigit():
        raise DeliveryFailed(f"chatwoot: {recipient!r} is not a Chatwoot conversation id")
    return int(recipient)


def _metadata(event: _Event, conversation: _Conversation, account: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"account_id": account, "conversation_id": conversation.id}
    if conversation.inbox_id is not None:
        meta["inbox_id"] = conversation.inbox_id
    contact = event.contact or (
        event.sender if event.sender and event.sender.type == "contact" else None
    )
    if contact is not None and contact.id is not None:
        meta["contact_id"] = contact.id
    if contact is not None and contact.name:
        meta["name"] = contact.name
    return meta


def _image_type(extension: str | None) -> str:
    ext = (extension or "jpeg").lower().lstrip(".")
    return "image/jpeg" if ext == "jpg" else f"image/{ext}"


def _item(button: Button) -> dict[str, str]:
    title = button.title or button.payload or button.url or ""
    return {"title": title, "value": button.url or button.payload or title}


def _outgoing(content: str, **extra: Any) -> dict[str, Any]:
    return {"content": content[:TEXT_MAX], "message_type": "outgoing", "private": False, **extra}
