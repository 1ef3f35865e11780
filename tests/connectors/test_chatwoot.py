"""The Chatwoot connector: Parley as a Chatwoot agent bot. Payloads follow Chatwoot's own
(``tests/connectors/chatwoot_kit.py`` says which documented example each follows); the API is a
fake of Chatwoot's (``httpx.MockTransport``), in unit tests and behind the real gateway."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from bot_gateway.app import create_app
from connectors.base import Connector, WebhookRequest
from connectors.chatwoot import ChatwootConfig, ChatwootConnector, signature
from core.errors import DeliveryFailed, InvalidInput, Unauthenticated
from core.messages import OutboundMessage
from core.outbound import OutboundGuard, OutboundTransport
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.connectors._harness import build
from tests.connectors.chatwoot_kit import (
    ACCOUNT_ID,
    API_TOKEN,
    BASE_URL,
    KIT,
    WEBHOOK_SECRET,
    WEBHOOK_TOKEN,
    contact,
    conversation,
    message_event,
)
from tests.support.bots import handoff_bot
from tests.support.images import encode, shape_image

IMAGE = encode(shape_image("square", 5))
FAILING = {"toggle": False}  # the gateway tests' Chatwoot refuses toggle_status
URL = "https://parley.example/webhooks/ch_chatwoot"


def connector(handler: Any = None, **config: Any) -> tuple[Connector[Any], list[httpx.Request]]:
    built, calls, _ = build(KIT, url=URL, image=IMAGE, handler=handler)
    if config:
        built.config = ChatwootConfig.model_validate({**KIT.config(), **config})
    return built, calls


def parse(c: Connector[Any], body: dict[str, Any]) -> list[Any]:
    return c.parse(KIT.signed(c, body)).messages


# --- inbound ----------------------------------------------------------------------------------


def test_the_contacts_text_is_a_message_of_its_conversation() -> None:
    c, _ = connector()
    (message,) = parse(c, message_event("message_created", "42", "9001", content="Where is it?"))
    assert message.text == "Where is it?" and message.sender_id == "42"
    assert message.message_id == f"{ACCOUNT_ID}:9001"
    assert message.metadata == {
        "account_id": ACCOUNT_ID,
        "conversation_id": 42,
        "inbox_id": 7,
        "contact_id": contact("42")["id"],
        "name": "Ada Lovelace",
    }


def test_an_image_attachment_is_fetched_through_the_storage_redirect() -> None:
    c, calls = connector()
    (message,) = c.parse(KIT.image_webhook(c, sender="42", message_id="9002")).messages
    (media,) = message.media
    assert media.url == BASE_URL + "/rails/active_storage/blobs/redirect/eyJfcmFpbHMi/photo.jpg"
    assert asyncio.run(c.fetch(media, max_bytes=1_000_000)) == IMAGE
    assert [r.url.path.split("/")[3] for r in calls] == ["blobs", "disk"]  # the 302 followed


def test_text_with_a_file_keeps_the_text_and_leaves_the_file() -> None:
    c, _ = connector()
    pdf = {"id": 3, "file_type": "file", "data_url": BASE_URL + "/a.pdf", "extension": "pdf"}
    (message,) = parse(
        c, message_event("message_created", "42", "9003", content="invoice", attachments=[pdf])
    )
    assert message.text == "invoice" and message.media == ()


def test_a_chosen_option_is_a_payload() -> None:
    c, _ = connector()
    (press,) = c.parse(KIT.button_webhook(c, "/track_order", sender="42", message_id="77")).messages
    assert press.payload == "/track_order" and press.text == "" and press.sender_id == "42"
    assert press.message_id == f"select:{ACCOUNT_ID}:77"


@pytest.mark.parametrize(
    "body",
    [
        message_event("message_created", "42", "1", content="hi", message_type="outgoing"),
        message_event("message_created", "42", "2", content="note", private=True),
        message_event("message_created", "42", "3", content="resolved", message_type="activity"),
        message_event("message_created", "42", "4", content=None),  # nothing to answer
        message_event("message_updated", "42", "5", content="edited"),  # no choice in it
        {**message_event("message_created", "42", "6", content="hi"), "account": {"id": 99}},
        {"event": "conversation_created", **conversation("42"), "account": {"id": ACCOUNT_ID}},
        {"event": "conversation_status_changed", **conversation("42")},
        {"event": "webwidget_triggered", "id": 5, "contact": contact("42"), "event_info": {}},
        {"content": "no event at all"},
    ],
    ids=[
        "outgoing",
        "private_note",
        "activity",
        "empty",
        "updated_text",
        "other_account",
        "conversation_created",
        "status_changed",
        "widget_triggered",
        "no_event",
    ],
)
def test_what_is_not_the_contacts_message_is_ignored(body: dict[str, Any]) -> None:
    c, _ = connector()
    with pytest.raises(InvalidInput):
        parse(c, body)


# --- verification -----------------------------------------------------------------------------


def test_the_token_is_required_and_compared() -> None:
    c, _ = connector(webhook_secret=None)  # an install that signs nothing (before 4.13)
    body = message_event("message_created", "42", "1", content="hi")
    c.verify(KIT.signed(c, body, secret=None))
    for token in (None, "x" * 24, WEBHOOK_TOKEN + "x"):
        with pytest.raises(Unauthenticated, match="token"):
            c.verify(KIT.signed(c, body, token=token, secret=None))


def test_a_signing_install_must_sign_freshly() -> None:
    c, _ = connector()
    body = json.dumps(message_event("message_created", "42", "1", content="hi")).encode()
    c.verify(KIT.signed(c, body))
    with pytest.raises(Unauthenticated, match="Signature"):
        c.verify(KIT.signed(c, body, secret=None))  # the token alone is not enough now
    with pytest.raises(Unauthenticated, match="Signature"):
        c.verify(KIT.signed(c, body, secret="another-secret-0000"))
    good = KIT.signed(c, body)
    changed = WebhookRequest(good.method, good.url, good.headers, good.query, body + b" ")
    with pytest.raises(Unauthenticated, match="Signature"):
        c.verify(changed)
    with pytest.raises(Unauthenticated, match="replay window"):
        c.verify(KIT.signed(c, body, at=time.time() - 3600))
    stamp = good.headers["x-chatwoot-timestamp"]  # HMAC of "{timestamp}.{body}"
    assert signature(WEBHOOK_SECRET, stamp, body) == good.headers["x-chatwoot-signature"]
    assert signature(WEBHOOK_SECRET, stamp, body).startswith("sha256=")


def test_config_is_checked() -> None:
    ChatwootConfig.model_validate(KIT.config())
    for bad in (
        {"base_url": "ftp://chatwoot.example"},
        {"base_url": "https://chatwoot.example/?x=1"},
        {"webhook_token": "short"},
        {"webhook_token": "has spaces in it, sixteen+"},
        {"account_id": 0},
    ):
        with pytest.raises(ValidationError) as caught:
            ChatwootConfig.model_validate({**KIT.config(), **bad})
        assert WEBHOOK_TOKEN not in str(caught.value) and API_TOKEN not in str(caught.value)
    assert ChatwootConfig.model_validate(
        {**KIT.config(), "base_url": "https://chat.example.org/"}
    ).base_url == ("https://chat.example.org")


# --- outbound ---------------------------------------------------------------------------------


def bodies(calls: list[httpx.Request]) -> list[dict[str, Any]]:
    return [json.loads(r.content) for r in calls if r.url.path.endswith("/messages")]


def test_text_options_image_and_cards_go_as_chatwoot_messages() -> None:
    c, calls = connector()
    message = OutboundMessage.of(
        {
            "text": "Here it is",
            "image": "/static/parcel.png",
            "quick_replies": [{"title": "Track", "payload": "/track_order"}],
            "cards": [
                {
                    "title": "Parcel",
                    "subtitle": "On its way",
                    "image": "https://cdn.example/p.png",
                    "buttons": [
                        {"title": "Open", "url": "https://shop.example/o/1"},
                        {"title": "Cancel", "payload": "/cancel"},
                    ],
                }
            ],
        }
    )
    asyncio.run(c.send("42", message, {}))
    assert all(r.headers["api_access_token"] == API_TOKEN for r in calls)
    assert {r.url.path for r in calls} == {
        f"/api/v1/accounts/{ACCOUNT_ID}/conversations/42/messages"
    }
    options, cards = bodies(calls)
    assert options == {
        "content": "Here it is\nhttps://parley.example/static/parcel.png",
        "message_type": "outgoing",
        "private": False,
        "content_type": "input_select",
        "content_attributes": {"items": [{"title": "Track", "value": "/track_order"}]},
    }
    assert cards["content_type"] == "cards"
    assert cards["content_attributes"]["items"] == [
        {
            "title": "Parcel",
            "description": "On its way",
            "media_url": "https://cdn.example/p.png",
            "actions": [
                {"type": "link", "text": "Open", "uri": "https://shop.example/o/1"},
                {"type": "postback", "text": "Cancel", "payload": "/cancel"},
            ],
        }
    ]


def test_plain_text_is_one_outgoing_message() -> None:
    c, calls = connector()
    asyncio.run(c.send("42", OutboundMessage.of({"text": "Hello!"}), {}))
    assert bodies(calls) == [{"content": "Hello!", "message_type": "outgoing", "private": False}]


def test_handoff_opens_the_conversation_to_the_agents() -> None:
    c, calls = connector()
    asyncio.run(c.handoff("42", {"account_id": ACCOUNT_ID}))
    (request,) = calls
    assert request.method == "POST"
    assert request.url.path == f"/api/v1/accounts/{ACCOUNT_ID}/conversations/42/toggle_status"
    assert request.headers["api_access_token"] == API_TOKEN
    assert json.loads(request.content) == {"status": "open"}


@pytest.mark.parametrize(("status", "tries"), [(401, 1), (404, 1), (422, 1), (500, 4), (503, 4)])
def test_api_errors_are_delivery_failures(status: int, tries: int) -> None:
    seen: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={"error": "Invalid Access Token"})

    c, _ = connector(refuse)
    with pytest.raises(DeliveryFailed, match=str(status)):
        asyncio.run(c.send("42", OutboundMessage.of({"text": "hi"}), {}))
    with pytest.raises(DeliveryFailed):
        asyncio.run(c.handoff("42", {}))
    assert len(seen) == 2 * tries  # 4xx fail at once, 5xx are retried


def test_a_wrong_token_is_refused_by_the_fake_api_too() -> None:
    c, _ = connector(api_access_token="not-the-token")
    with pytest.raises(DeliveryFailed, match="401"):
        asyncio.run(c.send("42", OutboundMessage.of({"text": "hi"}), {}))


def guarded(allow: tuple[str, ...]) -> tuple[ChatwootConnector, list[httpx.Request]]:
    calls: list[httpx.Request] = []

    def install(request: httpx.Request) -> httpx.Response:  # a Chatwoot on the private network
        calls.append(request)
        return httpx.Response(200, json={"id": 1})

    inner = httpx.MockTransport(install)
    client = httpx.AsyncClient(transport=OutboundTransport(OutboundGuard(allow), inner))
    config = ChatwootConfig.model_validate({**KIT.config(), "base_url": "http://127.0.0.1:3000"})
    return ChatwootConnector(config, client, webhook_url=URL), calls


def test_a_private_install_needs_the_allow_list() -> None:
    refused, calls = guarded(())
    with pytest.raises(DeliveryFailed, match="PARLEY_OUTBOUND__ALLOW_HOSTS"):
        asyncio.run(refused.send("42", OutboundMessage.of({"text": "hi"}), {}))
    with pytest.raises(DeliveryFailed, match="loopback"):
        asyncio.run(refused.handoff("42", {}))
    assert calls == []
    allowed, calls = guarded(("127.0.0.1",))
    asyncio.run(allowed.send("42", OutboundMessage.of({"text": "hi"}), {}))
    (sent,) = calls
    assert sent.url.host == "127.0.0.1" and sent.url.port == 3000


# --- through the gateway ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, dict[str, str], dict[str, Any], list[httpx.Request]]]:
    calls: list[httpx.Request] = []
    tmp = tmp_path_factory.mktemp("chatwoot-gateway")
    settings = make_settings(tmp, make_db_url("sqlite", tmp, request))
    inner = KIT.provider(IMAGE, calls)

    def chatwoot(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/toggle_status") and FAILING["toggle"]:
            calls.append(request)
            return httpx.Response(404, json={"error": "Resource could not be found"})
        return inner.handle_request(request)

    app = create_app(settings, http_transport=httpx.MockTransport(chatwoot))
    bot_body = handoff_bot(
        "chatwoot bot", quick_replies=[{"title": "Talk to a person", "payload": "/talk_to_human"}]
    )
    with TestClient(app) as client:
        key = client.post("/v1/tenants", json={"name": "cw"}, headers=OPERATOR).json()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        bot = client.post("/v1/bots", json=bot_body, headers=auth).json()
        deadline = time.monotonic() + 120
        while client.get(f"/v1/bots/{bot['id']}", headers=auth).json()["status"] == "training":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield client, auth, bot, calls


def channel_of(
    client: TestClient, auth: dict[str, str], bot: dict[str, Any], **config: Any
) -> tuple[dict[str, Any], ChatwootConnector]:
    r = client.post(
        f"/v1/bots/{bot['id']}/channels",
        json={"type": "chatwoot", "config": {**KIT.config(), **config}},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    channel = r.json()
    assert channel["registration"] == {"status": "not_needed", "message": None}
    c = ChatwootConnector(
        ChatwootConfig.model_validate({**KIT.config(), **config}),
        httpx.AsyncClient(),
        webhook_url=channel["webhook_url"],
    )
    return channel, c


def post(client: TestClient, request: WebhookRequest) -> Any:
    path = "/" + request.url.split("://", 1)[1].split("/", 1)[1]
    return client.post(path, content=request.body, headers=request.headers)


def wait(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def test_a_chatwoot_conversation_end_to_end(gateway: Any) -> None:
    client, auth, bot, calls = gateway
    channel, c = channel_of(client, auth, bot)
    assert "webhook_token" not in channel["config"] and "api_access_token" not in channel["config"]
    hello = KIT.text_webhook(c, "hello", sender="501", message_id="1")
    assert post(client, hello).status_code == 200
    (greeting,) = wait(lambda: [s for s in KIT.sent(calls) if s["to"] == "501"])
    assert greeting["text"] == "Hello from the bot!" and greeting["buttons"] == ["Talk to a person"]
    # Chatwoot's own outgoing message echoed back, and a status change: answered, ignored
    echo = message_event("message_created", "501", "2", content="x", message_type="outgoing")
    assert post(client, KIT.signed(c, echo)).status_code == 200
    status = {"event": "conversation_status_changed", **conversation("501")}
    assert post(client, KIT.signed(c, status)).status_code == 200
    # the contact picks "Talk to a person": the bot hands off and Chatwoot opens it to agents
    assert (
        post(
            client, KIT.button_webhook(c, "/talk_to_human", sender="501", message_id="3")
        ).status_code
        == 200
    )
    assert wait(lambda: KIT.toggled(calls)) == [("501", "open")]
    assert len([s for s in KIT.sent(calls) if s["to"] == "501"]) == 2  # greeting, handoff line
    page = client.get(
        f"/v1/conversations?bot_id={bot['id']}&status=waiting_for_agent", headers=auth
    ).json()
    assert [(i["channel"], i["sender_id"]) for i in page["items"]] == [(channel["id"], "501")]
    # a forged call is refused before anything runs
    forged = KIT.tamper(KIT.text_webhook(c, "hello", sender="501", message_id="4"))
    assert post(client, forged).status_code == 401


def test_an_api_handoff_opens_the_chatwoot_conversation(gateway: Any) -> None:
    client, auth, bot, calls = gateway
    _, c = channel_of(client, auth, bot)
    assert (
        post(client, KIT.text_webhook(c, "hello", sender="502", message_id="1")).status_code == 200
    )
    wait(lambda: [s for s in KIT.sent(calls) if s["to"] == "502"])
    page = client.get(f"/v1/conversations?bot_id={bot['id']}", headers=auth).json()
    (conv,) = [i for i in page["items"] if i["sender_id"] == "502"]
    before = len(KIT.toggled(calls))
    r = client.post(f"/v1/conversations/{conv['id']}/handoff", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "waiting_for_agent"
    assert KIT.toggled(calls)[before:] == [("502", "open")]


def test_a_private_install_is_refused_and_recorded(gateway: Any) -> None:
    client, auth, bot, calls = gateway
    _, c = channel_of(client, auth, bot, base_url="http://10.1.2.3")
    before = len(calls)
    assert (
        post(client, KIT.text_webhook(c, "hello", sender="503", message_id="1")).status_code == 200
    )

    def failures() -> list[dict[str, Any]]:
        page = client.get(f"/v1/conversations?bot_id={bot['id']}", headers=auth).json()
        out: list[dict[str, Any]] = []
        for conv in page["items"]:
            if conv["sender_id"] == "503":
                events = client.get(f"/v1/conversations/{conv['id']}", headers=auth).json()
                out += [e for e in events["events"] if e["event"] == "delivery_failed"]
        return out

    (failed,) = wait(failures)
    assert failed["channel"] == "chatwoot" and "a private address" in failed["error"]
    assert "PARLEY_OUTBOUND__ALLOW_HOSTS" in failed["error"]
    assert len(calls) == before  # nothing reached the network


def test_a_refused_handoff_is_recorded_on_the_conversation(gateway: Any) -> None:
    client, auth, bot, calls = gateway
    _, c = channel_of(client, auth, bot)
    FAILING["toggle"] = True
    try:
        hello = KIT.text_webhook(c, "hello", sender="504", message_id="1")
        assert post(client, hello).status_code == 200
        wait(lambda: [s for s in KIT.sent(calls) if s["to"] == "504"])
        click = KIT.button_webhook(c, "/talk_to_human", sender="504", message_id="2")
        assert post(client, click).status_code == 200

        def failures() -> list[dict[str, Any]]:
            page = client.get(f"/v1/conversations?bot_id={bot['id']}", headers=auth).json()
            out: list[dict[str, Any]] = []
            for conv in page["items"]:
                if conv["sender_id"] == "504":
                    events = client.get(f"/v1/conversations/{conv['id']}", headers=auth).json()
                    out += [e for e in events["events"] if e["event"] == "delivery_failed"]
            return out

        (failed,) = wait(failures)
        assert "chatwoot toggle_status" in failed["error"] and "404" in failed["error"]
    finally:
        FAILING["toggle"] = False
