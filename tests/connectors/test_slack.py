"""The Slack connector: signatures and replay window, the URL verification challenge, message,
file share and button payloads, retries, and chat.postMessage as Slack documents it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import httpx
import pytest

from connectors.base import Media, WebhookRequest
from connectors.slack import SlackConnector
from core.errors import DeliveryFailed, InvalidInput, PayloadTooLarge, Unauthenticated
from core.messages import OutboundMessage
from tests.connectors._harness import Waits, build
from tests.connectors.slack_kit import BOT_TOKEN, FILE_URL, KIT, SIGNING_SECRET

URL = "https://parley.example/webhooks/ch_slack"
IMAGE = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000


def make(handler: Any = None) -> tuple[SlackConnector, list[httpx.Request], Waits]:
    connector, calls, waits = build(KIT, url=URL, image=IMAGE, handler=handler)
    assert isinstance(connector, SlackConnector)
    return connector, calls, waits


def posted(calls: list[httpx.Request]) -> list[dict[str, Any]]:
    return [json.loads(c.content) for c in calls if c.url.path == "/api/chat.postMessage"]


# --- verify ---------------------------------------------------------------------------


def test_slacks_documented_signature_example_verifies() -> None:
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
        b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebh"
        b"ook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%"
        b"2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0b"
        b"c887a14d10d2c447fce8b6703c"
    )
    request = WebhookRequest(
        method="POST",
        url=URL,
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": "1531420618",
            "x-slack-signature": (
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
            ),
        },
        query={},
        body=body,
        received_at=1531420618 + 30,
    )
    connector, _, _ = make()
    assert connector.config.signing_secret.get_secret_value() == SIGNING_SECRET
    connector.verify(request)
    with pytest.raises(InvalidInput, match="slash command"):
        connector.parse(request)  # signed, but a slash command is not read


def test_requests_not_signed_by_slack_are_refused() -> None:
    connector, _, _ = make()
    good = KIT.text_webhook(connector, "hi", sender="D1", message_id="Ev1")
    connector.verify(good)

    def without(name: str) -> WebhookRequest:
        headers = {k: v for k, v in good.headers.items() if k != name}
        return dataclasses.replace(good, headers=headers)

    cases = {
        "no signature": without("x-slack-signature"),
        "no timestamp": without("x-slack-request-timestamp"),
        "tampered body": dataclasses.replace(good, body=good.body.replace(b"hi", b"ho")),
        "wrong secret": KIT.signed(connector, good.body, secret="not-the-secret"),
        "other timestamp": dataclasses.replace(
            good,
            headers={
                **good.headers,
                "x-slack-request-timestamp": str(
                    int(good.headers["x-slack-request-timestamp"]) - 1
                ),
            },
        ),
        "tampered signature": KIT.tamper(good),
    }
    for name, request in cases.items():
        with pytest.raises(Unauthenticated) as caught:
            connector.verify(request)
        assert SIGNING_SECRET not in caught.value.message, name


def test_the_replay_window_is_five_minutes_either_way() -> None:
    connector, _, _ = make()
    body = KIT.event_body(KIT.message_event("hi", channel="D1"), event_id="Ev1")
    now = 1_700_000_000

    def at(stamp: int) -> WebhookRequest:
        return dataclasses.replace(KIT.signed(connector, body, timestamp=stamp), received_at=now)

    connector.verify(at(now - 299))
    connector.verify(at(now + 299))  # a server clock a little behind Slack's
    for stamp in (now - 301, now + 301):
        with pytest.raises(Unauthenticated, match="replay window"):
            connector.verify(at(stamp))


# --- parse ----------------------------------------------------------------------------


def test_url_verification_is_answered_with_the_challenge() -> None:
    connector, _, _ = make()
    body = json.dumps(
        {
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    request = KIT.signed(connector, body)
    connector.verify(request)
    result = connector.parse(request)
    assert result.messages == []
    assert result.reply.status == 200
    assert result.reply.body == b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    assert result.reply.media_type == "text/plain"


def test_a_message_event_becomes_a_message_in_its_channel() -> None:
    connector, _, _ = make()
    (message,) = connector.parse(
        KIT.text_webhook(connector, "where is PX-100234?", sender="D024BE91L", message_id="Ev9")
    ).messages
    assert message.sender_id == "D024BE91L"
    assert message.text == "where is PX-100234?"
    assert message.message_id == "Ev9"
    assert message.payload is None and message.media == ()
    assert message.metadata["user"] == "U0G9QF9C6" and "thread_ts" not in message.metadata


def test_slack_markup_is_undone() -> None:
    connector, _, _ = make()
    text = (
        "<@U0BOT> my email is <mailto:ann@example.com|ann@example.com>, see "
        "<https://parcelly.example/t/1|tracking> in <#C123|support> &amp; &lt;soon&gt;"
    )
    event = KIT.message_event(text, channel="C123")
    (message,) = connector.parse(
        KIT.signed(connector, KIT.event_body(event, event_id="Ev1"))
    ).messages
    assert message.text == "my email is ann@example.com, see tracking in #support & <soon>"


def test_a_message_in_a_thread_is_answered_in_the_thread() -> None:
    connector, calls, _ = make()
    event = KIT.message_event("hi", channel="C123", thread_ts="1355517520.000001")
    (message,) = connector.parse(
        KIT.signed(connector, KIT.event_body(event, event_id="Ev1"))
    ).messages
    assert message.metadata["thread_ts"] == "1355517520.000001"
    asyncio.run(
        connector.send(message.sender_id, OutboundMessage.of({"text": "Hello"}), message.metadata)
    )
    assert posted(calls)[0]["thread_ts"] == "1355517520.000001"


def test_a_retried_event_keeps_its_message_id() -> None:
    connector, _, _ = make()
    first = KIT.text_webhook(connector, "hi", sender="D1", message_id="Ev0123ABC")
    body = first.body
    retry = KIT.signed(
        connector,
        body,
        headers={"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"},
    )
    connector.verify(retry)
    ids = [connector.parse(r).messages[0].message_id for r in (first, retry)]
    assert ids == ["Ev0123ABC", "Ev0123ABC"]


def test_bot_messages_and_edits_are_skipped() -> None:
    connector, _, _ = make()
    skipped = [
        KIT.message_event("our own reply", channel="D1", bot_id="B0BOT", app_id="A0MDYCDME"),
        KIT.message_event("legacy bot", channel="D1", subtype="bot_message", bot_id="B1"),
        KIT.message_event("", channel="D1", subtype="message_changed", message={"text": "x"}),
        KIT.message_event("", channel="D1", subtype="message_deleted"),
        KIT.message_event("<@U1> has joined", channel="C1", subtype="channel_join"),
    ]
    for event in skipped:
        body = KIT.event_body(event, event_id="Ev1")
        assert connector.parse(KIT.signed(connector, body)).messages == []
    broadcast = KIT.message_event("also to channel", channel="C1", subtype="thread_broadcast")
    body = KIT.event_body(broadcast, event_id="Ev2")
    assert connector.parse(KIT.signed(connector, body)).messages[0].text == "also to channel"


def test_unknown_shapes_are_invalid_input() -> None:
    connector, _, _ = make()
    with pytest.raises(InvalidInput, match="reaction_added"):
        connector.parse(KIT.unknown_webhook(connector))
    for body in (b"not json", b"[1]", json.dumps({"type": "app_home_opened"}).encode()):
        with pytest.raises(InvalidInput):
            connector.parse(KIT.signed(connector, body))
    view = {"type": "view_submission", "view": {"id": "V1"}}
    with pytest.raises(InvalidInput, match="view_submission"):
        connector.parse(KIT.interaction(connector, view))
    pdf = KIT.file(mimetype="application/pdf", name="label.pdf")
    event = KIT.message_event("", channel="D1", subtype="file_share", files=[pdf])
    with pytest.raises(InvalidInput, match="application/pdf"):
        connector.parse(KIT.signed(connector, KIT.event_body(event, event_id="Ev1")))


def test_a_file_share_carries_its_images_and_text() -> None:
    connector, _, _ = make()
    files = [
        KIT.file(),
        KIT.file(mimetype="application/pdf", url_private="https://files.slack.com/x.pdf"),
    ]
    event = KIT.message_event("my parcel", channel="D1", subtype="file_share", files=files)
    (message,) = connector.parse(
        KIT.signed(connector, KIT.event_body(event, event_id="Ev1"))
    ).messages
    assert message.text == "my parcel"
    assert message.media == (Media(url=FILE_URL, media_type="image/png", size=1024),)


def test_a_button_click_is_its_payload() -> None:
    connector, _, _ = make()
    request = KIT.button_webhook(
        connector,
        '/track_order{"order": "PX-1"}',
        sender="D1",
        message_id="13345224609.738474920.8088930838d88f008e0",
    )
    connector.verify(request)
    (click,) = connector.parse(request).messages
    assert click.payload == '/track_order{"order": "PX-1"}'
    assert click.text == "Track my order"
    assert click.sender_id == "D1"
    assert click.message_id == "13345224609.738474920.8088930838d88f008e0"
    assert click.metadata["user"] == "U0G9QF9C6"
    data = KIT.block_actions("/yes", channel="C1", trigger_id="t1")
    data["message"]["thread_ts"] = "1548261200.000100"
    (threaded,) = connector.parse(KIT.interaction(connector, data)).messages
    assert threaded.metadata["thread_ts"] == "1548261200.000100"


# --- fetch ----------------------------------------------------------------------------


def test_a_file_is_fetched_with_the_bot_token() -> None:
    connector, calls, _ = make()
    data = asyncio.run(
        connector.fetch(Media(url=FILE_URL, media_type="image/png"), max_bytes=10_000)
    )
    assert data == IMAGE
    assert calls[0].url == FILE_URL
    assert calls[0].headers["authorization"] == f"Bearer {BOT_TOKEN}"


def test_fetch_refuses_big_files_foreign_hosts_and_login_pages() -> None:
    connector, calls, _ = make()
    with pytest.raises(PayloadTooLarge):  # declared by Slack: nothing downloaded
        asyncio.run(connector.fetch(Media(url=FILE_URL, size=5000), max_bytes=1000))
    assert calls == []
    with pytest.raises(PayloadTooLarge):  # found while reading
        asyncio.run(connector.fetch(Media(url=FILE_URL), max_bytes=1000))
    with pytest.raises(InvalidInput, match="only ever"):
        asyncio.run(connector.fetch(Media(url="https://evil.example/x.png"), max_bytes=10_000))
    assert all(c.url.host == "files.slack.com" for c in calls)

    def login_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, html="<!DOCTYPE html><html><body>Sign in</body></html>")

    no_scope, _, _ = make(login_page)
    with pytest.raises(DeliveryFailed, match="files:read"):
        asyncio.run(no_scope.fetch(Media(url=FILE_URL), max_bytes=10_000))


# --- send -----------------------------------------------------------------------------


def test_text_is_posted_with_the_bot_token() -> None:
    connector, calls, _ = make()
    asyncio.run(connector.send("D1", OutboundMessage.of({"text": "Parcel <PX-1> & co"}), {}))
    (call,) = calls
    assert call.method == "POST"
    assert str(call.url) == "https://slack.com/api/chat.postMessage"
    assert call.headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert call.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(call.content) == {
        "channel": "D1",
        "text": "Parcel &lt;PX-1&gt; &amp; co",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "Parcel &lt;PX-1&gt; &amp; co"}}
        ],
    }


def test_buttons_and_quick_replies_are_an_actions_block() -> None:
    connector, calls, _ = make()
    message = {
        "text": "Pick one",
        "buttons": [{"title": "Track my order", "payload": "/track_order"}],
        "quick_replies": [{"title": "Talk to a person", "payload": "/talk_to_human"}],
    }
    asyncio.run(connector.send("D1", OutboundMessage.of(message), {}))
    body = posted(calls)[0]
    assert body["text"] == "Pick one"
    assert body["blocks"][1] == {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Track my order"},
                "value": "/track_order",
                "action_id": "parley-1",
            },
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Talk to a person"},
                "value": "/talk_to_human",
                "action_id": "parley-2",
            },
        ],
    }
    many = {"text": "x", "buttons": [{"title": f"b{i}", "payload": f"/p{i}"} for i in range(30)]}
    asyncio.run(connector.send("D1", OutboundMessage.of(many), {}))
    actions = [b for b in posted(calls)[1]["blocks"] if b["type"] == "actions"]
    assert [len(a["elements"]) for a in actions] == [25, 5]  # Slack's limit per block


def test_images_and_cards_are_blocks() -> None:
    connector, calls, _ = make()
    message = {
        "image": "/v1/bots/bot_1/uploads/up_1",
        "cards": [
            {
                "title": "PX-100234",
                "subtitle": "In transit",
                "image": "https://cdn.example/p.png",
                "buttons": [{"title": "Details", "payload": "/details"}],
            }
        ],
    }
    asyncio.run(connector.send("D1", OutboundMessage.of(message), {}))
    body = posted(calls)[0]
    assert body["blocks"] == [
        {
            "type": "image",
            "image_url": "https://parley.example/v1/bots/bot_1/uploads/up_1",
            "alt_text": "image",
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*PX-100234*\nIn transit"},
            "accessory": {
                "type": "image",
                "image_url": "https://cdn.example/p.png",
                "alt_text": "PX-100234",
            },
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Details"},
                    "value": "/details",
                    "action_id": "parley-1",
                }
            ],
        },
    ]
    assert body["text"] == (
        "PX-100234 - In transit\nhttps://parley.example/v1/bots/bot_1/uploads/up_1"
    )


def test_long_text_is_split_into_sections_and_data_images_left_out() -> None:
    connector, calls, _ = make()
    text = ("word " * 700).strip()  # 3499 characters
    asyncio.run(
        connector.send(
            "D1", OutboundMessage.of({"text": text, "image": "data:image/png;base64,AAAA"}), {}
        )
    )
    blocks = posted(calls)[0]["blocks"]
    assert [b["type"] for b in blocks] == ["section", "section"]
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks)
    assert " ".join(b["text"]["text"] for b in blocks) == text


def test_a_busy_slack_is_retried_then_delivers() -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(
            200, json={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "3"}
        ),
        httpx.Response(200, json={"ok": True, "channel": "D1", "ts": "1.2"}),
    ]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    connector, _, waits = make(handler)
    asyncio.run(connector.send("D1", OutboundMessage.of({"text": "after a wait"}), {}))
    assert len(seen) == 3 and waits == [7.0, 3.0]


@pytest.mark.parametrize(
    ("status", "answer", "hint"),
    [
        (200, {"json": {"ok": False, "error": "channel_not_found"}}, "invite"),
        (200, {"json": {"ok": False, "error": "invalid_auth"}}, "bot_token"),
        (200, {"json": {"ok": False, "error": "ratelimited"}}, "ratelimited"),
        (400, {"text": "invalid_form_data"}, "refused"),
        (200, {"text": "<html>"}, "not JSON"),
    ],
)
def test_refusals_are_delivery_failures(status: int, answer: dict[str, Any], hint: str) -> None:
    connector, _, _ = make(lambda request: httpx.Response(status, **answer))
    with pytest.raises(DeliveryFailed, match=hint) as caught:
        asyncio.run(connector.send("D1", OutboundMessage.of({"text": "lost?"}), {}))
    assert BOT_TOKEN not in caught.value.message


def test_an_empty_message_sends_nothing() -> None:
    connector, calls, _ = make()
    asyncio.run(connector.send("D1", OutboundMessage.of({"custom": {"blocks": []}}), {}))
    assert calls == []
