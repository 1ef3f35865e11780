"""Chatwoot as it drives an agent bot: events shaped like ``Message#webhook_data`` merged with
``event`` (``app/listeners/agent_bot_listener.rb``; the sample payload of Chatwoot's webhook
docs, ``docs/webhooks/add-webhooks-to-chatwoot.md``, and the attachment fields of
``Attachment#push_event_data``: ``file_type``, ``data_url``, ``extension``, ``file_size``), an
option chosen in an ``input_select`` (Chatwoot's "interactive messages" docs: the option
comes back in ``content_attributes.submitted_values`` with ``message_updated``), the
``?token=`` of the webhook URL and, for installs that sign (v4.13+, chatwoot/chatwoot#13892),
``X-Chatwoot-Signature``/``X-Chatwoot-Timestamp``; and a fake Chatwoot API (messages,
toggle_status, attachment downloads)."""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import httpx

from connectors.base import Connector, WebhookRequest
from connectors.chatwoot import signature
from tests.connectors.kits import register

# A public address literal: the gateway's guarded client (core.outbound) checks it without
# DNS; nothing is ever sent there (the tests' transport is a fake).
BASE_URL = "https://198.41.0.4"
ACCOUNT_ID = 3
API_TOKEN = "cw-bot-token-0123456789"
WEBHOOK_TOKEN = "parley-chatwoot-hook-0123"
WEBHOOK_SECRET = "cw-signing-secret-abcdef"
INBOX_ID = 7
ATTACHMENT_PATH = "/rails/active_storage/blobs/redirect/eyJfcmFpbHMi/photo.jpg"
STORAGE_PATH = "/rails/active_storage/disk/eyJfcmFpbHMi/photo.jpg"


def numeric(value: str) -> int:
    """Chatwoot ids are integers: a kit's ``u1`` becomes a stable one."""
    if value.isdigit():
        return int(value)
    return zlib.crc32(value.encode()) % 2_000_000 + 1


def contact(sender: str) -> dict[str, Any]:
    return {
        "id": numeric(sender) + 500,
        "name": "Ada Lovelace",
        "avatar": "",
        "type": "contact",
        "account": {"id": ACCOUNT_ID, "name": "Acme"},
    }


def conversation(sender: str) -> dict[str, Any]:
    """``Conversation#webhook_data``'s essentials; ``id`` is the display id."""
    return {
        "id": numeric(sender),
        "inbox_id": INBOX_ID,
        "status": "pending",
        "channel": "Channel::WebWidget",
        "can_reply": True,
        "contact_inbox": {"source_id": "6d0b1f7e-parley", "inbox_id": INBOX_ID},
        "meta": {"sender": contact(sender), "assignee": None},
    }


def message_event(
    event: str,
    sender: str,
    message_id: str,
    *,
    message_type: str = "incoming",
    content: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """``message.webhook_data.merge(event:)`` as ``AgentBotListener`` posts it."""
    body: dict[str, Any] = {
        "event": event,
        "id": numeric(message_id),
        "content": content,
        "created_at": "2026-12-04T10:00:00.000Z",
        "message_type": message_type,
        "content_type": "text",
        "content_attributes": {},
        "source_id": None,
        "private": False,
        "sender": contact(sender) if message_type == "incoming" else None,
        "inbox": {"id": INBOX_ID, "name": "Website"},
        "conversation": conversation(sender),
        "account": {"id": ACCOUNT_ID, "name": "Acme"},
    }
    body.update(fields)
    return body


class ChatwootKit:
    type = "chatwoot"
    secret_fields: tuple[str, ...] = ("api_access_token", "webhook_token", "webhook_secret")

    def config(self) -> dict[str, Any]:
        return {
            "base_url": BASE_URL,
            "account_id": ACCOUNT_ID,
            "api_access_token": API_TOKEN,
            "webhook_token": WEBHOOK_TOKEN,
            "webhook_secret": WEBHOOK_SECRET,
        }

    def signed(
        self,
        connector: Connector[Any],
        body: dict[str, Any] | bytes,
        *,
        token: str | None = WEBHOOK_TOKEN,
        secret: str | None = WEBHOOK_SECRET,
        at: float | None = None,
    ) -> WebhookRequest:
        """A webhook POST as Chatwoot makes it to ``{webhook_url}?token=...`` (``token=None``:
        without it; ``secret=None``: unsigned, as before v4.13)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": "application/json", "accept": "application/json"}
        if secret is not None:
            stamp = str(int(at if at is not None else time.time()))
            headers["x-chatwoot-timestamp"] = stamp
            headers["x-chatwoot-signature"] = signature(secret, stamp, raw)
            headers["x-chatwoot-delivery"] = "2f0e8a52-parley-kit"
        query = {"token": token} if token is not None else {}
        url = connector.webhook_url + (f"?token={token}" if token is not None else "")
        return WebhookRequest("POST", url, headers, query, raw)

    def text_webhook(
        self, connector: Connector[Any], text: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        return self.signed(
            connector, message_event("message_created", sender, message_id, content=text)
        )

    def button_webhook(
        self, connector: Connector[Any], payload: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        chosen = {"title": payload.lstrip("/").replace("_", " "), "value": payload}
        body = message_event(
            "message_updated",
            sender,
            message_id,
            message_type="outgoing",
            content="Pick one",
            content_type="input_select",
            content_attributes={"items": [chosen], "submitted_values": [chosen]},
        )
        return self.signed(connector, body)

    def image_webhook(
        self, connector: Connector[Any], *, sender: str, message_id: str
    ) -> WebhookRequest:
        attachment = {
            "id": 91,
            "message_id": numeric(message_id),
            "file_type": "image",
            "account_id": ACCOUNT_ID,
            "extension": None,
            "data_url": BASE_URL + ATTACHMENT_PATH,
            "thumb_url": BASE_URL + ATTACHMENT_PATH + "?thumb=1",
            "file_size": 2_048,
        }
        body = message_event(
            "message_created", sender, message_id, content=None, attachments=[attachment]
        )
        return self.signed(connector, body)

    def unknown_webhook(self, connector: Connector[Any]) -> WebhookRequest:
        body = {"event": "conversation_status_changed", **conversation("u1")}
        body["account"] = {"id": ACCOUNT_ID, "name": "Acme"}
        return self.signed(connector, body)

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        query = {**request.query, "token": "not-" + WEBHOOK_TOKEN}
        url = request.url.replace(f"token={WEBHOOK_TOKEN}", f"token=not-{WEBHOOK_TOKEN}")
        return WebhookRequest(request.method, url, request.headers, query, request.body)

    def stale(self, connector: Connector[Any], text: str) -> WebhookRequest | None:
        body = message_event("message_created", "u1", "m1", content=text)
        return self.signed(connector, body, at=time.time() - 3600)

    def provider(self, image: bytes, calls: list[httpx.Request]) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            base = httpx.URL(BASE_URL)
            if request.url.host != base.host:
                return httpx.Response(404)
            path = request.url.path
            if request.method == "GET" and path == ATTACHMENT_PATH:  # ActiveStorage redirect
                return httpx.Response(302, headers={"location": BASE_URL + STORAGE_PATH})
            if request.method == "GET" and path == STORAGE_PATH:
                return httpx.Response(200, content=image, headers={"content-type": "image/jpeg"})
            if request.headers.get("api_access_token") != API_TOKEN:
                return httpx.Response(401, json={"error": "Invalid Access Token"})
            prefix = f"/api/v1/accounts/{ACCOUNT_ID}/conversations/"
            if request.method != "POST" or not path.startswith(prefix):
                return httpx.Response(404, json={"error": "Resource could not be found"})
            conversation_id, _, action = path.removeprefix(prefix).partition("/")
            body = json.loads(request.content or b"{}")
            if action == "messages":
                return httpx.Response(
                    200,
                    json={
                        "id": 1000 + len(calls),
                        "content": body.get("content"),
                        "message_type": 1,
                        "content_type": body.get("content_type", "text"),
                        "conversation_id": int(conversation_id),
                        "private": False,
                    },
                )
            if action == "toggle_status":
                return httpx.Response(
                    200,
                    json={
                        "meta": {},
                        "payload": {
                            "success": True,
                            "conversation_id": int(conversation_id),
                            "current_status": body.get("status"),
                        },
                    },
                )
            return httpx.Response(404, json={"error": "Resource could not be found"})

        return httpx.MockTransport(handle)

    def sent(self, calls: list[httpx.Request]) -> list[dict[str, Any]]:
        out = []
        for request in calls:
            if request.method != "POST" or not request.url.path.endswith("/messages"):
                continue
            body = json.loads(request.content)
            items = (body.get("content_attributes") or {}).get("items", [])
            out.append(
                {
                    "to": request.url.path.split("/conversations/")[1].split("/")[0],
                    "text": body.get("content", ""),
                    "buttons": [i["title"] for i in items]
                    if body.get("content_type") == "input_select"
                    else [],
                }
            )
        return out

    def toggled(self, calls: list[httpx.Request]) -> list[tuple[str, str]]:
        """The conversations opened to agents: ``(conversation id, status)``."""
        return [
            (
                request.url.path.split("/conversations/")[1].split("/")[0],
                json.loads(request.content)["status"],
            )
            for request in calls
            if request.url.path.endswith("/toggle_status")
        ]


KIT = ChatwootKit()
register(KIT)
