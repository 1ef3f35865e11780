"""Messenger (Meta): page webhooks in, the Send API out.

In the Meta app's Messenger settings, set the callback URL to the channel's ``webhook_url`` and
the verify token to the channel's ``verify_token``, and subscribe the page to ``messages`` and
``messaging_postbacks``.

Inbound:

- the verification handshake is a ``GET`` with ``hub.mode=subscribe``, ``hub.verify_token``
  and ``hub.challenge``: the challenge is echoed when the token matches;
- every ``POST`` is signed: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``
  under the app secret. Meta stamps no signed time, so there is no replay window; its
  redeliveries carry the same ``mid``, the message id;
- ``entry[].messaging[]`` events: text messages, image attachments (``payload.url``, a
  public CDN URL: no token needed to fetch it), quick replies (``quick_reply.payload``) and
  postbacks (``postback.payload``; the button's title is the text);
- deliberately skipped: echoes of the page's own messages, ``delivery`` and ``read`` receipts,
  stickers and attachments other than images (logged). A webhook holding nothing else that
  could be read is ``InvalidInput`` (the gateway answers 200 and logs why).

Outbound (``POST https://graph.facebook.com/v19.0/me/messages?access_token=…`` with
``messaging_type: RESPONSE``, and ``appsecret_proof`` so that apps that require it work):

- text in pieces of at most 2000 characters;
- up to 3 buttons as a button template (its text at most 640 characters); more buttons, or a
  longer text, make them quick replies; quick replies (at most 13, titles cut to 20
  characters) ride on the last message sent; past 13 options everything becomes numbered
  text;
- an image as an image attachment; cards as a generic template (at most 10 cards of 3 buttons
  each; the rest is left out and logged).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from connectors._common import check_signature, clip, hmac_sha256, public_url, split_text
from connectors._download import download
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
from core.errors import InvalidInput, Unauthenticated
from core.logging import log_event

__all__ = ["MessengerConfig", "MessengerConnector"]

TEXT_CHARS = 2000  # a text message
TEMPLATE_TEXT_CHARS = 640  # a button template's text
TEMPLATE_BUTTONS = 3  # buttons of a button template or of one card
TITLE_CHARS = 20  # a button's or a quick reply's title
QUICK_REPLIES = 13
CARDS = 10  # elements of a generic template
CARD_CHARS = 80  # a card's title and subtitle
IGNORED_EVENTS = ("delivery", "read")


class MessengerConfig(ConnectorConfig):
    """The Meta app's secret, the verify token typed into its webhook settings, and the
    page access token."""

    app_secret: SecretStr
    verify_token: SecretStr
    page_access_token: SecretStr


@connectors.register("messenger")
class MessengerConnector(Connector[MessengerConfig]):
    """Messenger page webhooks in, the Send API out (see the module docstring)."""

    type: ClassVar[str] = "messenger"
    Config = MessengerConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        buttons=True, quick_replies=True, images=True, cards=True, inbound_images=True
    )
    api_url: ClassVar[str] = "https://graph.facebook.com/v19.0"
    title: ClassVar[str] = "Messenger"
    docs_url: ClassVar[str | None] = (
        "https://developers.facebook.com/docs/messenger-platform/webhooks"
    )
    setup_steps: ClassVar[tuple[str, ...]] = (
        "Create a Meta app (type Business) at https://developers.facebook.com/apps and add the "
        "Messenger product; copy App settings > Basic > App Secret into app_secret.",
        "Choose a verify_token (any string); Meta sends it back when it checks the webhook.",
        "Messenger settings: connect your Facebook page, generate its page access token and "
        "copy it into page_access_token; save the channel.",
        "Messenger settings > Webhooks: set the callback URL to {webhook_url} and the verify "
        "token to your verify_token (Meta checks it at once), then subscribe the page to "
        "messages and messaging_postbacks.",
        "Write to the page on Messenger (while the app is in development, as a person with a "
        "role in the app).",
    )

    def handshake(self, request: WebhookRequest) -> WebhookReply | None:
        query = request.query
        challenge = query.get("hub.challenge")
        if query.get("hub.mode") != "subscribe" or not challenge:
            raise InvalidInput(
                "a GET without hub.mode=subscribe and hub.challenge; only Meta's webhook "
                "verification is answered here"
            )
        given = (query.get("hub.verify_token") or "").encode()
        if not hmac.compare_digest(given, self.config.verify_token.get_secret_value().encode()):
            log_event("connector.messenger.verify_failed", reason="wrong hub.verify_token")
            raise Unauthenticated(
                "hub.verify_token is not this channel's verify_token; type the channel's "
                "verify_token into the Meta app's webhook settings"
            )
        return WebhookReply(body=challenge.encode())

    def verify(self, request: WebhookRequest) -> None:
        given = request.header("x-hub-signature-256")
        digest = hmac_sha256(self.config.app_secret.get_secret_value(), request.body)
        if given is not None and not given.startswith("sha256="):
            log_event("connector.messenger.verify_failed", reason="not sha256=")
            raise Unauthenticated("the X-Hub-Signature-256 header does not start with sha256=")
        check_signature(
            given, f"sha256={digest}", channel="messenger", header="X-Hub-Signature-256"
        )

    def parse(self, request: WebhookRequest) -> WebhookResult:
        try:
            body = json.loads(request.body)
        except ValueError as e:
            raise InvalidInput("a Messenger webhook that is not JSON") from e
        if not isinstance(body, dict) or body.get("object") != "page":
            kind = body.get("object") if isinstance(body, dict) else None
            raise InvalidInput(
                f"a Meta webhook for object {kind!r}; this channel reads Messenger (page) events"
            )
        messages: list[InboundMessage] = []
        unread: list[str] = []
        for entry in body.get("entry") or []:
            events = entry.get("messaging") if isinstance(entry, dict) else None
            if not isinstance(events, list):
                unread.append("an entry without messaging events (subscribe to messages only)")
                continue
            for event in events:
                message = _event(event, unread) if isinstance(event, dict) else None
                if message is not None:
                    messages.append(message)
        if unread and not messages:
            raise InvalidInput("nothing to read in the Messenger webhook: " + "; ".join(unread))
        if unread:
            log_event("connector.messenger.left_out", reasons=unread)
        return WebhookResult(messages=messages)

    async def fetch(self, media: Media, *, max_bytes: int) -> bytes:
        if not media.url:
            raise InvalidInput("a Messenger attachment without a URL")
        return await download(
            self.client,
            media.url,
            max_bytes=max_bytes,
            what="the Messenger attachment",
            follow_redirects=True,
        )

    async def send(
        self, recipient: str, message: OutboundMessage, metadata: dict[str, Any]
    ) -> None:
        if message.custom is not None:
            log_event("connector.messenger.custom_left_out", reason="custom payloads not sent")
        parts = _messages(message, self.webhook_url)
        if not parts:
            log_event("connector.messenger.nothing_to_send", keys=sorted(message.to_wire()))
        token = self.config.page_access_token.get_secret_value()
        params = {
            "access_token": token,
            "appsecret_proof": hmac_sha256(
                self.config.app_secret.get_secret_value(), token.encode()
            ),
        }
        for part in parts:
            await request_with_retries(
                self.client,
                "POST",
                f"{self.api_url}/me/messages",
                what="Messenger Send API",
                params=params,
                json={
                    "recipient": {"id": recipient},
                    "messaging_type": "RESPONSE",
                    "message": part,
                },
                sleep=self._sleep,
                wait_hint=_throttled,
            )


THROTTLING_CODES = frozenset({4, 17, 32, 613})  # Graph API rate limits, sent as HTTP 400


def _throttled(response: httpx.Response) -> float | None:
    """Meta reports throttling as a 400 with an error code: wait and retry."""
    try:
        code = response.json().get("error", {}).get("code")
    except (ValueError, AttributeError):
        return None
    return 5.0 if code in THROTTLING_CODES else None


def _event(event: dict[str, Any], unread: list[str]) -> InboundMessage | None:
    """One ``messaging`` event as a message; what cannot be read is added to ``unread``."""
    sender = (event.get("sender") or {}).get("id")
    metadata = {"page_id": (event.get("recipient") or {}).get("id")}
    if isinstance(event.get("message"), dict):
        message = event["message"]
        if message.get("is_echo"):
            return None  # the page's own message
        text = str(message.get("text") or "")
        media = _images(message.get("attachments") or [], unread)
        quick = (message.get("quick_reply") or {}).get("payload")
        if not sender:
            unread.append("a message without a sender")
            return None
        if not (text or media or quick):
            if not message.get("attachments"):  # unread attachments are reported by _images
                unread.append("a message without text or attachments")
            return None
        return InboundMessage(
            sender_id=str(sender),
            text=text,
            payload=quick,
            media=media,
            message_id=message.get("mid"),
            metadata=metadata,
        )
    if isinstance(event.get("postback"), dict):
        postback = event["postback"]
        if not sender or not postback.get("payload"):
            unread.append("a postback without a sender or a payload")
            return None
        return InboundMessage(
            sender_id=str(sender),
            text=str(postback.get("title") or ""),
            payload=str(postback["payload"]),
            message_id=postback.get("mid") or f"postback:{sender}:{event.get('timestamp')}",
            metadata=metadata,
        )
    if any(key in event for key in IGNORED_EVENTS):
        return None
    kinds = sorted(set(event) - {"sender", "recipient", "timestamp"})
    unread.append(f"a {'/'.join(kinds) or 'empty'} event")
    return None


def _images(attachments: list[Any], unread: list[str]) -> tuple[Media, ...]:
    images = []
    for item in attachments:
        payload = (item.get("payload") or {}) if isinstance(item, dict) else {}
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "image" and payload.get("url") and not payload.get("sticker_id"):
            images.append(Media(url=str(payload["url"])))
        else:
            reason = "a sticker" if payload.get("sticker_id") else f"a {kind} attachment"
            log_event("connector.messenger.attachment_left_out", reason=reason)
            unread.append(reason)
    return tuple(images)


def _options(items: Sequence[Button], *, button: bool) -> list[dict[str, Any]]:
    if button:
        return [
            {"type": "postback", "title": clip(b.title, TITLE_CHARS), "payload": b.payload}
            for b in items
        ]
    return [
        {"content_type": "text", "title": clip(b.title, TITLE_CHARS), "payload": b.payload}
        for b in items
    ]


def _prompt(options: Sequence[Button]) -> str:
    """The text a template or quick replies need when the bot's message has none."""
    return " / ".join(o.title for o in options)


def _messages(message: OutboundMessage, base: str) -> list[dict[str, Any]]:
    """The Send API ``message`` objects for one outbound message, in order."""
    text = message.text or ""
    buttons = list(message.buttons)
    quick = list(message.quick_replies)
    parts: list[dict[str, Any]] = []
    if buttons and len(buttons) <= TEMPLATE_BUTTONS and len(text) <= TEMPLATE_TEXT_CHARS:
        template = {
            "template_type": "button",
            "text": text or _prompt(buttons),
            "buttons": _options(buttons, button=True),
        }
        parts.append({"attachment": {"type": "template", "payload": template}})
        buttons = []
    elif buttons:
        log_event("connector.messenger.degraded", reason="buttons sent as quick replies")
        quick = [*buttons, *quick]
    if len(quick) > QUICK_REPLIES:
        log_event("connector.messenger.degraded", reason=f"{len(quick)} options sent as text")
        text, quick = as_text(OutboundMessage(text=text or None, quick_replies=tuple(quick))), []
    if not parts and text:
        parts.extend({"text": piece} for piece in split_text(text, TEXT_CHARS))
    image = public_url(message.image, base, channel="messenger")
    if image:
        parts.append({"attachment": {"type": "image", "payload": {"url": image}}})
    cards = _cards(message.cards, base)
    if cards:
        template = {"template_type": "generic", "elements": cards}
        parts.append({"attachment": {"type": "template", "payload": template}})
    if quick:
        if not parts:
            parts.append({"text": _prompt(quick)})
        parts[-1]["quick_replies"] = _options(quick, button=False)
    return parts


def _cards(cards: Sequence[Card], base: str) -> list[dict[str, Any]]:
    if len(cards) > CARDS or any(len(c.buttons) > TEMPLATE_BUTTONS for c in cards):
        log_event("connector.messenger.cards_cut", cards=len(cards))
    elements = []
    for card in cards[:CARDS]:
        element: dict[str, Any] = {"title": clip(card.title or "", CARD_CHARS)}
        if card.subtitle:
            element["subtitle"] = clip(card.subtitle, CARD_CHARS)
        image = public_url(card.image, base, channel="messenger")
        if image:
            element["image_url"] = image
        if card.buttons:
            element["buttons"] = _options(card.buttons[:TEMPLATE_BUTTONS], button=True)
        elements.append(element)
    return elements
