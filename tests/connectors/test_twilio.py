"""The Twilio connector (SMS and WhatsApp) against Twilio-shaped webhooks and a fake
api.twilio.com."""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from connectors.base import Media
from connectors.twilio import EMPTY_TWIML, TwilioConfig, TwilioConnector, signature
from core.errors import DeliveryFailed, InvalidInput, PayloadTooLarge, Unauthenticated
from core.messages import OutboundMessage
from tests.connectors.twilio_kit import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    KIT,
    MEDIA_HOST,
    inbound,
    sid,
)

URL = "https://parley.example/webhooks/ch_tw"
MESSAGES = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
BASIC = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
IMAGE = b"\x89PNG\r\n\x1a\n" + b"png" * 700


def make(
    transport: httpx.AsyncBaseTransport | None = None, *, from_number: str = FROM_NUMBER
) -> TwilioConnector:
    connector = TwilioConnector(
        TwilioConfig.model_validate({**KIT.config(), "from_number": from_number}),
        httpx.AsyncClient(transport=transport or KIT.provider(IMAGE, [])),
        webhook_url=URL,
    )
    connector._sleep = _no_wait  # type: ignore[method-assign]
    return connector


async def _no_wait(_: float) -> None:
    return None


def recording(*, from_number: str = FROM_NUMBER) -> tuple[TwilioConnector, list[httpx.Request]]:
    calls: list[httpx.Request] = []
    return make(KIT.provider(IMAGE, calls), from_number=from_number), calls


def forms(calls: list[httpx.Request]) -> list[list[tuple[str, str]]]:
    assert all((r.method, str(r.url)) == ("POST", MESSAGES) for r in calls)
    assert all(r.headers["authorization"] == BASIC for r in calls)
    assert all(r.headers["content-type"] == "application/x-www-form-urlencoded" for r in calls)
    return [parse_qsl(r.content.decode()) for r in calls]


# -- config and signature --


def test_config_checks_its_fields_without_echoing_the_token() -> None:
    TwilioConfig.model_validate({**KIT.config(), "from_number": "whatsapp:+14155238886"})
    TwilioConfig.model_validate({**KIT.config(), "from_number": "12345"})  # a short code
    for bad in ({"from_number": "Parcelly"}, {"account_sid": "SK" + "0" * 32}):
        with pytest.raises(ValueError):
            TwilioConfig.model_validate({**KIT.config(), **bad})
    with pytest.raises(ValueError) as e:
        TwilioConfig.model_validate({**KIT.config(), "auth_token": AUTH_TOKEN, "extra": 1})
    assert AUTH_TOKEN not in str(e.value)


def test_signature_matches_twilios_published_example() -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature("12345", url, params.items()) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


# -- verify --


def test_a_signed_webhook_is_accepted_and_anything_else_refused() -> None:
    connector = make()
    good = KIT.text_webhook(connector, "hello", sender="+15558675310", message_id="m1")
    connector.verify(good)
    missing = {k: v for k, v in good.headers.items() if k != "x-twilio-signature"}
    with pytest.raises(Unauthenticated, match="missing"):
        connector.verify(replace(good, headers=missing))
    with pytest.raises(Unauthenticated, match="does not match"):
        connector.verify(KIT.tamper(good))  # the body changed after signing
    with pytest.raises(Unauthenticated, match="does not match") as wrong:
        connector.verify(KIT.signed(connector, inbound("+1555", "m1", "hi"), token="other"))
    assert AUTH_TOKEN not in wrong.value.message
    with pytest.raises(Unauthenticated):
        connector.verify(replace(good, body=b"\xff\xfe not a form"))


def test_the_query_string_is_signed_and_ports_are_forgiven() -> None:
    form = inbound("+15558675310", "m2", "hello")
    connector = make()
    with_query = KIT.signed(connector, form, url=URL + "?tenant=acme")
    connector.verify(with_query)
    with pytest.raises(Unauthenticated):  # the same signature for another query string
        connector.verify(replace(with_query, url=URL + "?tenant=other"))
    # Twilio may sign https://host:443/... for https://host/... and the other way round
    ported = URL.replace(".example/", ".example:443/")
    connector.verify(replace(KIT.signed(connector, form, url=ported), url=URL))
    connector.verify(replace(KIT.signed(connector, form), url=ported))
    other_port = KIT.signed(connector, form, url=URL.replace(".example/", ".example:8443/"))
    with pytest.raises(Unauthenticated):  # another port is another URL
        connector.verify(replace(other_port, url=URL))


def test_a_proxy_rewriting_the_url_does_not_break_signatures() -> None:
    connector = make()
    signed = KIT.signed(connector, inbound("+15558675310", "m3", "hi"), url=URL + "?x=1")
    connector.verify(replace(signed, url="http://10.0.0.5:8000/webhooks/ch_tw?x=1"))


# -- parse --


def test_an_sms() -> None:
    connector = make()
    request = KIT.text_webhook(
        connector, "where is my order?", sender="+15558675310", message_id="m1"
    )
    result = connector.parse(request)
    (msg,) = result.messages
    assert msg.sender_id == "+15558675310" and msg.text == "where is my order?"
    assert msg.message_id == sid("SM", "m1") and msg.media == () and msg.payload is None
    assert msg.metadata == {"channel": "sms"}
    assert (result.reply.status, result.reply.media_type) == (200, "text/xml")
    assert result.reply.body == EMPTY_TWIML
    assert connector.parse(request).messages[0].message_id == msg.message_id  # a retry


def test_a_whatsapp_quick_reply_button_and_profile_name() -> None:
    connector = make(from_number="whatsapp:+14155238886")
    form = inbound(
        "whatsapp:+15558675310",
        "m4",
        "Track my order",
        ButtonText="Track my order",
        ButtonPayload="/track_order",
        ProfileName="Ada",
        WaId="15558675310",
        To="whatsapp:+14155238886",
    )
    (msg,) = connector.parse(KIT.signed(connector, form)).messages
    assert msg.sender_id == "whatsapp:+15558675310"
    assert msg.payload == "/track_order" and msg.text == "Track my order"
    assert msg.metadata == {"channel": "whatsapp", "name": "Ada"}


def test_mms_images_are_media_and_other_media_are_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connector = make()
    form = inbound(
        "+15558675310",
        "m5",
        "see attached",
        NumMedia="3",
        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME0",
        MediaContentType0="image/jpeg",
        MediaUrl1="https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        MediaContentType1="audio/ogg",
        MediaUrl2="https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME2",
        MediaContentType2="image/png",
    )
    with caplog.at_level(logging.INFO, logger="parley"):
        (msg,) = connector.parse(KIT.signed(connector, form)).messages
    assert [(m.url.rsplit("/", 1)[1], m.media_type) for m in msg.media if m.url] == [
        ("ME0", "image/jpeg"),
        ("ME2", "image/png"),
    ]
    assert "connector.twilio.media_skipped" in caplog.text and "audio/ogg" in caplog.text


@pytest.mark.parametrize(
    "form",
    [
        {"MessageSid": "SM1", "MessageStatus": "delivered", "From": FROM_NUMBER},  # status
        inbound(
            "+1555", "m6", "", NumMedia="1", MediaUrl0="https://x", MediaContentType0="audio/ogg"
        ),
        inbound("+1555", "m7", "", NumMedia="many"),
        {"Body": "hi", "From": "+1555"},  # no MessageSid
        {"Body": "hi", "MessageSid": "SM1"},  # no From
    ],
    ids=["status_callback", "voice_note_only", "bad_num_media", "no_sid", "no_from"],
)
def test_other_shapes_are_invalid_input(form: dict[str, str]) -> None:
    connector = make()
    with pytest.raises(InvalidInput):
        connector.parse(KIT.signed(connector, form))


def test_a_body_that_is_not_a_form_is_invalid_input() -> None:
    connector = make()
    request = replace(KIT.signed(connector, {}), body=b"\xff\xfe")
    with pytest.raises(InvalidInput):
        connector.parse(request)


# -- send --


def test_text_goes_through_the_messages_api() -> None:
    connector, calls = recording()
    asyncio.run(connector.send("+15558675310", OutboundMessage.of({"text": "Hello!"}), {}))
    assert forms(calls) == [[("To", "+15558675310"), ("From", FROM_NUMBER), ("Body", "Hello!")]]


def test_buttons_quick_replies_and_cards_degrade_to_numbered_text() -> None:
    connector, calls = recording()
    reply = {
        "text": "Pick one",
        "cards": [{"title": "Blue box", "subtitle": "In transit", "image": "https://c/b.png"}],
        "buttons": [{"title": "Track my order", "payload": "/track_order"}],
        "quick_replies": [{"title": "Talk to a person", "payload": "/talk_to_human"}],
    }
    asyncio.run(connector.send("+15558675310", OutboundMessage.of(reply), {}))
    ((_, _, body),) = forms(calls)
    assert body == (
        "Body",
        "Pick one\nBlue box - In transit\n1. Track my order\n2. Talk to a person",
    )


def test_an_image_is_a_media_url_and_whatsapp_numbers_get_their_prefix() -> None:
    connector, calls = recording(from_number="whatsapp:+14155238886")
    reply = {"text": "Your label", "image": "https://cdn.example/label.png"}
    asyncio.run(connector.send("+15558675310", OutboundMessage.of(reply), {}))
    asyncio.run(
        connector.send(
            "whatsapp:+15558675310", OutboundMessage.of({"image": "https://cdn.example/b.png"}), {}
        )
    )
    assert forms(calls) == [
        [
            ("To", "whatsapp:+15558675310"),
            ("From", "whatsapp:+14155238886"),
            ("Body", "Your label"),
            ("MediaUrl", "https://cdn.example/label.png"),
        ],
        [
            ("To", "whatsapp:+15558675310"),
            ("From", "whatsapp:+14155238886"),
            ("MediaUrl", "https://cdn.example/b.png"),
        ],
    ]


def test_a_long_text_goes_in_several_messages_and_empty_ones_not_at_all() -> None:
    connector, calls = recording()
    text = "y" * 3500
    asyncio.run(
        connector.send(
            "+15558675310", OutboundMessage.of({"text": text, "image": "https://c/i.png"}), {}
        )
    )
    asyncio.run(connector.send("+15558675310", OutboundMessage.of({"custom": {"x": 1}}), {}))
    sent = [dict(f) for f in forms(calls)]
    assert [len(f["Body"]) for f in sent] == [1600, 1600, 300]
    assert [f.get("MediaUrl") for f in sent] == ["https://c/i.png", None, None]


def test_a_busy_api_is_retried_after_its_retry_after() -> None:
    calls: list[httpx.Request] = []
    inner = KIT.provider(IMAGE, calls)
    state = {"busy": 1}
    waits: list[float] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        if state["busy"]:
            state["busy"] -= 1
            too_many = {"code": 20429, "message": "Too Many Requests", "status": 429}
            return httpx.Response(429, headers={"Retry-After": "3"}, json=too_many)
        return inner.handle_request(request)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    connector = make(httpx.MockTransport(flaky))
    connector._sleep = sleep  # type: ignore[method-assign]
    asyncio.run(connector.send("+15558675310", OutboundMessage.of({"text": "after a wait"}), {}))
    assert waits == [3.0] and [dict(f)["Body"] for f in forms(calls)] == ["after a wait"]


def test_a_refused_message_fails_with_twilios_reason() -> None:
    refusal = {"code": 21211, "message": "The 'To' number +1555 is not a valid phone number."}
    connector = make(httpx.MockTransport(lambda r: httpx.Response(400, json=refusal)))
    with pytest.raises(DeliveryFailed, match="not a valid phone number") as failed:
        asyncio.run(connector.send("+1555", OutboundMessage.of({"text": "hi"}), {}))
    assert AUTH_TOKEN not in failed.value.message


# -- fetch --


def test_media_is_fetched_with_basic_auth_then_from_the_media_store_without_it() -> None:
    connector, calls = recording()
    (msg,) = connector.parse(
        KIT.image_webhook(connector, sender="+15558675310", message_id="m8")
    ).messages
    assert asyncio.run(connector.fetch(msg.media[0], max_bytes=100_000)) == IMAGE
    first, second = calls
    assert (first.method, str(first.url)) == ("GET", msg.media[0].url)
    assert first.headers["authorization"] == BASIC
    assert second.url.host == MEDIA_HOST and "authorization" not in second.headers


def test_media_over_the_limit_is_refused() -> None:
    connector, _ = recording()
    (msg,) = connector.parse(KIT.image_webhook(connector, sender="+1555", message_id="m9")).messages
    with pytest.raises(PayloadTooLarge):  # Content-Length says so
        asyncio.run(connector.fetch(msg.media[0], max_bytes=len(IMAGE) - 1))

    async def chunks() -> Any:
        for _ in range(100):
            yield b"z" * 1000

    endless = make(httpx.MockTransport(lambda r: httpx.Response(200, content=chunks())))
    with pytest.raises(PayloadTooLarge):  # no Content-Length: reading stops past the limit
        asyncio.run(endless.fetch(msg.media[0], max_bytes=5_000))


def test_credentials_only_go_to_twilio() -> None:
    connector, calls = recording()
    for url in (
        "https://evil.example/steal",
        "http://api.twilio.com/x",
        "https://twilio.com.evil.example/",
    ):
        with pytest.raises(InvalidInput):
            asyncio.run(connector.fetch(Media(url=url), max_bytes=1000))
    assert calls == []


def test_a_download_refused_by_twilio_fails_clearly() -> None:
    connector = make(httpx.MockTransport(lambda r: httpx.Response(404)))
    with pytest.raises(DeliveryFailed, match="404"):
        asyncio.run(
            connector.fetch(Media(url="https://api.twilio.com/2010-04-01/x"), max_bytes=1000)
        )
