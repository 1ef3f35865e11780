"""The Messenger connector: the hub.challenge handshake, X-Hub-Signature-256, text, image,
quick-reply and postback events, and the Send API (templates, quick replies, degradation)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from connectors.base import Media, WebhookRequest
from connectors.messenger import MessengerConnector
from core.errors import DeliveryFailed, InvalidInput, PayloadTooLarge, Unauthenticated
from core.messages import OutboundMessage
from tests.connectors._harness import Waits, build
from tests.connectors.messenger_kit import APP_SECRET, IMAGE_URL, KIT, PAGE_ID, PAGE_TOKEN

URL = "https://parley.example/webhooks/ch_messenger"
IMAGE = b"\xff\xd8\xff\xe0" + b"\x00" * 2000
SEND_URL = "https://graph.facebook.com/v19.0/me/messages"


def make(handler: Any = None) -> tuple[MessengerConnector, list[httpx.Request], Waits]:
    connector, calls, waits = build(KIT, url=URL, image=IMAGE, handler=handler)
    assert isinstance(connector, MessengerConnector)
    return connector, calls, waits


def sent_messages(calls: list[httpx.Request]) -> list[dict[str, Any]]:
    bodies = [json.loads(c.content) for c in calls if c.url.path == "/v19.0/me/messages"]
    assert all(b["messaging_type"] == "RESPONSE" for b in bodies)
    return [b["message"] for b in bodies]


def send(message: dict[str, Any]) -> list[dict[str, Any]]:
    connector, calls, _ = make()
    asyncio.run(connector.send("PSID1", OutboundMessage.of(message), {}))
    return sent_messages(calls)


# --- handshake and verify ---------------------------------------------------------------


def test_the_verification_handshake_echoes_the_challenge() -> None:
    connector, _, _ = make()
    reply = connector.handshake(KIT.handshake(connector, challenge="1158201444"))
    assert reply is not None
    assert (reply.status, reply.body, reply.media_type) == (200, b"1158201444", "text/plain")
    with pytest.raises(Unauthenticated, match="verify_token"):
        connector.handshake(KIT.handshake(connector, token="guess"))
    other = WebhookRequest(method="GET", url=URL, headers={}, query={}, body=b"")
    with pytest.raises(InvalidInput, match="hub.mode"):
        connector.handshake(other)


def test_webhooks_not_signed_with_the_app_secret_are_refused() -> None:
    connector, _, _ = make()
    good = KIT.text_webhook(connector, "hi", sender="PSID1", message_id="m_1")
    digest = hmac.new(APP_SECRET.encode(), good.body, hashlib.sha256).hexdigest()
    assert good.headers["x-hub-signature-256"] == f"sha256={digest}"
    connector.verify(good)
    headers_without = {k: v for k, v in good.headers.items() if k != "x-hub-signature-256"}
    cases = {
        "missing": dataclasses.replace(good, headers=headers_without),
        "sha1 only": dataclasses.replace(
            good,
            headers={**headers_without, "x-hub-signature-256": good.headers["x-hub-signature"]},
        ),
        "bare digest": dataclasses.replace(
            good, headers={**good.headers, "x-hub-signature-256": digest}
        ),
        "wrong secret": KIT.signed(connector, good.body, secret="another-app"),
        "tampered body": KIT.tamper(good),
    }
    for name, request in cases.items():
        with pytest.raises(Unauthenticated) as caught:
            connector.verify(request)
        assert APP_SECRET not in caught.value.message, name
    assert KIT.stale(connector, "hi") is None


# --- parse ------------------------------------------------------------------------------


def test_a_text_message() -> None:
    connector, _, _ = make()
    (message,) = connector.parse(
        KIT.text_webhook(connector, "where is my order?", sender="PSID1", message_id="m_AG5Hz2")
    ).messages
    assert message.sender_id == "PSID1"
    assert message.text == "where is my order?"
    assert message.message_id == "m_AG5Hz2"
    assert message.payload is None and message.media == ()
    assert message.metadata == {"page_id": PAGE_ID}


def test_an_image_attachment_and_its_fetch() -> None:
    connector, calls, _ = make()
    (message,) = connector.parse(
        KIT.image_webhook(connector, sender="PSID1", message_id="m_2")
    ).messages
    assert message.media == (Media(url=IMAGE_URL),)
    assert asyncio.run(connector.fetch(message.media[0], max_bytes=10_000)) == IMAGE
    (download,) = calls
    assert str(download.url) == IMAGE_URL and "authorization" not in download.headers
    with pytest.raises(PayloadTooLarge):
        asyncio.run(connector.fetch(message.media[0], max_bytes=1000))


def test_quick_replies_and_postbacks_are_payloads() -> None:
    connector, _, _ = make()
    quick = KIT.event(
        "PSID1",
        message={
            "mid": "m_3",
            "text": "Track my order",
            "quick_reply": {"payload": "/track_order"},
        },
    )
    postback = KIT.event(
        "PSID1", postback={"title": "Talk to a person", "payload": "/talk_to_human", "mid": "m_4"}
    )
    old_postback = KIT.event("PSID1", postback={"title": "Start", "payload": "/greet"})
    messages = connector.parse(KIT.webhook(connector, quick, postback, old_postback)).messages
    assert [(m.text, m.payload, m.message_id) for m in messages] == [
        ("Track my order", "/track_order", "m_3"),
        ("Talk to a person", "/talk_to_human", "m_4"),
        ("Start", "/greet", "postback:PSID1:1458692752478"),
    ]


def test_echoes_and_receipts_are_skipped_and_unknown_events_are_invalid() -> None:
    connector, _, _ = make()
    echo = KIT.event(
        PAGE_ID, message={"mid": "m_5", "text": "our reply", "is_echo": True, "app_id": 1}
    )
    delivery = KIT.event("PSID1", delivery={"mids": ["m_5"], "watermark": 1458668856253})
    read = KIT.event("PSID1", read={"watermark": 1458668856253})
    assert connector.parse(KIT.webhook(connector, echo, delivery, read)).messages == []
    with pytest.raises(InvalidInput, match="reaction"):
        connector.parse(KIT.unknown_webhook(connector))
    video = KIT.event(
        "PSID1",
        message={"mid": "m_6", "attachments": [{"type": "video", "payload": {"url": "https://v"}}]},
    )
    with pytest.raises(InvalidInput, match="video"):
        connector.parse(KIT.webhook(connector, video))
    sticker = {"type": "image", "payload": {"url": "https://s", "sticker_id": 369239263222822}}
    with pytest.raises(InvalidInput, match="sticker"):
        connector.parse(
            KIT.webhook(
                connector, KIT.event("PSID1", message={"mid": "m_7", "attachments": [sticker]})
            )
        )
    text = KIT.event("PSID1", message={"mid": "m_8", "text": "hi"})
    (kept,) = connector.parse(KIT.webhook(connector, video, text)).messages  # one bad, one good
    assert kept.text == "hi"
    for body in (b"{", json.dumps({"object": "instagram", "entry": []}).encode()):
        with pytest.raises(InvalidInput):
            connector.parse(KIT.signed(connector, body))


def test_a_redelivered_message_keeps_its_mid() -> None:
    connector, _, _ = make()
    first, again = (
        connector.parse(KIT.text_webhook(connector, "hi", sender="PSID1", message_id="m_9"))
        for _ in range(2)
    )
    assert first.messages[0].message_id == again.messages[0].message_id == "m_9"


# --- send -------------------------------------------------------------------------------


def test_text_goes_to_the_send_api_with_the_page_token() -> None:
    connector, calls, _ = make()
    asyncio.run(connector.send("PSID1", OutboundMessage.of({"text": "Hello!"}), {}))
    (call,) = calls
    assert call.method == "POST"
    assert call.url.copy_with(query=None) == SEND_URL
    proof = hmac.new(APP_SECRET.encode(), PAGE_TOKEN.encode(), hashlib.sha256).hexdigest()
    assert dict(call.url.params) == {"access_token": PAGE_TOKEN, "appsecret_proof": proof}
    assert json.loads(call.content) == {
        "recipient": {"id": "PSID1"},
        "messaging_type": "RESPONSE",
        "message": {"text": "Hello!"},
    }


def test_up_to_three_buttons_are_a_button_template() -> None:
    buttons = [
        {"title": "Track my order", "payload": "/track_order"},
        {"title": "Talk to a person about it", "payload": "/talk_to_human"},
    ]
    assert send({"text": "Pick one", "buttons": buttons}) == [
        {
            "attachment": {
                "type": "template",
                "payload": {
                    "template_type": "button",
                    "text": "Pick one",
                    "buttons": [
                        {"type": "postback", "title": "Track my order", "payload": "/track_order"},
                        {
                            "type": "postback",
                            "title": "Talk to a person ab…",  # 20 characters at most
                            "payload": "/talk_to_human",
                        },
                    ],
                },
            }
        }
    ]


def test_quick_replies_ride_on_the_message() -> None:
    quick = [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]
    assert send({"text": "Is that right?", "quick_replies": quick}) == [
        {
            "text": "Is that right?",
            "quick_replies": [
                {"content_type": "text", "title": "Yes", "payload": "/affirm"},
                {"content_type": "text", "title": "No", "payload": "/deny"},
            ],
        }
    ]


def test_more_buttons_than_a_template_holds_become_quick_replies_then_text() -> None:
    four = [{"title": f"Option {i}", "payload": f"/o{i}"} for i in range(1, 5)]
    (message,) = send({"text": "Pick one", "buttons": four})
    assert message["text"] == "Pick one"
    assert [q["title"] for q in message["quick_replies"]] == [b["title"] for b in four]
    fourteen = [{"title": f"Option {i}", "payload": f"/o{i}"} for i in range(1, 15)]
    (message,) = send({"text": "Pick one", "quick_replies": fourteen})
    assert "quick_replies" not in message
    assert message["text"].splitlines()[:3] == ["Pick one", "1. Option 1", "2. Option 2"]
    assert message["text"].endswith("14. Option 14")


def test_long_text_is_split_and_buttons_follow_it() -> None:
    text = ("parcel " * 400).strip()  # 2799 characters: over a template's 640 and a message's 2000
    messages = send({"text": text, "buttons": [{"title": "OK", "payload": "/ok"}]})
    assert [len(m["text"]) <= 2000 for m in messages] == [True, True]
    assert " ".join(m["text"] for m in messages) == text
    assert "quick_replies" not in messages[0]
    assert messages[1]["quick_replies"] == [
        {"content_type": "text", "title": "OK", "payload": "/ok"}
    ]


def test_images_and_cards_are_attachments() -> None:
    card = {
        "title": "PX-100234",
        "subtitle": "In transit",
        "image": "/v1/bots/bot_1/uploads/up_1",
        "buttons": [{"title": f"B{i}", "payload": f"/b{i}"} for i in range(4)],
    }
    messages = send({"text": "Your parcel", "image": "https://cdn.example/p.png", "cards": [card]})
    assert messages == [
        {"text": "Your parcel"},
        {"attachment": {"type": "image", "payload": {"url": "https://cdn.example/p.png"}}},
        {
            "attachment": {
                "type": "template",
                "payload": {
                    "template_type": "generic",
                    "elements": [
                        {
                            "title": "PX-100234",
                            "subtitle": "In transit",
                            "image_url": "https://parley.example/v1/bots/bot_1/uploads/up_1",
                            "buttons": [
                                {"type": "postback", "title": f"B{i}", "payload": f"/b{i}"}
                                for i in range(3)  # a card holds 3 buttons
                            ],
                        }
                    ],
                },
            }
        },
    ]


def test_options_without_text_still_have_a_prompt() -> None:
    (message,) = send(
        {"quick_replies": [{"title": "Yes", "payload": "/y"}, {"title": "No", "payload": "/n"}]}
    )
    assert message["text"] == "Yes / No"
    assert send({"custom": {"anything": 1}}) == []


def test_a_busy_send_api_is_retried_and_a_refusal_fails() -> None:
    answers = [
        httpx.Response(503, headers={"Retry-After": "2"}),
        httpx.Response(200, json={"recipient_id": "PSID1", "message_id": "m_1"}),
    ]
    connector, _, waits = make(lambda request: answers.pop(0))
    asyncio.run(connector.send("PSID1", OutboundMessage.of({"text": "after a wait"}), {}))
    assert waits == [2.0]

    def refuse(request: httpx.Request) -> httpx.Response:
        error = {
            "message": "(#10) This message is sent outside of allowed window.",
            "type": "OAuthException",
            "code": 10,
            "error_subcode": 2018278,
        }
        return httpx.Response(400, json={"error": error})

    refusing, _, _ = make(refuse)
    with pytest.raises(DeliveryFailed, match="allowed window") as caught:
        asyncio.run(refusing.send("PSID1", OutboundMessage.of({"text": "too late"}), {}))
    assert PAGE_TOKEN not in caught.value.message
