"""Slack: the Events API and interactivity, answered through ``chat.postMessage``.

Point both the app's *Event Subscriptions* Request URL and its *Interactivity* Request URL at
the channel's ``webhook_url``; subscribe to ``message.im`` (and ``message.channels`` /
``message.groups`` where the bot sits in channels); scopes ``chat:write``, ``files:read`` and
the ``*:history`` ones matching the subscriptions.

Inbound:

- every request is signed: ``X-Slack-Signature: v0=<hex HMAC-SHA256 of
  "v0:{X-Slack-Request-Timestamp}:{body}">`` under the signing secret, and the timestamp must be
  within 5 minutes of when the request arrived;
- ``url_verification`` is answered with its ``challenge`` as plain text;
- ``message`` events become messages; the conversation is the Slack channel (``sender_id``),
  and a message posted in a thread is answered in that thread. The text loses Slack's markup
  (``<@U123>`` mentions, ``<url|label>`` links become their labels, ``&amp;`` and friends);
- ``file_share`` messages carry their images as ``Media`` (``url_private``, fetched with the
  bot token); other files are left out (logged);
- a retried event (``X-Slack-Retry-Num``) keeps its ``event_id``, which is the message id, so
  the gateway answers it once;
- ``block_actions`` (form-encoded ``payload=``) are button clicks: the button's ``value`` is
  the payload, its label the text, the ``trigger_id`` the message id;
- deliberately skipped, with an empty result and a logged event: messages from bots (our own
  replies come back as events), edits, deletions, joins and every other ``subtype`` but
  ``file_share`` and ``thread_broadcast``, and ``app_rate_limited`` notices. Any other event
  or interaction type is ``InvalidInput`` (the gateway answers 200 and logs why).

Outbound: one ``chat.postMessage`` per message with Block Kit blocks (text sections, an
``image`` block, cards as sections with an image accessory, buttons and quick replies as
``actions`` blocks) and ``text`` as the notification fallback. Slack answers HTTP 200 with
``{"ok": false, "error": ...}`` when it refuses: that is ``DeliveryFailed``, except
``ratelimited``, which is retried.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import SecretStr

from connectors._common import check_signature, clip, hmac_sha256, public_url, split_text
from connectors._download import download, refuse_oversized
from connectors.base import (
    Button,
    Capabilities,
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
from connectors.delivery import request_with_retries, retry_after
from connectors.registry import connectors
from core.errors import DeliveryFailed, InvalidInput, Unauthenticated
from core.logging import log_event

__all__ = ["SlackConfig", "SlackConnector"]

SECTION_CHARS = 3000  # a section block's text
BUTTON_CHARS = 75  # a button's label
BUTTONS_PER_BLOCK = 25  # elements of one actions block
MAX_BLOCKS = 50  # blocks in one message
RATELIMITED_ATTEMPTS = 3
KEPT_SUBTYPES = (None, "file_share", "thread_broadcast")  # messages a person wrote
HINTS = {
    "invalid_auth": "check the channel's bot_token (the app's Bot User OAuth Token, xoxb-…)",
    "not_authed": "check the channel's bot_token (the app's Bot User OAuth Token, xoxb-…)",
    "token_revoked": "the bot_token was revoked: reinstall the app and save the new token",
    "account_inactive": "the bot_token was revoked: reinstall the app and save the new token",
    "channel_not_found": "the bot cannot see this channel: invite it (/invite @bot)",
    "not_in_channel": "invite the bot to the channel (/invite @bot)",
    "missing_scope": "add the chat:write scope to the app and reinstall it",
    "invalid_blocks": "Slack refused the message's blocks; check button and image URLs",
}
_MARKUP = re.compile(r"<([^<>]*)>")


class SlackConfig(ConnectorConfig):
    """The app's Signing Secret (Basic Information) and Bot User OAuth Token (xoxb-…)."""

    signing_secret: SecretStr
    bot_token: SecretStr


@connectors.register("slack")
class SlackConnector(Connector[SlackConfig]):
    """Slack's Events API in, ``chat.postMessage`` out (see the module docstring)."""

    type: ClassVar[str] = "slack"
    Config = SlackConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        buttons=True, quick_replies=True, images=True, cards=True, inbound_images=True
    )
    api_url: ClassVar[str] = "https://slack.com/api"
    title: ClassVar[str] = "Slack"
    docs_url: ClassVar[str | None] = "https://api.slack.com/apis/events-api"
    setup_steps: ClassVar[tuple[str, ...]] = (
        "Create a Slack app at https://api.slack.com/apps (From scratch) in your workspace.",
        "OAuth & Permissions: add the bot scopes chat:write, files:read and im:history (and "
        "channels:history / groups:history for channels), then install the app to the "
        "workspace and copy the Bot User OAuth Token (xoxb-…) into bot_token.",
        "Basic Information: copy the Signing Secret into signing_secret, and save the channel.",
        "Event Subscriptions: turn events on, set the Request URL to {webhook_url} (Slack "
        "checks it at once), and subscribe to the bot events message.im (and message.channels, "
        "message.groups).",
        "Interactivity & Shortcuts: turn it on with the same Request URL {webhook_url}, so "
        "buttons work.",
        "App Home: allow users to send messages in the Messages tab; then write to the bot.",
    )

    def verify(self, request: WebhookRequest) -> None:
        stamp = request.header("x-slack-request-timestamp")
        if not stamp or not stamp.isdigit():
            log_event("connector.slack.verify_failed", reason="no timestamp")
            raise Unauthenticated(
                "the X-Slack-Request-Timestamp header is missing or not a Unix time; only "
                "Slack's signed requests are accepted here"
            )
        age = request.received_at - int(stamp)
        if abs(age) > self.replay_window_s:
            log_event("connector.slack.verify_failed", reason="stale", age_s=round(age))
            raise Unauthenticated(
                f"the request's timestamp is {abs(round(age))} s "
                f"{'old' if age > 0 else 'in the future'}, outside the "
                f"{round(self.replay_window_s)} s replay window; check this server's clock"
            )
        signed = b"v0:" + stamp.encode() + b":" + request.body
        expected = "v0=" + hmac_sha256(self.config.signing_secret.get_secret_value(), signed)
        check_signature(
            request.header("x-slack-signature"),
            expected,
            channel="slack",
            header="X-Slack-Signature",
        )

    def parse(self, request: WebhookRequest) -> WebhookResult:
        content_type = (request.header("content-type") or "").lower()
        if content_type.startswith("application/x-www-form-urlencoded"):
            return WebhookResult(messages=[_interaction(request.body)])
        body = _json_object(request.body, what="an Events API request")
        kind = body.get("type")
        if kind == "url_verification":
            challenge = body.get("challenge")
            if not isinstance(challenge, str):
                raise InvalidInput("a Slack url_verification without a challenge string")
            return WebhookResult(reply=WebhookReply(body=challenge.encode()))
        if kind == "app_rate_limited":
            log_event("connector.slack.app_rate_limited", minute=body.get("minute_rate_limited"))
            return WebhookResult()
        if kind != "event_callback" or not isinstance(body.get("event"), dict):
            raise InvalidInput(
                f"a Slack request of type {kind!r}; the Events API sends url_verification and "
                "event_callback"
            )
        message = _message_event(body, retry=request.header("x-slack-retry-num"))
        return WebhookResult(messages=[message] if message else [])

    async def fetch(self, media: Media, *, max_bytes: int) -> bytes:
        url = media.url or ""
        host = urlsplit(url).hostname or ""
        if urlsplit(url).scheme != "https" or not (
            host == "slack.com" or host.endswith(".slack.com")
        ):
            raise InvalidInput(
                "a Slack file URL that is not https://….slack.com; the bot token is only ever "
                "sent to Slack"
            )
        refuse_oversized(media.size, max_bytes=max_bytes, what="the Slack file")
        data = await download(
            self.client,
            url,
            max_bytes=max_bytes,
            what="the Slack file",
            auth=_Bearer(self.config.bot_token.get_secret_value()),  # type: ignore[arg-type]
        )
        if data[:256].lstrip().lower().startswith((b"<!doctype html", b"<html")):
            raise DeliveryFailed(
                "Slack answered the file download with a web page, not the file: add the "
                "files:read scope to the app, reinstall it and save the new bot_token"
            )
        return data

    async def send(
        self, recipient: str, message: OutboundMessage, metadata: dict[str, Any]
    ) -> None:
        body: dict[str, Any] = {"channel": recipient, **_content(message, self.webhook_url)}
        if metadata.get("thread_ts"):
            body["thread_ts"] = metadata["thread_ts"]
        if message.custom is not None:
            log_event("connector.slack.custom_left_out", reason="custom payloads are not sent")
        if not body.get("text") and not body.get("blocks"):
            log_event("connector.slack.nothing_to_send", keys=sorted(message.to_wire()))
            return
        await self._call("chat.postMessage", body)

    async def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """A Web API call; ``ok: false`` is ``DeliveryFailed`` except ``ratelimited``."""
        headers = {
            "Authorization": f"Bearer {self.config.bot_token.get_secret_value()}",
            "Content-Type": "application/json; charset=utf-8",
        }
        attempt = 1
        while True:
            response = await request_with_retries(
                self.client,
                "POST",
                f"{self.api_url}/{method}",
                what=f"Slack {method}",
                headers=headers,
                json=body,
                sleep=self._sleep,
            )
            try:
                answer = response.json()
            except ValueError as e:
                raise DeliveryFailed(f"Slack answered {method} with something not JSON") from e
            if not isinstance(answer, dict):
                raise DeliveryFailed(f"Slack answered {method} with something not an object")
            if answer.get("ok") is True:
                return answer
            error = str(answer.get("error") or "unknown_error")
            if error == "ratelimited" and attempt < RATELIMITED_ATTEMPTS:
                wait = retry_after(response) or float(attempt)
                log_event("connector.retry", what=f"Slack {method}", problem=error, wait=wait)
                await self._sleep(wait)
                attempt += 1
                continue
            hint = HINTS.get(error, "see https://api.slack.com/methods/" + method)
            raise DeliveryFailed(f"Slack refused {method}: {error}; {hint}", error=error)


class _Bearer(httpx.Auth):
    """``Authorization: Bearer <bot token>`` on a file download."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def _json_object(body: bytes, *, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as e:
        raise InvalidInput(f"{what} from Slack that is not JSON") from e
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} from Slack that is not a JSON object")
    return data


def _message_event(body: dict[str, Any], *, retry: str | None) -> InboundMessage | None:
    """The customer message in an ``event_callback``, or None for one deliberately skipped."""
    event: dict[str, Any] = body["event"]
    event_type = event.get("type")
    if event_type != "message":
        raise InvalidInput(
            f"a Slack {event_type!r} event; only message events are read, so unsubscribe "
            f"from {event_type!r} in the app's Event Subscriptions"
        )
    subtype = event.get("subtype")
    if event.get("bot_id") or subtype not in KEPT_SUBTYPES:
        log_event(
            "connector.slack.skipped",
            reason="a bot's message" if event.get("bot_id") else f"subtype {subtype}",
            event_id=body.get("event_id"),
        )
        return None
    channel = event.get("channel")
    if not isinstance(channel, str) or not channel:
        raise InvalidInput("a Slack message event without a channel")
    text = _plain(event.get("text") or "")
    media = _images(event.get("files") or [])
    if not text and not media:
        kinds = sorted({str(f.get("mimetype")) for f in event.get("files") or []})
        raise InvalidInput(
            f"a Slack message with neither text nor an image (files: {', '.join(kinds)})"
        )
    metadata = {
        "channel": channel,
        "user": event.get("user"),
        "team": body.get("team_id"),
        "ts": event.get("ts"),
    }
    if event.get("thread_ts"):
        metadata["thread_ts"] = event["thread_ts"]
    if retry:
        log_event("connector.slack.retried", event_id=body.get("event_id"), retry=retry)
    return InboundMessage(
        sender_id=channel,
        text=text,
        media=media,
        message_id=body.get("event_id") or f"{channel}:{event.get('ts')}",
        metadata=metadata,
    )


def _images(files: list[Any]) -> tuple[Media, ...]:
    images = []
    for item in files:
        if not isinstance(item, dict):
            continue
        mimetype = str(item.get("mimetype") or "")
        url = item.get("url_private") or item.get("url_private_download")
        if mimetype.startswith("image/") and isinstance(url, str):
            size = item.get("size")
            images.append(
                Media(url=url, media_type=mimetype, size=size if isinstance(size, int) else None)
            )
        else:
            log_event(
                "connector.slack.file_left_out",
                reason="not an image" if url else "no url_private (check_file_info)",
                mimetype=mimetype,
            )
    return tuple(images)


def _plain(text: str) -> str:
    """Slack's markup undone: mentions dropped, links and channels as their labels."""

    def label(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, name = inner.partition("|")
        if target.startswith("@"):
            return ""
        if target.startswith("#"):
            return f"#{name}" if name else ""
        if target.startswith("!"):
            return name
        return name or target.removeprefix("mailto:")

    plain = _MARKUP.sub(label, text)
    plain = plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", plain).strip()


def _interaction(body: bytes) -> InboundMessage:
    """A button click (``block_actions``) from Slack's interactivity payload."""
    raw = parse_qs(body.decode("utf-8", "replace")).get("payload")
    if not raw:
        raise InvalidInput(
            "a form-encoded Slack request without a payload (a slash command?); only "
            "interactivity payloads are read"
        )
    data = _json_object(raw[0].encode(), what="an interactivity payload")
    if data.get("type") != "block_actions":
        raise InvalidInput(f"a Slack {data.get('type')!r} interaction; only buttons are read")
    actions = data.get("actions")
    action = actions[0] if isinstance(actions, list) and actions else None
    if not isinstance(action, dict):
        raise InvalidInput("a Slack block_actions payload without actions")
    option = action.get("selected_option") or {}
    value = action.get("value") or option.get("value")
    label = (action.get("text") or option.get("text") or {}).get("text") or ""
    container = data.get("container") or {}
    channel = (data.get("channel") or {}).get("id") or container.get("channel_id")
    if not value or not channel:
        raise InvalidInput("a Slack block_actions payload without a value or a channel")
    metadata: dict[str, Any] = {
        "channel": channel,
        "user": (data.get("user") or {}).get("id"),
        "team": (data.get("team") or {}).get("id"),
    }
    thread_ts = (data.get("message") or {}).get("thread_ts")
    if thread_ts:
        metadata["thread_ts"] = thread_ts
    return InboundMessage(
        sender_id=channel,
        text=label,
        payload=str(value),
        message_id=data.get("trigger_id") or f"{channel}:{action.get('action_ts')}",
        metadata=metadata,
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escaped_len(text: str) -> int:
    return len(_escape(text))


def _content(message: OutboundMessage, base: str) -> dict[str, Any]:
    """``text`` and ``blocks`` of a ``chat.postMessage`` for an outbound message."""
    blocks: list[dict[str, Any]] = []
    counter = iter(range(1, 10_000))

    def actions(options: Sequence[Button]) -> None:
        for start in range(0, len(options), BUTTONS_PER_BLOCK):
            elements = [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": clip(o.title, BUTTON_CHARS)},
                    "value": o.payload,
                    "action_id": f"parley-{next(counter)}",
                }
                for o in options[start : start + BUTTONS_PER_BLOCK]
            ]
            blocks.append({"type": "actions", "elements": elements})

    text = message.text or ""
    if text:
        for piece in split_text(text, SECTION_CHARS, cost=_escaped_len):
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _escape(piece)}})
    image = public_url(message.image, base, channel="slack")
    if image:
        blocks.append({"type": "image", "image_url": image, "alt_text": "image"})
    for card in message.cards:
        title = card.title or ""
        lines = [f"*{_escape(clip(title, 500))}*"]
        if card.subtitle:
            lines.append(_escape(clip(card.subtitle, 2000)))
        section: dict[str, Any] = {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "\n".join(lines)},
        }
        card_image = public_url(card.image, base, channel="slack")
        if card_image:
            section["accessory"] = {
                "type": "image",
                "image_url": card_image,
                "alt_text": title,
            }
        blocks.append(section)
        if card.buttons:
            actions(card.buttons)
    actions(message.options())
    # for notifications: the text, else the message as text
    fallback = _escape(text or as_text(message.model_copy(update={"image": image})))
    if len(blocks) > MAX_BLOCKS:
        log_event("connector.slack.degraded", reason=f"{len(blocks)} blocks, over {MAX_BLOCKS}")
        return {"text": _escape(as_text(message))}
    return {"text": fallback, "blocks": blocks} if blocks else {"text": fallback}
