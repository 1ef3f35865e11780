"""Test kit for the Slack connector: Events API and interactivity requests shaped like the
examples in Slack's documentation, signed as Slack signs them (``v0=`` HMAC-SHA256 over
``v0:timestamp:body``), and a fake of the Web API and of files.slack.com."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from connectors.base import Connector, WebhookRequest
from tests.connectors.kits import register

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the example secret in Slack's docs
BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
TEAM = "T061EG9R6"
USER = "U0G9QF9C6"
FILE_URL = "https://files.slack.com/files-pri/T061EG9R6-F0S43PZDF/photo.png"


class SlackKit:
    type = "slack"
    secret_fields = ("signing_secret", "bot_token")

    def config(self) -> dict[str, Any]:
        return {"signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN}

    # --- requests as Slack sends them -------------------------------------------------

    def signed(
        self,
        connector: Connector[Any],
        body: bytes,
        *,
        content_type: str = "application/json",
        timestamp: int | None = None,
        secret: str = SIGNING_SECRET,
        headers: dict[str, str] | None = None,
    ) -> WebhookRequest:
        """``body`` POSTed to the connector's webhook URL with Slack's signature headers."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        base = b"v0:" + stamp.encode() + b":" + body
        signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
        return WebhookRequest(
            method="POST",
            url=connector.webhook_url,
            headers={
                "content-type": content_type,
                "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
                "x-slack-request-timestamp": stamp,
                "x-slack-signature": signature,
                **(headers or {}),
            },
            query={},
            body=body,
        )

    def event_body(self, event: dict[str, Any], *, event_id: str) -> bytes:
        """An ``event_callback`` envelope around ``event``."""
        return json.dumps(
            {
                "token": "XXYYZZ",
                "team_id": TEAM,
                "api_app_id": "A0MDYCDME",
                "event": event,
                "type": "event_callback",
                "event_id": event_id,
                "event_time": 1355517523,
                "authorizations": [{"team_id": TEAM, "user_id": "U0BOT", "is_bot": True}],
            }
        ).encode()

    def message_event(self, text: str, *, channel: str, **extra: Any) -> dict[str, Any]:
        return {
            "type": "message",
            "channel": channel,
            "user": USER,
            "text": text,
            "ts": "1355517523.000005",
            "event_ts": "1355517523.000005",
            "channel_type": "im",
            **extra,
        }

    def text_webhook(
        self, connector: Connector[Any], text: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        event = self.message_event(escaped, channel=sender)
        return self.signed(connector, self.event_body(event, event_id=message_id))

    def block_actions(
        self, payload: str, *, channel: str, trigger_id: str, title: str = "Track my order"
    ) -> dict[str, Any]:
        return {
            "type": "block_actions",
            "user": {"id": USER, "username": "spengler", "name": "spengler", "team_id": TEAM},
            "api_app_id": "A0MDYCDME",
            "token": "XXYYZZ",
            "container": {
                "type": "message",
                "message_ts": "1548261231.000200",
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": trigger_id,
            "team": {"id": TEAM, "domain": "parcelly"},
            "channel": {"id": channel, "name": "directmessage"},
            "message": {"type": "message", "ts": "1548261231.000200", "text": "Pick one"},
            "response_url": "https://hooks.slack.com/actions/T061EG9R6/1/XXXX",
            "actions": [
                {
                    "action_id": "parley-1",
                    "block_id": "b1",
                    "text": {"type": "plain_text", "text": title, "emoji": True},
                    "value": payload,
                    "type": "button",
                    "action_ts": "1548426417.840180",
                }
            ],
        }

    def interaction(self, connector: Connector[Any], data: dict[str, Any]) -> WebhookRequest:
        body = urlencode({"payload": json.dumps(data)}).encode()
        return self.signed(connector, body, content_type="application/x-www-form-urlencoded")

    def button_webhook(
        self, connector: Connector[Any], payload: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        return self.interaction(
            connector, self.block_actions(payload, channel=sender, trigger_id=message_id)
        )

    def file(self, **extra: Any) -> dict[str, Any]:
        return {
            "id": "F0S43PZDF",
            "name": "photo.png",
            "title": "photo.png",
            "mimetype": "image/png",
            "filetype": "png",
            "user": USER,
            "size": 1024,
            "mode": "hosted",
            "is_external": False,
            "url_private": FILE_URL,
            "url_private_download": FILE_URL.replace("/photo.png", "/download/photo.png"),
            **extra,
        }

    def image_webhook(
        self, connector: Connector[Any], *, sender: str, message_id: str
    ) -> WebhookRequest:
        event = self.message_event("", channel=sender, subtype="file_share", files=[self.file()])
        return self.signed(connector, self.event_body(event, event_id=message_id))

    def unknown_webhook(self, connector: Connector[Any]) -> WebhookRequest:
        event = {
            "type": "reaction_added",
            "user": USER,
            "reaction": "thumbsup",
            "item": {"type": "message", "channel": "D0KIT", "ts": "1360782400.498405"},
            "event_ts": "1360782804.083113",
        }
        return self.signed(connector, self.event_body(event, event_id="Ev0REACTION"))

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        signature = request.headers["x-slack-signature"]
        wrong = signature[:-1] + ("0" if signature[-1] != "0" else "1")
        return dataclasses.replace(request, headers={**request.headers, "x-slack-signature": wrong})

    def stale(self, connector: Connector[Any], text: str) -> WebhookRequest | None:
        event = self.message_event(text, channel="D0KIT")
        body = self.event_body(event, event_id="Ev0STALE")
        return self.signed(connector, body, timestamp=int(time.time()) - 301)

    # --- Slack's side ------------------------------------------------------------------

    def provider(self, image: bytes, calls: list[httpx.Request]) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            if request.url.host == "files.slack.com":
                if request.headers.get("authorization") != f"Bearer {BOT_TOKEN}":
                    return httpx.Response(200, html="<!DOCTYPE html><html>sign in</html>")
                return httpx.Response(200, content=image, headers={"content-type": "image/png"})
            if request.url.path == "/api/chat.postMessage":
                body = json.loads(request.content)
                ts = f"1503435956.{len(calls):06d}"
                return httpx.Response(200, json={"ok": True, "channel": body["channel"], "ts": ts})
            return httpx.Response(404, json={"ok": False, "error": "unknown_method"})

        return httpx.MockTransport(handle)

    def sent(self, calls: list[httpx.Request]) -> list[dict[str, Any]]:
        out = []
        for request in calls:
            if request.url.path != "/api/chat.postMessage":
                continue
            body = json.loads(request.content)
            buttons = [
                element["text"]["text"]
                for block in body.get("blocks") or []
                if block["type"] == "actions"
                for element in block["elements"]
            ]
            text = body.get("text", "").replace("&lt;", "<").replace("&gt;", ">")
            out.append(
                {"to": body["channel"], "text": text.replace("&amp;", "&"), "buttons": buttons}
            )
        return out


KIT = register(SlackKit())
