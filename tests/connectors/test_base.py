"""``as_text``: how an outbound message reads on a channel that shows only text (SMS, a long
option list on Messenger), and the ``OutboundMessage`` the connectors are handed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connectors.base import Button, Card, OutboundMessage, as_text


def test_text_alone_is_itself() -> None:
    assert as_text(OutboundMessage(text="Your parcel is on its way.")) == (
        "Your parcel is on its way."
    )


def test_buttons_and_quick_replies_become_one_numbered_list() -> None:
    message = OutboundMessage(
        text="Pick one",
        buttons=(Button(title="Track my order", payload="/track_order"),),
        quick_replies=(Button(title="Talk to a person", payload="/talk_to_human"),),
    )
    assert as_text(message) == "Pick one\n1. Track my order\n2. Talk to a person"


def test_cards_become_their_titles_and_the_image_its_url() -> None:
    message = OutboundMessage(
        text="Your parcels",
        image="https://cdn.example/label.png",
        cards=(
            Card(
                title="Blue box", subtitle="2 of 3", buttons=(Button(title="Open", payload="/o"),)
            ),
            Card(title="Red box"),
        ),
    )
    assert as_text(message) == (
        "Your parcels\nBlue box - 2 of 3\nRed box\nhttps://cdn.example/label.png"
    )


def test_options_without_text_still_read() -> None:
    message = OutboundMessage(buttons=(Button(title="Yes", payload="/yes"),))
    assert as_text(message) == "1. Yes"


def test_a_custom_payload_alone_has_no_text() -> None:
    assert as_text(OutboundMessage(custom={"map": {"lat": 1}})) == ""


def test_the_wire_shape_keeps_only_the_parts_a_message_has() -> None:
    wire = {
        "text": "Pick one",
        "buttons": [{"title": "Track", "payload": "/track"}],
        "cards": [{"title": "Blue box", "image": "https://cdn.example/b.png"}],
    }
    message = OutboundMessage.of(wire)
    assert message.to_wire() == wire
    assert OutboundMessage.of(message) is message
    link = OutboundMessage(buttons=(Button(title="Our site", url="https://parcelly.example"),))
    assert link.to_wire() == {"buttons": [{"title": "Our site", "url": "https://parcelly.example"}]}


def test_a_message_with_an_unknown_part_is_refused() -> None:
    with pytest.raises(ValidationError, match="video"):
        OutboundMessage.of({"text": "hi", "video": "https://cdn.example/v.mp4"})
