"""The contract every channel connector keeps, run against each registered one through its
test kit (``tests/connectors/<type>_kit.py``): signatures checked, messages parsed, media
fetched, replies sent (degraded where the channel cannot show them), retries and failures."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.base import Connector
from connectors.registry import connectors
from core.errors import DeliveryFailed, InvalidInput, Unauthenticated
from core.messages import OutboundMessage
from tests.connectors.kits import KITS, Kit
from tests.support.images import encode, shape_image

IMAGE = encode(shape_image("circle", 7))
URL = "https://parley.example/webhooks/ch_contract"

for _name in connectors.names():
    importlib.import_module(f"tests.connectors.{_name}_kit")


def test_every_connector_has_a_kit() -> None:
    assert set(connectors.names()) == set(KITS), (
        "each connector needs tests/connectors/<type>_kit.py"
    )


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest) -> Kit:
    return KITS[request.param]


def make(kit: Kit, transport: httpx.AsyncBaseTransport) -> Connector[Any]:
    cls = connectors.get(kit.type)
    connector = cls(
        cls.Config.model_validate(kit.config()),
        httpx.AsyncClient(transport=transport),
        webhook_url=URL,
    )
    connector._sleep = _no_wait  # type: ignore[method-assign]
    return connector


async def _no_wait(_: float) -> None:
    return None


def provider(kit: Kit) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    calls: list[httpx.Request] = []
    return kit.provider(IMAGE, calls), calls


def test_secrets_are_secret(kit: Kit) -> None:
    config = connectors.get(kit.type).Config.model_validate(kit.config())
    for name in kit.secret_fields:
        assert isinstance(getattr(config, name), SecretStr), name
    with pytest.raises(ValueError):
        connectors.get(kit.type).Config.model_validate({**kit.config(), "surprise": 1})


def test_signatures_are_checked(kit: Kit) -> None:
    connector = make(kit, provider(kit)[0])
    signed = kit.text_webhook(connector, "hello", sender="u1", message_id="m1")
    connector.verify(signed)
    with pytest.raises(Unauthenticated):
        connector.verify(kit.tamper(signed))
    stale = kit.stale(connector, "hello")
    if stale is not None:
        with pytest.raises(Unauthenticated):
            connector.verify(stale)


def test_text_buttons_and_unknown_shapes_parse(kit: Kit) -> None:
    connector = make(kit, provider(kit)[0])
    (text,) = connector.parse(
        kit.text_webhook(connector, "where is my order?", sender="u1", message_id="m1")
    ).messages
    assert text.text == "where is my order?" and text.message_id
    again = connector.parse(
        kit.text_webhook(connector, "where is my order?", sender="u1", message_id="m1")
    )
    assert again.messages[0].message_id == text.message_id  # a redelivery is the same message
    (button,) = connector.parse(
        kit.button_webhook(connector, "/track_order", sender="u1", message_id="m2")
    ).messages
    assert button.payload == "/track_order" and button.sender_id == text.sender_id
    try:
        ignored = connector.parse(kit.unknown_webhook(connector)).messages
    except InvalidInput:
        ignored = []
    assert ignored == []


def test_images_are_fetched(kit: Kit) -> None:
    transport, _ = provider(kit)
    connector = make(kit, transport)
    (message,) = connector.parse(
        kit.image_webhook(connector, sender="u1", message_id="m3")
    ).messages
    assert message.media
    assert asyncio.run(connector.fetch(message.media[0], max_bytes=10_000_000)) == IMAGE


def test_replies_are_sent_and_degrade(kit: Kit) -> None:
    transport, calls = provider(kit)
    connector = make(kit, transport)
    (message,) = connector.parse(
        kit.text_webhook(connector, "hi", sender="u1", message_id="m1")
    ).messages
    asyncio.run(
        connector.send(message.sender_id, OutboundMessage.of({"text": "Hello!"}), message.metadata)
    )
    rich = {
        "text": "Pick one",
        "quick_replies": [
            {"title": "Track my order", "payload": "/track_order"},
            {"title": "Talk to a person", "payload": "/talk_to_human"},
        ],
    }
    asyncio.run(connector.send(message.sender_id, OutboundMessage.of(rich), message.metadata))
    sent = kit.sent(calls)
    assert sent[0]["text"] == "Hello!" and sent[0]["to"] == message.sender_id
    offered = sent[1]
    if offered["buttons"]:
        assert offered["buttons"] == ["Track my order", "Talk to a person"]
    else:
        assert "1. Track my order" in offered["text"] and "2. Talk to a person" in offered["text"]


def test_a_busy_provider_is_retried_and_a_refusal_fails(kit: Kit) -> None:
    inner, calls = provider(kit)
    busy = {"left": 1}

    def flaky(request: httpx.Request) -> httpx.Response:
        if busy["left"]:
            busy["left"] -= 1
            return httpx.Response(429, headers={"Retry-After": "1"}, json={})
        return inner.handle_request(request)

    connector = make(kit, httpx.MockTransport(flaky))
    (message,) = connector.parse(
        kit.text_webhook(connector, "hi", sender="u1", message_id="m1")
    ).messages
    asyncio.run(
        connector.send(
            message.sender_id, OutboundMessage.of({"text": "after a wait"}), message.metadata
        )
    )
    assert [m["text"] for m in kit.sent(calls)] == ["after a wait"]

    refusing = make(kit, httpx.MockTransport(lambda r: httpx.Response(400, json={"error": "no"})))
    with pytest.raises(DeliveryFailed):
        asyncio.run(
            refusing.send(
                message.sender_id, OutboundMessage.of({"text": "lost?"}), message.metadata
            )
        )
