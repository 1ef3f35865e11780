"""Telegram as the Bot API drives a webhook: updates shaped like the Bot API's documented
``Update`` objects (message, photo sizes, callback_query), the secret token header that
``setWebhook`` asked for, and a fake ``api.telegram.org`` (methods and file downloads)."""

from __future__ import annotations

import json
import zlib
from typing import Any

import httpx

from connectors.base import Connector, WebhookRequest
from connectors.telegram import callback_data
from tests.connectors.kits import register

BOT_TOKEN = "123456789:AAE-parley_test_token_0123456789ab"
SECRET = "parley-webhook-secret_42"
FILE_PATH = "photos/file_7.jpg"
DATE = 1_717_171_717


def numeric(value: str) -> int:
    """Telegram ids are integers: a kit's ``u1`` becomes a stable one."""
    if value.lstrip("-").isdigit():
        return int(value)
    return zlib.crc32(value.encode()) % 2_000_000_000 + 1


def user(sender: str) -> dict[str, Any]:
    return {
        "id": numeric(sender),
        "is_bot": False,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "username": "ada",
        "language_code": "en",
    }


def chat(sender: str) -> dict[str, Any]:
    return {"id": numeric(sender), "first_name": "Ada", "username": "ada", "type": "private"}


def message(sender: str, message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "message_id": numeric(message_id),
        "from": user(sender),
        "chat": chat(sender),
        "date": DATE,
        **fields,
    }


def update(message_id: str, **kinds: Any) -> dict[str, Any]:
    return {"update_id": numeric(message_id) + 100_000, **kinds}


class TelegramKit:
    type = "telegram"
    secret_fields = ("bot_token", "secret_token")

    def config(self) -> dict[str, Any]:
        return {"bot_token": BOT_TOKEN, "secret_token": SECRET}

    def signed(
        self,
        connector: Connector[Any],
        body: dict[str, Any] | bytes,
        *,
        secret: str | None = SECRET,
    ) -> WebhookRequest:
        """A webhook POST as Telegram makes it (``secret=None``: without the header)."""
        headers = {"content-type": "application/json"}
        if secret is not None:
            headers["x-telegram-bot-api-secret-token"] = secret
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return WebhookRequest("POST", connector.webhook_url, headers, {}, raw)

    def text_webhook(
        self, connector: Connector[Any], text: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        fields: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            command = text.split()[0]
            fields["entities"] = [{"offset": 0, "length": len(command), "type": "bot_command"}]
        return self.signed(
            connector, update(message_id, message=message(sender, message_id, **fields))
        )

    def button_webhook(
        self, connector: Connector[Any], payload: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        data = callback_data(payload)
        shown = message(
            "bot",
            "1",
            text="Pick one",
            reply_markup={"inline_keyboard": [[{"text": payload, "callback_data": data}]]},
        )
        shown["chat"] = chat(sender)
        query = {
            "id": str(numeric(message_id) * 1000 + 7),
            "from": user(sender),
            "message": shown,
            "chat_instance": "-4815162342",
            "data": data,
        }
        return self.signed(connector, update(message_id, callback_query=query))

    def image_webhook(
        self, connector: Connector[Any], *, sender: str, message_id: str
    ) -> WebhookRequest:
        sizes = [  # as Telegram lists them: several sizes of one photo, not sorted here
            {
                "file_id": "AgAD-small",
                "file_unique_id": "s",
                "file_size": 1_402,
                "width": 90,
                "height": 67,
            },
            {
                "file_id": "AgAD-large",
                "file_unique_id": "l",
                "file_size": 98_311,
                "width": 1280,
                "height": 960,
            },
            {
                "file_id": "AgAD-medium",
                "file_unique_id": "m",
                "file_size": 17_045,
                "width": 320,
                "height": 240,
            },
        ]
        body = update(message_id, message=message(sender, message_id, photo=sizes))
        return self.signed(connector, body)

    def unknown_webhook(self, connector: Connector[Any]) -> WebhookRequest:
        edited = message("u1", "5", text="edited", edit_date=DATE + 60)
        return self.signed(connector, update("5", edited_message=edited))

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        headers = {**request.headers, "x-telegram-bot-api-secret-token": "not-" + SECRET}
        return WebhookRequest(request.method, request.url, headers, request.query, request.body)

    def stale(self, connector: Connector[Any], text: str) -> WebhookRequest | None:
        return None  # Telegram stamps no timestamp on its webhook calls

    def provider(self, image: bytes, calls: list[httpx.Request]) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            path = request.url.path
            if request.url.host != "api.telegram.org":
                return httpx.Response(404)
            if path == f"/file/bot{BOT_TOKEN}/{FILE_PATH}":
                return httpx.Response(200, content=image, headers={"content-type": "image/jpeg"})
            prefix = f"/bot{BOT_TOKEN}/"
            if not path.startswith(prefix):
                return httpx.Response(
                    401, json={"ok": False, "error_code": 401, "description": "Unauthorized"}
                )
            method = path.removeprefix(prefix)
            body = json.loads(request.content or b"{}")
            if method == "getFile":
                result: Any = {
                    "file_id": body["file_id"],
                    "file_unique_id": "u",
                    "file_size": len(image),
                    "file_path": FILE_PATH,
                }
            elif method in ("sendMessage", "sendPhoto"):
                result = {"message_id": len(calls), "chat": {"id": body["chat_id"]}, "date": DATE}
            elif method in ("setWebhook", "answerCallbackQuery"):
                result = True
            else:
                return httpx.Response(
                    404, json={"ok": False, "error_code": 404, "description": "Not Found"}
                )
            return httpx.Response(200, json={"ok": True, "result": result})

        return httpx.MockTransport(handle)

    def sent(self, calls: list[httpx.Request]) -> list[dict[str, Any]]:
        out = []
        for request in calls:
            method = request.url.path.rsplit("/", 1)[-1]
            if method not in ("sendMessage", "sendPhoto"):
                continue
            body = json.loads(request.content)
            keyboard = body.get("reply_markup", {}).get("inline_keyboard", [])
            out.append(
                {
                    "to": str(body["chat_id"]),
                    "text": body.get("text", body.get("caption", "")),
                    "buttons": [button["text"] for row in keyboard for button in row],
                }
            )
        return out


KIT = register(TelegramKit())
