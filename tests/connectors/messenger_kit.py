"""Test kit for the Messenger connector: page webhooks shaped like the examples in Meta's
Messenger Platform documentation, signed as Meta signs them (``X-Hub-Signature-256:
sha256=`` HMAC-SHA256 of the body under the app secret), and a fake of the Graph API's Send API
and of Meta's attachment CDN."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any

import httpx

from connectors.base import Connector, WebhookRequest
from tests.connectors.kits import register

APP_SECRET = "3f2b5c0e9d8a7f6e5d4c3b2a19080706"
VERIFY_TOKEN = "parcelly-verify-me"
PAGE_TOKEN = "EAAGm0PX4ZCpsBAKITpagetoken"
PAGE_ID = "106929245000000"
IMAGE_URL = "https://scontent.xx.fbcdn.net/v/t1.15752-9/photo.png?_nc_cat=1&oh=abc&oe=5F"


class MessengerKit:
    type = "messenger"
    secret_fields = ("app_secret", "verify_token", "page_access_token")

    def config(self) -> dict[str, Any]:
        return {
            "app_secret": APP_SECRET,
            "verify_token": VERIFY_TOKEN,
            "page_access_token": PAGE_TOKEN,
        }

    # --- requests as Meta sends them --------------------------------------------------

    def signed(
        self, connector: Connector[Any], body: bytes, *, secret: str = APP_SECRET
    ) -> WebhookRequest:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return WebhookRequest(
            method="POST",
            url=connector.webhook_url,
            headers={
                "content-type": "application/json",
                "user-agent": "facebookexternalua",
                "x-hub-signature": "sha1=" + hmac.new(secret.encode(), body, "sha1").hexdigest(),
                "x-hub-signature-256": f"sha256={digest}",
            },
            query={},
            body=body,
        )

    def webhook(self, connector: Connector[Any], *events: dict[str, Any]) -> WebhookRequest:
        """One page entry holding ``events`` (``messaging`` items)."""
        body = {
            "object": "page",
            "entry": [{"id": PAGE_ID, "time": 1458692752478, "messaging": list(events)}],
        }
        return self.signed(connector, json.dumps(body).encode())

    def event(self, sender: str, **content: Any) -> dict[str, Any]:
        return {
            "sender": {"id": sender},
            "recipient": {"id": PAGE_ID},
            "timestamp": 1458692752478,
            **content,
        }

    def handshake(
        self, connector: Connector[Any], *, token: str = VERIFY_TOKEN, challenge: str = "1158201444"
    ) -> WebhookRequest:
        return WebhookRequest(
            method="GET",
            url=connector.webhook_url,
            headers={},
            query={"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": challenge},
            body=b"",
        )

    def text_webhook(
        self, connector: Connector[Any], text: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        return self.webhook(
            connector, self.event(sender, message={"mid": message_id, "text": text})
        )

    def button_webhook(
        self, connector: Connector[Any], payload: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        postback = {"title": "Track my order", "payload": payload, "mid": message_id}
        return self.webhook(connector, self.event(sender, postback=postback))

    def image_webhook(
        self, connector: Connector[Any], *, sender: str, message_id: str
    ) -> WebhookRequest:
        attachment = {"type": "image", "payload": {"url": IMAGE_URL}}
        message = {"mid": message_id, "attachments": [attachment]}
        return self.webhook(connector, self.event(sender, message=message))

    def unknown_webhook(self, connector: Connector[Any]) -> WebhookRequest:
        reaction = {"reaction": "love", "emoji": "\u2764", "action": "react", "mid": "m_1"}
        return self.webhook(connector, self.event("5512345", reaction=reaction))

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        return dataclasses.replace(request, body=request.body.replace(b"}", b" }", 1))

    def stale(self, connector: Connector[Any], text: str) -> WebhookRequest | None:
        return None  # Meta signs no timestamp

    # --- Meta's side -------------------------------------------------------------------

    def provider(self, image: bytes, calls: list[httpx.Request]) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            if request.url.host == "scontent.xx.fbcdn.net":
                return httpx.Response(200, content=image, headers={"content-type": "image/png"})
            if request.url.path == "/v19.0/me/messages":
                if request.url.params.get("access_token") != PAGE_TOKEN:
                    error = {
                        "message": "Invalid OAuth access token.",
                        "type": "OAuthException",
                        "code": 190,
                    }
                    return httpx.Response(400, json={"error": error})
                recipient = json.loads(request.content)["recipient"]["id"]
                return httpx.Response(
                    200, json={"recipient_id": recipient, "message_id": f"m_{len(calls)}"}
                )
            return httpx.Response(404, json={"error": {"message": "Unknown path", "code": 803}})

        return httpx.MockTransport(handle)

    def sent(self, calls: list[httpx.Request]) -> list[dict[str, Any]]:
        out = []
        for request in calls:
            if request.url.path != "/v19.0/me/messages":
                continue
            body = json.loads(request.content)
            message = body["message"]
            payload = (message.get("attachment") or {}).get("payload") or {}
            text = message.get("text") or payload.get("text") or ""
            titles = [b["title"] for b in payload.get("buttons") or []]
            titles += [q["title"] for q in message.get("quick_replies") or []]
            out.append({"to": body["recipient"]["id"], "text": text, "buttons": titles})
        return out


KIT = register(MessengerKit())
