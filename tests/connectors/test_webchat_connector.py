"""The web chat connector without a server: frames the widget may send (and the error each
wrong one gets), which pages may use the widget key, session tokens, and where a bot's message
goes (this socket first, then the conversation's other listeners)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from connectors.base import WebhookRequest
from connectors.registry import builtin_connectors, connectors
from connectors.webchat import WebchatConfig, WebchatConnector, static_file
from connectors.webchat.access import (
    check_origin,
    new_session_token,
    origin_allowed,
    session_id,
    token_conversation,
    token_hash,
)
from connectors.webchat.frames import (
    MAX_FRAME_CHARS,
    FrameError,
    frame_text,
    history_item,
    inbound_of,
    read_frame,
)
from core.errors import Forbidden
from core.messages import Button, OutboundMessage


def make(written: list[dict[str, Any]] | None = None, **config: Any) -> WebchatConnector:
    async def write(frame: dict[str, Any]) -> None:
        assert written is not None
        written.append(frame)

    return WebchatConnector(
        WebchatConfig(**config),
        bot_id="bot_1",
        session_id="sess-12345678",
        conversation_id="cv_1",
        socket=write,
    )


def refused(text: str) -> FrameError:
    with pytest.raises(FrameError) as caught:
        make().parse_frame(text)
    return caught.value


def test_a_message_frame_is_the_customers_turn() -> None:
    frame = {
        "type": "message",
        "text": "where is my parcel",
        "attachments": [{"upload_id": "up_1"}, {"upload_id": "up_2"}],
        "client_id": "c" * 100,
    }
    result = make().parse_frame(json.dumps(frame))
    [message] = result.messages
    assert message.sender_id == "sess-12345678"
    assert message.text == "where is my parcel"
    assert message.uploads == ("up_1", "up_2") and message.media == ()
    assert message.message_id == "c" * 64  # cut to 64 characters
    button = inbound_of({"type": "message", "payload": "/track"}, "s1")
    assert (button.text, button.payload, button.message_id) == ("", "/track", None)


def test_a_ping_is_answered_with_pong_at_once() -> None:
    result = make().parse_frame('{"type": "ping"}')
    assert result.messages == []
    assert json.loads(result.reply.body) == {"type": "pong"}


@pytest.mark.parametrize(
    ("text", "code", "says"),
    [
        ("x" * (MAX_FRAME_CHARS + 1), "frame_too_large", "at most 16384 characters"),
        ("[" * 50 + "]" * 50, "invalid_frame", "nested at most 16 levels"),
        ("{not json", "invalid_frame", "frames are JSON objects"),
        ('["message"]', "invalid_frame", 'with a "type"'),
        ('{"type": "shout"}', "invalid_frame", 'unknown frame type "shout"'),
        ('{"type": "message", "text": 5}', "invalid_frame", '"text" and "payload" are strings'),
        (
            json.dumps({"type": "message", "attachments": [{"upload_id": "u"}] * 5}),
            "invalid_frame",
            "at most 4",
        ),
        ('{"type": "message", "attachments": ["up_1"]}', "invalid_frame", '{"upload_id": "up_'),
    ],
)
def test_frames_the_server_does_not_take_say_why(text: str, code: str, says: str) -> None:
    error = refused(text)
    assert error.code == code
    assert says in error.message


def test_binary_frames_must_be_utf8_json() -> None:
    assert frame_text({"bytes": b'{"type": "ping"}'}) == '{"type": "ping"}'
    assert frame_text({"text": "hi"}) == "hi"
    with pytest.raises(FrameError, match="UTF-8"):
        frame_text({"bytes": b"\xff\xfe\x00"})
    request = WebhookRequest("WS", "/ws", {}, {}, b"\xc3\x28")
    with pytest.raises(FrameError, match="UTF-8"):
        make().parse(request)
    assert read_frame('{"type": "ping"}') == {"type": "ping"}


def test_origins_the_widget_key_may_be_used_from() -> None:
    shop = ["https://shop.example/"]
    assert origin_allowed(shop, "https://shop.example")
    assert not origin_allowed(shop, "https://evil.example")
    assert origin_allowed(["*"], "https://anyone.example")
    assert origin_allowed(shop, None)  # not a browser: an HTTP call may
    assert not origin_allowed(shop, None, required=True)  # a socket must say where it is
    assert origin_allowed([], None, required=True)  # no origins named
    assert origin_allowed(["*"], None, required=True)
    assert not origin_allowed([], "https://shop.example")
    with pytest.raises(Forbidden, match="add it to the bot's `allowed_origins`"):
        check_origin(shop, "https://evil.example", bot_id="bot_1")
    connector = make(allowed_origins=shop)
    connector.verify(WebhookRequest("WS", "/ws", {"origin": "https://shop.example"}, {}, b""))
    with pytest.raises(Forbidden, match=r"origin \(none\)"):
        connector.verify(WebhookRequest("WS", "/ws", {}, {}, b""))


def test_session_ids_and_tokens() -> None:
    assert session_id("abcdEFGH_-12") == "abcdEFGH_-12"
    for bad in (None, "", "short", "has space in it", "x" * 65):
        fresh = session_id(bad)
        assert fresh != bad and len(fresh) >= 16
    token = new_session_token("cv_42")
    assert token_conversation(token) == "cv_42"
    assert token_hash(token) != token_hash(new_session_token("cv_42"))  # random part
    assert token_conversation(None) is None
    assert token_conversation("cv_1." + "x" * 300) is None


def test_send_writes_this_socket() -> None:
    written: list[dict[str, Any]] = []
    connector = make(written)
    message = OutboundMessage(text="Pick one", buttons=(Button(title="Track", payload="/t"),))
    asyncio.run(connector.send("sess-12345678", message, {}))
    expected = {
        "type": "message",
        "from": "bot",
        "message": {"text": "Pick one", "buttons": [{"title": "Track", "payload": "/t"}]},
    }
    assert written == [expected]


def test_history_shows_what_was_said() -> None:
    user = {
        "event": "user",
        "text": "this one",
        "timestamp": 1.0,
        "attachments": [{"upload_id": "up_1", "url": "/v1/bots/b/uploads/up_1", "x": 1}],
    }
    assert history_item(user) == {
        "from": "user",
        "message": {
            "text": "this one",
            "attachments": [{"upload_id": "up_1", "url": "/v1/bots/b/uploads/up_1"}],
        },
        "timestamp": 1.0,
    }
    bot = {"event": "bot", "text": "ok", "data": {"image": "/i.png", "buttons": []}, "timestamp": 2}
    assert history_item(bot) == {
        "from": "bot",
        "message": {"text": "ok", "image": "/i.png"},
        "timestamp": 2,
    }


def test_web_chat_is_built_in_not_a_channel_type() -> None:
    assert builtin_connectors.get("webchat") is WebchatConnector
    assert "webchat" not in connectors
    assert WebchatConnector.capabilities.inbound_images


def test_the_widget_files_ship_inside_the_package() -> None:
    assert b"Parley" in static_file("widget.js").read_bytes()
    assert "{{widget_key}}" in static_file("demo.html").read_text()
