"""Telegram, through the Bot API webhook.

Inbound
    Telegram signs nothing: ``register()`` gives it the channel's ``secret_token`` with
    ``setWebhook`` and every update then carries it in ``X-Telegram-Bot-Api-Secret-Token``
    (compared in constant time). Updates understood: ``message`` (text, a photo's caption, the
    largest size of a ``photo``, an image sent as a file ``document``) and ``callback_query`` (a
    press on an inline keyboard: ``payload`` is its ``callback_data``). Every other kind
    (edited messages, channel posts, stickers alone, ...) is ``InvalidInput``.
    ``sender_id`` is the chat id. ``message_id`` is ``<chat id>:<message id>`` for a message and
    ``callback:<id>`` for a press: the same on every redelivery of the update.
    A press is acknowledged in the webhook's own answer (Telegram runs a Bot API method returned
    as the webhook response), so ``answerCallbackQuery`` needs no call of its own and the
    customer's button stops spinning as soon as the update is accepted.

Outbound
    ``sendMessage`` and ``sendPhoto`` (the text as caption), buttons and quick replies as an
    inline keyboard, one button a row; a card is a photo (or a message when it has no image)
    with its title and subtitle and its own keyboard. Text is plain (no ``parse_mode``), split
    at Telegram's length limits. ``callback_data`` holds at most 64 bytes and this connector
    keeps no state: a longer payload goes out as a digest and its press comes back as the
    button's title as text, without a payload (logged as ``connector.telegram.degraded``).
    Flood control (429 with ``parameters.retry_after`` in the body) waits as long as asked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

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
    WebhookReply,
    WebhookRequest,
    WebhookResult,
    as_text,
)
from connectors.delivery import request_with_retries
from connectors.registry import connectors
from core.errors import DeliveryFailed, InvalidInput, Unauthenticated
from core.logging import log_event

__all__ = ["TelegramConfig", "TelegramConnector", "callback_data"]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CALLBACK_DATA_MAX_BYTES = 64
TEXT_MAX = 4096  # sendMessage, characters after entity parsing
CAPTION_MAX = 1024  # sendPhoto
_DIGEST = "~h:"  # callback_data standing for a payload too long to carry
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_BOT_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")


class TelegramConfig(ConnectorConfig):
    """``bot_token`` from @BotFather; ``secret_token`` is yours to choose (1-256 of A-Z, a-z,
    0-9, ``_`` and ``-``) and Telegram echoes it on every update."""

    model_config = ConfigDict(hide_input_in_errors=True)  # errors never echo a secret

    bot_token: SecretStr
    secret_token: SecretStr

    @field_validator("bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr) -> SecretStr:
        if not _BOT_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("a bot token looks like 123456:ABC-DEF...; copy it from @BotFather")
        return value

    @field_validator("secret_token")
    @classmethod
    def _secret_token_shape(cls, value: SecretStr) -> SecretStr:
        if not _SECRET_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "Telegram accepts 1-256 characters of A-Z, a-z, 0-9, _ and - as secret_token"
            )
        return value


# -- the parts of Telegram's Update that Parley reads (Bot API types; unknown fields ignored) --


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class _User(_Model):
    id: int
    first_name: str = ""
    last_name: str | None = None
    username: str | None = None


class _Chat(_Model):
    id: int
    type: str = "private"


class _PhotoSize(_Model):
    file_id: str
    width: int = 0
    height: int = 0
    file_size: int | None = None


class _Document(_Model):
    file_id: str
    mime_type: str | None = None
    file_size: int | None = None


class _KeyboardButton(_Model):
    text: str
    callback_data: str | None = None


class _Markup(_Model):
    inline_keyboard: list[list[_KeyboardButton]] = []


class _Message(_Model):
    message_id: int
    chat: _Chat
    sender: _User | None = Field(default=None, alias="from")
    text: str | None = None
    caption: str | None = None
    photo: list[_PhotoSize] | None = None
    document: _Document | None = None
    reply_markup: _Markup | None = None


class _CallbackQuery(_Model):
    id: str
    sender: _User = Field(alias="from")
    message: _Message | None = None  # absent for inline-mode messages; date 0 when too old
    data: str | None = None


class _Update(_Model):
    update_id: int
    message: _Message | None = None
    callback_query: _CallbackQuery | None = None


def callback_data(payload: str) -> str:
    """What a button carries as ``callback_data``: its payload, or a digest of it when the
    payload is over Telegram's 64 bytes (its press then comes back as the button's title)."""
    raw = payload.encode()
    if raw and len(raw) <= CALLBACK_DATA_MAX_BYTES and not payload.startswith(_DIGEST):
        return payload
    digest = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:18]).decode()
    return _DIGEST + digest


def _name(user: _User | None) -> str | None:
    if user is None:
        return None
    return " ".join(p for p in (user.first_name, user.last_name) if p) or user.username


def _chat_id(recipient: str) -> int | str:
    """Telegram chat ids are integers; ``@channelname`` strings pass through."""
    return int(recipient) if re.fullmatch(r"-?\d+", recipient) else recipient


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _flood_wait(response: httpx.Response) -> float | None:
    """Telegram's ``parameters.retry_after`` (a JSON body field) on a 429."""
    if response.status_code != 429:
        return None
    try:
        wait = response.json().get("parameters", {}).get("retry_after")
    except (ValueError, AttributeError):
        return None
    return float(wait) if isinstance(wait, int) and wait >= 0 else None


@connectors.register("telegram")
class TelegramConnector(Connector[TelegramConfig]):
    """Telegram bots through the Bot API webhook (see the module docstring)."""

    type: ClassVar[str] = "telegram"
    Config = TelegramConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        buttons=True, quick_replies=True, images=True, cards=True, inbound_images=True
    )
    api_base: ClassVar[str] = "https://api.telegram.org"
    title: ClassVar[str] = "Telegram"
    docs_url: ClassVar[str | None] = "https://core.telegram.org/bots/api#setwebhook"
    setup_steps: ClassVar[tuple[str, ...]] = (
        "In Telegram, talk to @BotFather: /newbot, choose a name and a username, and copy "
        "the token it gives (123456:ABC-…) into bot_token.",
        "Choose a secret_token (1-256 of A-Z, a-z, 0-9, _ and -); Telegram sends it back with "
        "every update, so only Telegram can call {webhook_url}.",
        "Save the channel: Parley registers {webhook_url} with Telegram (setWebhook) itself; "
        "if its registration says failed, fix what it names and register it again.",
        "Write to your bot in Telegram.",
    )

    # -- inbound --

    def verify(self, request: WebhookRequest) -> None:
        given = request.header(SECRET_HEADER)
        expected = self.config.secret_token.get_secret_value()
        if given and hmac.compare_digest(given.encode(), expected.encode()):
            return
        reason = "is missing" if not given else "does not match this channel's secret_token"
        log_event("connector.telegram.verify_failed", reason=f"{SECRET_HEADER} {reason}")
        raise Unauthenticated(
            f"the {SECRET_HEADER} header {reason}; only Telegram may call this webhook — "
            "register the channel again (setWebhook) so Telegram sends the current secret_token"
        )

    def parse(self, request: WebhookRequest) -> WebhookResult:
        try:
            update = _Update.model_validate(json.loads(request.body))
        except (ValueError, ValidationError) as e:
            raise InvalidInput(f"not a Telegram update: {_first_error(e)}") from e
        if update.message is not None:
            return WebhookResult(messages=[self._message(update.message)])
        if update.callback_query is not None:
            query = update.callback_query
            # Answered in the webhook's response: Telegram runs it as a Bot API call.
            ack = json.dumps({"method": "answerCallbackQuery", "callback_query_id": query.id})
            return WebhookResult(
                messages=[self._press(query)],
                reply=WebhookReply(body=ack.encode(), media_type="application/json"),
            )
        kinds = sorted(k for k in json.loads(request.body) if k != "update_id")
        raise InvalidInput(
            f"Telegram update {update.update_id} is {', '.join(kinds) or 'empty'}; only message "
            "and callback_query updates are handled (register() asks for nothing else)"
        )

    def _message(self, message: _Message) -> InboundMessage:
        media: tuple[Media, ...] = ()
        if message.photo:
            largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
            media = (
                Media(file_id=largest.file_id, media_type="image/jpeg", size=largest.file_size),
            )
        elif message.document and (message.document.mime_type or "").startswith("image/"):
            doc = message.document
            media = (Media(file_id=doc.file_id, media_type=doc.mime_type, size=doc.file_size),)
        text = message.text or message.caption or ""
        if not text and not media:
            raise InvalidInput(
                f"Telegram message {message.message_id} has no text, caption or image "
                "(a sticker, voice note, location or non-image file); nothing to answer"
            )
        return InboundMessage(
            sender_id=str(message.chat.id),
            text=text,
            media=media,
            message_id=f"{message.chat.id}:{message.message_id}",
            metadata=_metadata(message.sender, message.chat),
        )

    def _press(self, query: _CallbackQuery) -> InboundMessage:
        if query.data is None:
            raise InvalidInput(f"Telegram callback query {query.id} carries no data (a game?)")
        chat = query.message.chat if query.message else _Chat(id=query.sender.id)
        payload: str | None = query.data
        text = ""
        if query.data.startswith(_DIGEST):
            title = _title_of(query.message, query.data)
            if title is None:
                raise InvalidInput(
                    "a press on a button whose payload was over 64 bytes, on a message Telegram "
                    "no longer shows; keep button payloads within 64 bytes"
                )
            log_event("connector.telegram.degraded", reason="long_callback_payload", title=title)
            payload, text = None, title
        return InboundMessage(
            sender_id=str(chat.id),
            text=text,
            payload=payload,
            message_id=f"callback:{query.id}",
            metadata=_metadata(query.sender, chat),
        )

    # -- media --

    async def fetch(self, media: Media, *, max_bytes: int) -> bytes:
        if not media.file_id:
            raise InvalidInput("a Telegram image is fetched by its file_id, and this has none")
        refuse_oversized(media.size, max_bytes=max_bytes, what="the Telegram image")
        result = await self._call("getFile", {"file_id": media.file_id})
        file_path = result.get("file_path") if isinstance(result, dict) else None
        if not file_path:
            raise DeliveryFailed(
                "telegram getFile: no file_path (bots cannot download files over 20 MB)"
            )
        refuse_oversized(result.get("file_size"), max_bytes=max_bytes, what="the Telegram image")
        token = self.config.bot_token.get_secret_value()
        return await download(
            self.client,
            f"{self.api_base}/file/bot{token}/{file_path}",
            max_bytes=max_bytes,
            what="the Telegram image",
        )

    # -- outbound --

    async def send(
        self, recipient: str, message: OutboundMessage, metadata: dict[str, Any]
    ) -> None:
        chat = _chat_id(recipient)
        for method, body in _requests(chat, message):
            await self._call(method, body)

    async def register(self) -> None:
        await self._call(
            "setWebhook",
            {
                "url": self.webhook_url,
                "secret_token": self.config.secret_token.get_secret_value(),
                "allowed_updates": ["message", "callback_query"],
            },
        )

    async def _call(self, method: str, body: dict[str, Any]) -> Any:
        """A Bot API method's ``result``; the token-bearing URL never reaches an error."""
        token = self.config.bot_token.get_secret_value()
        response = await request_with_retries(
            self.client,
            "POST",
            f"{self.api_base}/bot{token}/{method}",
            what=f"telegram {method}",
            sleep=self._sleep,
            wait_hint=_flood_wait,
            json=body,
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            described = answer.get("description") if isinstance(answer, dict) else None
            raise DeliveryFailed(f"telegram {method}: {described or 'not an ok answer'}")
        return answer.get("result")


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        error = e.errors(include_url=False, include_input=False)[0]
        return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
    return str(e)


def _metadata(user: _User | None, chat: _Chat) -> dict[str, Any]:
    meta: dict[str, Any] = {"chat_type": chat.type}
    if name := _name(user):
        meta["name"] = name
    return meta


def _title_of(message: _Message | None, data: str) -> str | None:
    markup = message.reply_markup if message else None
    for row in markup.inline_keyboard if markup else []:
        for button in row:
            if button.callback_data == data:
                return button.text
    return None


def _keyboard(buttons: Sequence[Button]) -> dict[str, Any] | None:
    rows = []
    for button in buttons:
        title = button.title or button.payload
        if button.url:
            rows.append([{"text": title, "url": button.url}])
            continue
        payload = button.payload or title
        data = callback_data(payload)
        if data != payload:
            log_event("connector.telegram.degraded", reason="long_callback_payload", title=title)
        rows.append([{"text": title, "callback_data": data}])
    return {"inline_keyboard": rows} if rows else None


def _requests(chat: int | str, message: OutboundMessage) -> list[tuple[str, dict[str, Any]]]:
    """The Bot API calls that show ``message``: its image and text (with the keyboard of its
    buttons and quick replies on the last of them), then one per card."""
    options = message.options()
    text = message.text or ""
    image = message.image
    calls: list[tuple[str, dict[str, Any]]] = []
    if image:
        photo: dict[str, Any] = {"chat_id": chat, "photo": str(image)}
        if text and len(text) <= CAPTION_MAX:
            photo["caption"], text = text, ""
        calls.append(("sendPhoto", photo))
    if not text and not image and options:
        text = as_text(OutboundMessage(buttons=tuple(options)))  # some text above a keyboard
    if text:
        calls.extend(("sendMessage", {"chat_id": chat, "text": t}) for t in _chunks(text, TEXT_MAX))
    if keyboard := _keyboard(options):
        calls[-1][1]["reply_markup"] = keyboard
    for card in message.cards:
        calls.append(_card(chat, card))
    if not calls:
        log_event("connector.telegram.nothing_to_send", kinds=sorted(message.to_wire()))
    return calls


def _card(chat: int | str, card: Card) -> tuple[str, dict[str, Any]]:
    caption = "\n".join(p for p in (card.title, card.subtitle) if p)
    body: dict[str, Any] = {"chat_id": chat}
    if keyboard := _keyboard(card.buttons):
        body["reply_markup"] = keyboard
    if card.image and len(caption) <= CAPTION_MAX:
        return "sendPhoto", {**body, "photo": card.image, "caption": caption}
    text = as_text(OutboundMessage(text=caption or None, image=card.image)) or "\u2022"
    return "sendMessage", {**body, "text": text[:TEXT_MAX]}
