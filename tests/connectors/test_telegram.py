"""The Telegram connector against Bot API-shaped updates and a fake api.telegram.org."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from connectors.base import Media
from connectors.telegram import TelegramConfig, TelegramConnector, callback_data
from core.errors import DeliveryFailed, InvalidInput, PayloadTooLarge, Unauthenticated
from core.messages import OutboundMessage
from tests.connectors.telegram_kit import (
    BOT_TOKEN,
    FILE_PATH,
    KIT,
    SECRET,
    chat,
    message,
    numeric,
    update,
    user,
)

URL = "https://parley.example/webhooks/ch_tg"
API = f"https://api.telegram.org/bot{BOT_TOKEN}"
IMAGE = b"\xff\xd8\xff\xe0" + b"jpeg" * 500


def make(transport: httpx.AsyncBaseTransport | None = None) -> TelegramConnector:
    calls: list[httpx.Request] = []
    connector = TelegramConnector(
        TelegramConfig.model_validate(KIT.config()),
        httpx.AsyncClient(transport=transport or KIT.provider(IMAGE, calls)),
        webhook_url=URL,
    )
    connector._sleep = _no_wait  # type: ignore[method-assign]
    return connector


async def _no_wait(_: float) -> None:
    return None


def recording() -> tuple[TelegramConnector, list[httpx.Request]]:
    calls: list[httpx.Request] = []
    return make(KIT.provider(IMAGE, calls)), calls


def bodies(calls: list[httpx.Request]) -> list[tuple[str, dict[str, Any]]]:
    return [(str(r.url), json.loads(r.content)) for r in calls]


# -- config --


def test_config_keeps_secrets_secret_and_refuses_malformed_tokens() -> None:
    config = TelegramConfig.model_validate(KIT.config())
    assert SECRET not in repr(config) and BOT_TOKEN not in repr(config)
    with pytest.raises(ValueError, match="A-Z, a-z, 0-9") as bad_secret:
        TelegramConfig.model_validate({**KIT.config(), "secret_token": "has spaces & symbols!"})
    assert "has spaces" not in str(bad_secret.value)
    with pytest.raises(ValueError, match="BotFather") as bad_token:
        TelegramConfig.model_validate({**KIT.config(), "bot_token": "not-a-token"})
    assert "not-a-token" not in str(bad_token.value)
    with pytest.raises(ValueError):
        TelegramConfig.model_validate({"bot_token": BOT_TOKEN})


# -- verify --


def test_the_secret_token_header_must_match() -> None:
    connector = make()
    body = update("1", message=message("42", "1", text="hi"))
    connector.verify(KIT.signed(connector, body))
    with pytest.raises(Unauthenticated, match="missing"):
        connector.verify(KIT.signed(connector, body, secret=None))
    with pytest.raises(Unauthenticated, match="does not match") as wrong:
        connector.verify(KIT.signed(connector, body, secret=SECRET + "x"))
    assert SECRET not in wrong.value.message
    with pytest.raises(Unauthenticated):
        connector.verify(KIT.signed(connector, body, secret="sécret"))  # not even ASCII


# -- parse --


def test_a_text_message() -> None:
    connector = make()
    request = KIT.text_webhook(connector, "where is my order?", sender="42", message_id="7")
    result = connector.parse(request)
    (msg,) = result.messages
    assert msg.sender_id == "42" and msg.text == "where is my order?"
    assert msg.message_id == "42:7" and msg.payload is None and msg.media == ()
    assert msg.metadata == {"chat_type": "private", "name": "Ada Lovelace"}
    assert result.reply.status == 200 and result.reply.body == b""
    # Telegram redelivers the same update: the same message id; another message differs
    assert connector.parse(request).messages[0].message_id == "42:7"
    other = KIT.text_webhook(connector, "where is my order?", sender="42", message_id="8")
    assert connector.parse(other).messages[0].message_id == "42:8"


def test_a_group_message_is_answered_in_the_group() -> None:
    connector = make()
    body = update("3", message=message("42", "3", text="hello"))
    body["message"]["chat"] = {"id": -1001234567890, "title": "Support", "type": "supergroup"}
    (msg,) = connector.parse(KIT.signed(connector, body)).messages
    assert msg.sender_id == "-1001234567890" and msg.message_id == "-1001234567890:3"
    assert msg.metadata["chat_type"] == "supergroup"


def test_a_photo_takes_its_largest_size_and_its_caption() -> None:
    connector = make()
    request = KIT.image_webhook(connector, sender="42", message_id="9")
    body = json.loads(request.body)
    body["message"]["caption"] = "my parcel arrived like this"
    (msg,) = connector.parse(KIT.signed(connector, body)).messages
    assert msg.text == "my parcel arrived like this"
    assert msg.media == (Media(file_id="AgAD-large", media_type="image/jpeg", size=98_311),)


def test_an_image_sent_as_a_file_is_an_image_and_other_files_are_not() -> None:
    connector = make()
    doc = {"file_id": "BQAD-doc", "file_name": "label.png", "mime_type": "image/png"}
    body = update("4", message=message("42", "4", document={**doc, "file_size": 5000}))
    (msg,) = connector.parse(KIT.signed(connector, body)).messages
    assert msg.media == (Media(file_id="BQAD-doc", media_type="image/png", size=5000),)
    pdf = {"file_id": "BQAD-pdf", "file_name": "invoice.pdf", "mime_type": "application/pdf"}
    body = update("5", message=message("42", "5", document=pdf))
    with pytest.raises(InvalidInput, match="no text, caption or image"):
        connector.parse(KIT.signed(connector, body))


def test_a_callback_query_is_a_payload_and_is_acknowledged_in_the_answer() -> None:
    connector = make()
    request = KIT.button_webhook(connector, "/track_order", sender="42", message_id="11")
    query_id = json.loads(request.body)["callback_query"]["id"]
    result = connector.parse(request)
    (press,) = result.messages
    assert press.payload == "/track_order" and press.text == ""
    assert press.sender_id == "42" and press.message_id == f"callback:{query_id}"
    assert result.reply.media_type == "application/json"
    assert json.loads(result.reply.body) == {
        "method": "answerCallbackQuery",
        "callback_query_id": query_id,
    }
    assert connector.parse(request).messages[0].message_id == press.message_id


def test_a_callback_from_an_inline_mode_message_answers_the_user() -> None:
    connector = make()
    query = {"id": "99", "from": user("42"), "inline_message_id": "AAA", "data": "/yes"}
    (press,) = connector.parse(KIT.signed(connector, update("12", callback_query=query))).messages
    assert press.sender_id == str(numeric("42")) and press.payload == "/yes"


def test_a_payload_over_64_bytes_survives_as_the_buttons_title() -> None:
    connector, calls = recording()
    long_payload = '/choose_parcel{"order_id": "PX-100234", "parcel": "the blue box, 2 of 3"}'
    assert len(long_payload.encode()) > 64
    asyncio.run(
        connector.send(
            "42",
            OutboundMessage.of(
                {"text": "Which?", "buttons": [{"title": "Blue box", "payload": long_payload}]}
            ),
            {},
        )
    )
    ((_, sent),) = bodies(calls)
    button = sent["reply_markup"]["inline_keyboard"][0][0]
    assert len(button["callback_data"].encode()) <= 64 and button["text"] == "Blue box"
    # Telegram sends the press back with the message it was on, keyboard included
    shown = message("bot", "20", text="Which?", reply_markup=sent["reply_markup"])
    query = {"id": "77", "from": user("42"), "message": shown, "data": button["callback_data"]}
    (press,) = connector.parse(KIT.signed(connector, update("21", callback_query=query))).messages
    assert press.payload is None and press.text == "Blue box"
    # a message too old to show its keyboard: nothing to go on
    old = {"message_id": 20, "chat": chat("42"), "date": 0}
    query = {"id": "78", "from": user("42"), "message": old, "data": button["callback_data"]}
    with pytest.raises(InvalidInput, match="64 bytes"):
        connector.parse(KIT.signed(connector, update("22", callback_query=query)))


def test_callback_data_is_the_payload_when_it_fits() -> None:
    assert callback_data("/track_order") == "/track_order"
    assert callback_data("x" * 64) == "x" * 64
    assert callback_data("x" * 65) != "x" * 65 and len(callback_data("x" * 65)) <= 64
    assert callback_data("é" * 33) != "é" * 33  # 66 bytes
    assert callback_data("x" * 65) == callback_data("x" * 65)


@pytest.mark.parametrize(
    "body",
    [
        update("30", edited_message=message("42", "30", text="edited", edit_date=1)),
        update("31", channel_post=message("42", "31", text="news")),
        update("32", message=message("42", "32", sticker={"file_id": "CAAD", "emoji": "👍"})),
        update("33", callback_query={"id": "5", "from": user("42"), "game_short_name": "g"}),
        {"update_id": 34},
        {"message": {"text": "no update id"}},
        [1, 2, 3],
    ],
    ids=["edited", "channel_post", "sticker", "game", "empty", "no_update_id", "list"],
)
def test_other_updates_are_invalid_input(body: Any) -> None:
    connector = make()
    with pytest.raises(InvalidInput):
        connector.parse(KIT.signed(connector, body))


def test_a_body_that_is_not_json_is_invalid_input() -> None:
    connector = make()
    with pytest.raises(InvalidInput, match="not a Telegram update"):
        connector.parse(KIT.signed(connector, b"{not json"))


# -- send --


def test_text_goes_out_with_send_message() -> None:
    connector, calls = recording()
    asyncio.run(connector.send("42", OutboundMessage.of({"text": "Hello!"}), {}))
    assert [(r.method, str(r.url)) for r in calls] == [("POST", f"{API}/sendMessage")]
    assert calls[0].headers["content-type"] == "application/json"
    assert json.loads(calls[0].content) == {"chat_id": 42, "text": "Hello!"}


def test_buttons_and_quick_replies_are_an_inline_keyboard() -> None:
    connector, calls = recording()
    message_ = {
        "text": "Pick one",
        "buttons": [
            {"title": "Track my order", "payload": "/track_order"},
            {"title": "Our site", "url": "https://parcelly.example"},
        ],
        "quick_replies": [{"title": "Talk to a person", "payload": "/talk_to_human"}],
    }
    asyncio.run(connector.send("42", OutboundMessage.of(message_), {}))
    assert bodies(calls) == [
        (
            f"{API}/sendMessage",
            {
                "chat_id": 42,
                "text": "Pick one",
                "reply_markup": {
                    "inline_keyboard": [
                        [{"text": "Track my order", "callback_data": "/track_order"}],
                        [{"text": "Our site", "url": "https://parcelly.example"}],
                        [{"text": "Talk to a person", "callback_data": "/talk_to_human"}],
                    ]
                },
            },
        )
    ]


def test_buttons_without_text_still_get_text_above_them() -> None:
    connector, calls = recording()
    asyncio.run(
        connector.send(
            "42", OutboundMessage.of({"buttons": [{"title": "Yes", "payload": "/yes"}]}), {}
        )
    )
    ((_, sent),) = bodies(calls)
    assert sent["text"] == "1. Yes" and sent["reply_markup"]["inline_keyboard"]


def test_an_image_is_a_photo_with_the_text_as_caption() -> None:
    connector, calls = recording()
    reply = {
        "text": "Your label",
        "image": "https://cdn.example/label.png",
        "quick_replies": [{"title": "Thanks", "payload": "/thanks"}],
    }
    asyncio.run(connector.send("42", OutboundMessage.of(reply), {}))
    assert bodies(calls) == [
        (
            f"{API}/sendPhoto",
            {
                "chat_id": 42,
                "photo": "https://cdn.example/label.png",
                "caption": "Your label",
                "reply_markup": {
                    "inline_keyboard": [[{"text": "Thanks", "callback_data": "/thanks"}]]
                },
            },
        )
    ]


def test_text_too_long_for_a_caption_or_a_message_is_split() -> None:
    connector, calls = recording()
    text = "x" * 5000
    reply = {"text": text, "image": "https://cdn.example/a.png", "buttons": [{"title": "Ok"}]}
    asyncio.run(connector.send("42", OutboundMessage.of(reply), {}))
    sent = bodies(calls)
    assert [url.rsplit("/", 1)[1] for url, _ in sent] == ["sendPhoto", "sendMessage", "sendMessage"]
    assert "caption" not in sent[0][1]
    assert "".join(body["text"] for _, body in sent[1:]) == text
    assert "reply_markup" not in sent[1][1] and "reply_markup" in sent[2][1]
    assert sent[2][1]["reply_markup"]["inline_keyboard"] == [
        [{"text": "Ok", "callback_data": "Ok"}]
    ]


def test_cards_are_photos_with_their_own_buttons() -> None:
    connector, calls = recording()
    reply = {
        "text": "Your parcels",
        "cards": [
            {
                "title": "Blue box",
                "subtitle": "In transit",
                "image": "https://cdn.example/blue.png",
                "buttons": [{"title": "Track", "payload": '/track{"p": 1}'}],
            },
            {"title": "Envelope", "subtitle": "Delivered"},
        ],
    }
    asyncio.run(connector.send("42", OutboundMessage.of(reply), {}))
    assert bodies(calls) == [
        (f"{API}/sendMessage", {"chat_id": 42, "text": "Your parcels"}),
        (
            f"{API}/sendPhoto",
            {
                "chat_id": 42,
                "photo": "https://cdn.example/blue.png",
                "caption": "Blue box\nIn transit",
                "reply_markup": {
                    "inline_keyboard": [[{"text": "Track", "callback_data": '/track{"p": 1}'}]]
                },
            },
        ),
        (f"{API}/sendMessage", {"chat_id": 42, "text": "Envelope\nDelivered"}),
    ]


def test_a_channel_name_is_sent_as_is_and_an_empty_message_sends_nothing() -> None:
    connector, calls = recording()
    asyncio.run(connector.send("@parcelly_news", OutboundMessage.of({"text": "News"}), {}))
    asyncio.run(connector.send("42", OutboundMessage.of({"custom": {"anything": 1}}), {}))
    assert bodies(calls) == [(f"{API}/sendMessage", {"chat_id": "@parcelly_news", "text": "News"})]


def test_flood_control_waits_as_long_as_telegram_asks() -> None:
    calls: list[httpx.Request] = []
    inner = KIT.provider(IMAGE, calls)
    waits: list[float] = []
    state = {"busy": 1}

    def flaky(request: httpx.Request) -> httpx.Response:
        if state["busy"]:
            state["busy"] -= 1
            return httpx.Response(
                429,
                json={
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 7",
                    "parameters": {"retry_after": 7},
                },
            )
        return inner.handle_request(request)

    connector = make(httpx.MockTransport(flaky))

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    connector._sleep = sleep  # type: ignore[method-assign]
    asyncio.run(connector.send("42", OutboundMessage.of({"text": "after a wait"}), {}))
    assert waits == [7.0]
    assert [body["text"] for _, body in bodies(calls)] == ["after a wait"]


def test_a_refusal_fails_without_showing_the_token() -> None:
    refusal = {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was blocked by the user",
    }
    connector = make(httpx.MockTransport(lambda r: httpx.Response(403, json=refusal)))
    with pytest.raises(DeliveryFailed, match="blocked by the user") as failed:
        asyncio.run(connector.send("42", OutboundMessage.of({"text": "hello?"}), {}))
    assert BOT_TOKEN not in failed.value.message
    not_ok = {"ok": False, "description": "Bad Request: chat not found"}
    connector = make(httpx.MockTransport(lambda r: httpx.Response(200, json=not_ok)))
    with pytest.raises(DeliveryFailed, match="chat not found"):
        asyncio.run(connector.send("42", OutboundMessage.of({"text": "hello?"}), {}))


# -- fetch --


def test_a_photo_is_fetched_through_get_file() -> None:
    connector, calls = recording()
    (msg,) = connector.parse(KIT.image_webhook(connector, sender="42", message_id="9")).messages
    assert asyncio.run(connector.fetch(msg.media[0], max_bytes=1_000_000)) == IMAGE
    assert [(r.method, str(r.url)) for r in calls] == [
        ("POST", f"{API}/getFile"),
        ("GET", f"https://api.telegram.org/file/bot{BOT_TOKEN}/{FILE_PATH}"),
    ]
    assert json.loads(calls[0].content) == {"file_id": "AgAD-large"}


def test_media_over_the_limit_is_refused_before_and_while_downloading() -> None:
    connector, calls = recording()
    with pytest.raises(PayloadTooLarge):  # Telegram's file_size in the update
        asyncio.run(connector.fetch(Media(file_id="f", size=20_000), max_bytes=10_000))
    assert calls == []
    with pytest.raises(PayloadTooLarge):  # getFile's file_size
        asyncio.run(connector.fetch(Media(file_id="f"), max_bytes=len(IMAGE) - 1))
    assert [r.url.path.rsplit("/", 1)[1] for r in calls] == ["getFile"]

    def lying(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/getFile"):
            return httpx.Response(200, json={"ok": True, "result": {"file_path": "p/1.jpg"}})
        return httpx.Response(200, content=Chunked(b"x" * 50_000))

    connector = make(httpx.MockTransport(lying))
    with pytest.raises(PayloadTooLarge):
        asyncio.run(connector.fetch(Media(file_id="f"), max_bytes=10_000))


def test_a_file_telegram_will_not_hand_over_fails_clearly() -> None:
    big = {"ok": True, "result": {"file_id": "f", "file_unique_id": "u"}}  # no file_path
    connector = make(httpx.MockTransport(lambda r: httpx.Response(200, json=big)))
    with pytest.raises(DeliveryFailed, match="20 MB"):
        asyncio.run(connector.fetch(Media(file_id="f"), max_bytes=10_000))
    with pytest.raises(InvalidInput):
        asyncio.run(make().fetch(Media(url="https://elsewhere.example/x.jpg"), max_bytes=10))


# -- register --


def test_register_sets_the_webhook_with_the_secret_token() -> None:
    connector, calls = recording()
    asyncio.run(connector.register())
    assert bodies(calls) == [
        (
            f"{API}/setWebhook",
            {
                "url": URL,
                "secret_token": SECRET,
                "allowed_updates": ["message", "callback_query"],
            },
        )
    ]


class Chunked(httpx.AsyncByteStream):
    """A body without Content-Length, in chunks."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for i in range(0, len(self.data), 4096):
            yield self.data[i : i + 4096]
