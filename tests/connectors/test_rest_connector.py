"""The REST channel connector without a server: the body it takes, the messages it refuses,
and the replies it collects for the call's answer in Rasa's shape."""

from __future__ import annotations

import asyncio
import json

import pytest

from connectors.base import WebhookRequest
from connectors.registry import builtin_connectors, connectors
from connectors.rest import RestConnector, RestMessage, rest_message
from core.errors import InvalidInput
from core.messages import Button, Card, OutboundMessage


def call(body: object) -> WebhookRequest:
    return WebhookRequest("POST", "/v1/bots/b/webhooks/rest", {}, {}, json.dumps(body).encode())


def test_a_call_is_one_message_of_its_sender() -> None:
    result = RestConnector().parse(
        call({"sender": "u1", "message": "hi", "attachments": ["up_1"], "extra": 1})
    )
    [message] = result.messages
    assert (message.sender_id, message.text, message.uploads) == ("u1", "hi", ("up_1",))
    assert message.media == () and message.payload is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"sender": "u1", "message": "   "}, "the message is empty"),
        ({"sender": "u1"}, "the message is empty"),
        ({"message": "hi"}, "sender"),
        ({"sender": "u1", "message": "x" * 4001}, "message"),
        ({"sender": "u1", "message": "hi", "attachments": ["u"] * 5}, "attachments"),
    ],
)
def test_calls_it_refuses_say_why(body: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        RestConnector().parse(call(body))
    assert says in caught.value.message
    with pytest.raises(InvalidInput, match="invalid REST message"):
        RestConnector().parse(WebhookRequest("POST", "/", {}, {}, b"not json"))


def test_an_image_alone_is_a_message() -> None:
    message = RestConnector().inbound(RestMessage(sender="u1", attachments=["up_9"]))
    assert message.uploads == ("up_9",) and message.text == ""


def test_send_collects_the_replies_in_rasas_shape() -> None:
    connector = RestConnector()
    first = OutboundMessage(
        text="Pick one",
        buttons=(Button(title="Track", payload="/track"),),
        quick_replies=(Button(title="Agent", payload="/human"),),
    )
    second = OutboundMessage(cards=(Card(title="Parcel", subtitle="on its way"),))
    third = OutboundMessage(text="as the engine makes it", custom={"a": 1})

    async def answer() -> None:
        await connector.send("u1", first, {})
        await connector.send("u1", second, {})
        await connector.send("u1", third, {})

    asyncio.run(answer())
    assert connector.replies == [
        {
            "recipient_id": "u1",
            "text": "Pick one",
            "buttons": [
                {"title": "Track", "payload": "/track"},
                {"title": "Agent", "payload": "/human"},  # quick replies are buttons here
            ],
        },
        {"recipient_id": "u1", "cards": [{"title": "Parcel", "subtitle": "on its way"}]},
        {"recipient_id": "u1", "text": "as the engine makes it", "custom": {"a": 1}},
    ]
    assert rest_message("u2", OutboundMessage(quick_replies=(Button(title="A"),))) == {
        "recipient_id": "u2",
        "buttons": [{"title": "A"}],
    }


def test_rest_is_built_in_not_a_channel_type() -> None:
    assert builtin_connectors.get("rest") is RestConnector
    assert "rest" not in connectors
