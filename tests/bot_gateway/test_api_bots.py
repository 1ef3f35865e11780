"""Bots and conversations through the real gateway (SQLite and PostgreSQL): definitions,
versions, the REST channel with real NLU and a real HTTP orders service, uploads read by OCR,
the web chat websocket, handoff, forgetting a customer, a Rasa import and story tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from starlette.websockets import WebSocketDisconnect

from parley.demo_orders import create_orders_app
from tests.bot_gateway.conftest import Api, running_api
from tests.conftest import DB_KINDS
from tests.support.images import encode, folder_zip, shape_image, shipping_label_png
from tests.support.rasa_bots import moodbot

pytestmark = pytest.mark.slow

INTENTS = {
    "greet": ["hi", "hello", "hey there", "good morning", "hello bot", "hiya"],
    "track_order": [
        "where is my order",
        "track my parcel",
        "has my order shipped",
        "where is my package",
        "track order",
        "when will my parcel arrive",
    ],
    "thanks": ["thanks", "thank you", "cheers", "great thanks", "thanks a lot", "many thanks"],
    "talk_to_human": [
        "talk to a human",
        "get me a person",
        "agent please",
        "real person please",
        "human please",
        "let me speak to someone",
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def orders_url() -> Iterator[str]:
    """The demo's sample orders service, served for real on loopback."""
    port = free_port()
    config = uvicorn.Config(create_orders_app(), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "orders service did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def order_bot(orders_url: str) -> dict[str, Any]:
    text = (Path(__file__).parents[2] / "parley" / "demo_data" / "order_bot.yaml").read_text()
    text = text.replace("{orders_api}", orders_url).replace("{origin}", "http://shop.example")
    data = yaml.safe_load(text)
    data["nlu"] = {"intents": INTENTS, "threshold": 0.3}
    return data


@pytest.fixture(scope="module", params=DB_KINDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    # the orders service runs on loopback, which outbound calls may reach only when allowed
    outbound = {"allow_hosts": ["127.0.0.1"]}
    with running_api(request, tmp_path_factory.mktemp("bots"), outbound=outbound) as api:
        yield api


@pytest.fixture(scope="module")
def bot(api: Api, orders_url: str) -> dict[str, Any]:
    r = api.client.post(
        "/v1/bots",
        content=yaml.safe_dump(order_bot(orders_url)),
        headers={**api.a, "content-type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "training" and created["widget_key"].startswith("wk_")
    return wait_ready(api, created["id"])


def wait_ready(api: Api, bot_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = api.client.get(f"/v1/bots/{bot_id}", headers=api.a).json()
        if found["status"] != "training":
            assert found["status"] == "ready", found
            return found
        assert time.monotonic() < deadline, "the bot's NLU did not train in time"
        time.sleep(0.2)


def say(api: Api, bot_id: str, sender: str, text: str, **extra: Any) -> list[dict[str, Any]]:
    r = api.client.post(
        f"/v1/bots/{bot_id}/webhooks/rest",
        json={"sender": sender, "message": text, **extra},
        headers=api.a,
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("text", "") for m in messages]


def conversation_of(api: Api, bot_id: str, sender: str, channel: str = "rest") -> dict[str, Any]:
    page = api.client.get(f"/v1/conversations?bot_id={bot_id}&limit=500", headers=api.a).json()
    found = [c for c in page["items"] if c["sender_id"] == sender and c["channel"] == channel]
    assert len(found) == 1, page
    return found[0]


def test_a_bot_tracks_an_order_through_the_rest_channel(api: Api, bot: dict[str, Any]) -> None:
    bot_id = bot["id"]
    greeting = say(api, bot_id, "ann", "hello")
    assert greeting[0]["recipient_id"] == "ann"
    assert "Parcelly assistant" in greeting[0]["text"]
    assert [b["payload"] for b in greeting[0]["buttons"]][0] == "/track_order"
    assert "order number" in texts(say(api, bot_id, "ann", "where is my order"))[0]
    assert "doesn't look like an order number" in texts(say(api, bot_id, "ann", "no idea"))[0]
    reply = texts(say(api, bot_id, "ann", "it is px-100234"))
    assert "is shipped" in reply[0] and "DHL" in reply[0]
    conv = conversation_of(api, bot_id, "ann")
    assert conv["slots"]["order_status"] == "shipped" and conv["active_flows"] == []
    detail = api.client.get(f"/v1/conversations/{conv['id']}", headers=api.a).json()
    kinds = [e["event"] for e in detail["events"]]
    assert kinds[0] == "session_started" and "action" in kinds and "slot" in kinds
    user = next(e for e in detail["events"] if e["event"] == "user" and e["text"] == "hello")
    assert user["parse_data"]["intent"]["name"] == "greet"


def test_an_unknown_order_and_a_dead_orders_service_get_their_replies(
    api: Api, bot: dict[str, Any], orders_url: str
) -> None:
    bot_id = bot["id"]
    reply = texts(say(api, bot_id, "ben", "track order PX-999999"))
    assert reply == ["I couldn't find order PX-999999. Please check the number (like PX-123456)."]
    # a second bot whose orders service is down: the customer hears so, nothing hangs
    dead = order_bot(f"http://127.0.0.1:{free_port()}")
    dead["nlu"] = {"model": bot["nlu_model_id"]}
    dead["name"] = "dead orders"
    r = api.client.post("/v1/bots", json=dead, headers=api.a)
    assert r.status_code == 201 and r.json()["status"] == "ready", r.text
    dead_id = r.json()["id"]
    reply = texts(say(api, dead_id, "ben", "track order PX-100234"))
    assert reply == [
        "Our order system isn't answering right now. Please try again in a few minutes."
    ]
    # deleting a bot deletes its conversations
    conv = conversation_of(api, dead_id, "ben")
    assert api.client.delete(f"/v1/bots/{dead_id}", headers=api.b).status_code == 404
    assert api.client.delete(f"/v1/bots/{dead_id}", headers=api.a).status_code == 204
    assert api.client.get(f"/v1/bots/{dead_id}", headers=api.a).status_code == 404
    assert api.client.get(f"/v1/conversations/{conv['id']}", headers=api.a).status_code == 404


def test_a_label_photo_is_read_and_answers_with_the_order_status(
    api: Api, bot: dict[str, Any]
) -> None:
    bot_id = bot["id"]
    r = api.client.post(
        f"/v1/bots/{bot_id}/uploads",
        files={"file": ("label.png", shipping_label_png(), "image/png")},
        headers=api.a,
    )
    assert r.status_code == 201, r.text
    upload = r.json()
    assert upload["media_type"] == "image/png" and upload["width"] == 900
    reply = texts(say(api, bot_id, "cara", "", attachments=[upload["upload_id"]]))
    assert any("PX-100234" in t and "shipped" in t for t in reply), reply
    conv = conversation_of(api, bot_id, "cara")
    detail = api.client.get(f"/v1/conversations/{conv['id']}", headers=api.a).json()
    vision = [e for e in detail["events"] if e["event"] == "vision"]
    assert vision and "PX-100234" in vision[0]["result"]["text"]
    image = api.client.get(upload["url"], headers=api.a)
    assert image.status_code == 200 and image.content == shipping_label_png()
    # forgetting the customer removes the conversation and the photo
    assert api.client.delete(f"/v1/conversations/{conv['id']}", headers=api.a).status_code == 204
    assert api.client.get(f"/v1/conversations/{conv['id']}", headers=api.a).status_code == 404
    assert api.client.get(upload["url"], headers=api.a).status_code == 404


def test_uploads_refuse_what_is_not_an_image_or_too_big(api: Api, bot: dict[str, Any]) -> None:
    url = f"/v1/bots/{bot['id']}/uploads"
    r = api.client.post(url, files={"file": ("a.pdf", b"%PDF-1.4 not an image")}, headers=api.a)
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type", r.text
    big = b"\x89PNG" + b"0" * (21 * 1024 * 1024)
    r = api.client.post(url, files={"file": ("big.png", big)}, headers=api.a)
    assert r.status_code == 413, r.text
    r = api.client.post(url, data={"x": "1"}, headers=api.a)  # a URL-encoded form
    assert r.status_code == 415 and "multipart/form-data" in r.json()["message"], r.text
    r = api.client.post(url, files={"x": ("x.txt", b"1")}, headers=api.a)  # no `file` field
    assert r.status_code == 422 and "`file`" in r.json()["message"]
    unknown = api.client.post(
        "/v1/bots/bot_0000/webhooks/rest", json={"sender": "x", "message": "hi"}, headers=api.a
    )
    assert unknown.status_code == 404
    r = say_raw(api, bot["id"], {"sender": "x", "message": "y" * 5000})
    assert r.status_code == 422
    r = say_raw(api, bot["id"], {"sender": "x", "message": "  "})
    assert r.status_code == 422 and "empty" in r.json()["message"]
    # an unknown image is refused before a conversation is opened: nothing is stored
    r = say_raw(api, bot["id"], {"sender": "ghost", "message": "hi", "attachments": ["upl_0"]})
    assert r.status_code == 404, r.text
    page = api.client.get(f"/v1/conversations?bot_id={bot['id']}&limit=500", headers=api.a)
    assert "ghost" not in [c["sender_id"] for c in page.json()["items"]]
    r = say_raw(api, bot["id"], {"sender": "nul", "message": "a\u0000b"})
    assert r.status_code == 422 and "NUL" in r.json()["message"], r.text


def say_raw(api: Api, bot_id: str, body: dict[str, Any]) -> Any:
    return api.client.post(f"/v1/bots/{bot_id}/webhooks/rest", json=body, headers=api.a)


def test_handoff_silences_the_bot_until_released(api: Api, bot: dict[str, Any]) -> None:
    bot_id = bot["id"]
    assert "passing you to a member" in texts(say(api, bot_id, "dan", "talk to a human"))[0]
    conv = conversation_of(api, bot_id, "dan")
    assert conv["status"] == "waiting_for_agent"
    waiting = api.client.get(
        f"/v1/conversations?bot_id={bot_id}&status=waiting_for_agent", headers=api.a
    ).json()
    assert conv["id"] in [c["id"] for c in waiting["items"]]
    assert say(api, bot_id, "dan", "hello?") == []  # the bot stays quiet
    released = api.client.post(f"/v1/conversations/{conv['id']}/release", headers=api.a).json()
    assert released["status"] == "bot" and released["messages"]
    assert "Parcelly assistant" in texts(say(api, bot_id, "dan", "hello"))[0]
    handed = api.client.post(f"/v1/conversations/{conv['id']}/handoff", headers=api.a).json()
    assert handed["status"] == "waiting_for_agent"


def test_messages_of_one_conversation_are_processed_in_order(api: Api, bot: dict[str, Any]) -> None:
    bot_id = bot["id"]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda t: say(api, bot_id, "eve", t), ["hello", "thanks"] * 4))
    conv = conversation_of(api, bot_id, "eve")
    events = api.client.get(f"/v1/conversations/{conv['id']}", headers=api.a).json()["events"]
    turns = [e["event"] for e in events if e["event"] in ("user", "bot")]
    assert turns == ["user", "bot"] * 8  # each message answered before the next is read


def test_definitions_are_checked_versioned_and_private(api: Api, bot: dict[str, Any]) -> None:
    bad = {
        "name": "broken",
        "nlu": {"model": "production"},
        "slots": {"order_id": {"type": "text"}},
        "flows": {"track_order": {"steps": [{"ask": "order_id"}, {"ask": "order_number"}]}},
    }
    r = api.client.post("/v1/bots", json=bad, headers=api.a)
    assert r.status_code == 422 and r.json()["error"] == "invalid_bot"
    assert 'flows.track_order.steps[1].ask: unknown slot "order_number"' in r.json()["errors"]
    r = api.client.post(
        "/v1/bots", content="name: [oops", headers={**api.a, "content-type": "application/yaml"}
    )
    assert r.status_code == 422 and "invalid YAML" in r.json()["message"]
    bot_id = bot["id"]
    current = api.client.get(f"/v1/bots/{bot_id}", headers=api.a).json()
    changed = {**current["definition"], "description": "changed"}
    r = api.client.put(f"/v1/bots/{bot_id}", json=changed, headers=api.a)
    assert r.status_code == 200 and r.json()["version"] == current["version"] + 1
    versions = api.client.get(f"/v1/bots/{bot_id}/versions", headers=api.a).json()
    assert [v["version"] for v in versions][-2:] == [current["version"], current["version"] + 1]
    # another tenant sees nothing of it
    for path in (f"/v1/bots/{bot_id}", f"/v1/bots/{bot_id}/versions"):
        assert api.client.get(path, headers=api.b).status_code == 404
    r = api.client.post(
        f"/v1/bots/{bot_id}/webhooks/rest", json={"sender": "x", "message": "hi"}, headers=api.b
    )
    assert r.status_code == 404
    conv = conversation_of(api, bot_id, "ann")
    assert api.client.get(f"/v1/conversations/{conv['id']}", headers=api.b).status_code == 404
    assert api.client.delete(f"/v1/conversations/{conv['id']}", headers=api.b).status_code == 404
    # a disabled bot answers no one
    assert api.client.patch(f"/v1/bots/{bot_id}", json={"enabled": False}, headers=api.a).is_success
    assert say_raw(api, bot_id, {"sender": "x", "message": "hi"}).status_code == 409
    assert api.client.patch(f"/v1/bots/{bot_id}", json={"enabled": True}, headers=api.a).is_success


def test_web_chat_socket_protocol(api: Api, bot: dict[str, Any]) -> None:
    bot_id, key = bot["id"], bot["widget_key"]
    url = f"/v1/bots/{bot_id}/ws?key={key}&session=session-0001"
    shop = {"origin": "http://shop.example"}
    with api.client.websocket_connect(url, headers=shop) as ws:
        welcome = ws.receive_json()
        assert welcome["type"] == "welcome" and welcome["session_id"] == "session-0001"
        assert welcome["history"] == [] and welcome["status"] == "bot"
        session_token = welcome["session_token"]
        ws.send_text("{not json")
        assert ws.receive_json()["error"] == "invalid_frame"
        ws.send_text(json.dumps({"type": "message", "text": "x" * 20_000}))
        assert ws.receive_json()["error"] == "frame_too_large"
        ws.send_json({"type": "message", "attachments": [{"upload_id": 3}]})
        assert ws.receive_json()["error"] == "invalid_frame"
        ws.send_json({"type": "message", "attachments": [{"upload_id": "up_nope"}]})
        assert [f["type"] for f in (ws.receive_json(), ws.receive_json())] == ["typing", "typing"]
        assert ws.receive_json()["error"] == "not_found"
        ws.send_json({"type": "dance"})
        assert "unknown frame type" in ws.receive_json()["message"]
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        ws.send_json({"type": "message", "text": "hello", "client_id": "c1"})
        frames = [ws.receive_json() for _ in range(4)]
        assert [f["type"] for f in frames] == ["typing", "ack", "message", "typing"]
        assert frames[2]["message"]["quick_replies"][0]["payload"] == "/track_order"
        ws.send_json({"type": "message", "text": "Track my order", "payload": "/track_order"})
        frames = [ws.receive_json() for _ in range(3)]
        assert "order number" in frames[1]["message"]["text"]
        # a message resent after a reconnect (same client_id) is acknowledged, not run again
        ws.send_json({"type": "message", "text": "hello", "client_id": "c1"})
        frames = [ws.receive_json() for _ in range(3)]
        assert [f["type"] for f in frames] == ["typing", "ack", "typing"]
        # an open socket notices when its bot is disabled
        patch = api.client.patch(f"/v1/bots/{bot_id}", json={"enabled": False}, headers=api.a)
        assert patch.status_code == 200
        try:
            time.sleep(2.2)  # BOT_REFRESH_S
            ws.send_json({"type": "message", "text": "hello"})
            frames = [ws.receive_json() for _ in range(3)]
            assert frames[2]["error"] == "conflict" and "disabled" in frames[2]["message"]
        finally:
            api.client.patch(f"/v1/bots/{bot_id}", json={"enabled": True}, headers=api.a)
    # reconnecting with the session's token resumes the session with its history
    with api.client.websocket_connect(f"{url}&session_token={session_token}", headers=shop) as ws:
        welcome = ws.receive_json()
        history = [(h["from"], h["message"].get("text", "")) for h in welcome["history"]]
        assert history[0] == ("user", "hello") and history[-1][0] == "bot"
        assert "order number" in history[-1][1]
    refused = [
        (f"/v1/bots/{bot_id}/ws?key={key}", {"origin": "http://evil.example"}, 4403),
        (f"/v1/bots/{bot_id}/ws?key=wk_wrong", shop, 4401),
        (f"/v1/bots/bot_0000/ws?key={key}", shop, 4401),
    ]
    for path, headers, code in refused:
        with api.client.websocket_connect(path, headers=headers) as ws:
            assert ws.receive_json()["type"] == "error"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == code
    r = api.client.post(
        f"/v1/bots/{bot_id}/uploads?key={key}&session_token={session_token}",
        files={"file": ("l.png", shipping_label_png())},
        headers={"origin": "http://shop.example"},
    )
    assert r.status_code == 201
    assert r.headers["access-control-allow-origin"] == "http://shop.example"


def test_a_rasa_project_imports_trains_and_follows_its_stories(api: Api) -> None:
    project = moodbot()
    files = {k: (f"{k}.yml", v) for k, v in project.items() if k != "name" and v is not None}
    r = api.client.post(
        "/v1/bots/import/rasa", data={"name": "moodbot"}, files=files, headers=api.a
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "training" and created["unsupported"] is not None
    bot_id = wait_ready(api, created["id"])["id"]
    assert texts(say(api, bot_id, "mo", "hello"))[0].startswith("Hey! How are you?")
    sad = texts(say(api, bot_id, "mo", "I am sad"))
    assert len(sad) == 2 and "Did that help you?" in sad[1]
    assert texts(say(api, bot_id, "mo", "yes")) == ["Great, carry on!"]
    say(api, bot_id, "max", "hello")
    say(api, bot_id, "max", "I am sad")
    assert texts(say(api, bot_id, "max", "/deny")) == ["Bye"]


def test_story_tests_run_against_the_bot(api: Api, bot: dict[str, Any]) -> None:
    stories = """
stories:
  - name: track by number
    steps:
      - user: where is my order
        intent: track_order
      - bot: utter_ask_order_id
      - user: PX-100235
      - bot: {contains: processing}
      - slots: {order_status: processing}
  - name: a wrong expectation fails
    steps:
      - user: hello
      - bot: Goodbye!
"""
    r = api.client.post(
        f"/v1/bots/{bot['id']}/test",
        files={"stories": ("stories.yml", stories)},
        headers=api.a,
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["passed"], report["failed"]) == (1, 1)
    failing = next(c for c in report["cases"] if not c["passed"])
    assert "Goodbye!" in failing["failures"][0]
    listed = api.client.get(f"/v1/conversations?bot_id={bot['id']}&limit=500", headers=api.a)
    assert all(c["channel"] != "test" for c in listed.json()["items"])  # forgotten afterwards


def test_a_session_expires_after_its_silence(api: Api, bot: dict[str, Any]) -> None:
    brief = {**bot["definition"], "name": "brief", "session": {"expiry_minutes": 0.01}}
    r = api.client.post("/v1/bots", json=brief, headers=api.a)
    assert r.status_code == 201 and r.json()["status"] == "ready", r.text
    bot_id = r.json()["id"]
    say(api, bot_id, "fay", "where is my order")
    assert conversation_of(api, bot_id, "fay")["active_flows"] == ["track_order"]
    time.sleep(1.0)  # 0.6 s of silence ends the session
    assert "Parcelly assistant" in texts(say(api, bot_id, "fay", "hello"))[0]
    conv = conversation_of(api, bot_id, "fay")
    assert conv["active_flows"] == []
    events = api.client.get(f"/v1/conversations/{conv['id']}", headers=api.a).json()["events"]
    assert [e["event"] for e in events].count("session_started") == 2


def test_a_photo_classifier_fills_a_slot_and_starts_its_flow(
    api: Api, bot: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params.get("api") != "sqlite":
        pytest.skip("trains an image model: once, on SQLite, is enough")
    r = api.upload(folder_zip(8), name="parcels", type="image", filename="shapes.zip")
    assert r.status_code in (201, 202), r.text
    model = api.train(r.json()["id"], params={"augment_views": 2})
    assert model["status"] == "succeeded", model["failure_message"]
    definition = {
        "name": "damage desk",
        "nlu": {"model": bot["nlu_model_id"]},
        "slots": {"damaged": {"type": "bool"}},
        "responses": {
            "utter_damaged": [{"text": "That parcel looks damaged; I'm opening a claim."}],
            "utter_fine": [{"text": "The parcel looks fine to me."}],
        },
        "flows": {
            "inspect": {
                "intents": ["inspect_photo"],
                "steps": [
                    {
                        "if": [
                            {
                                "slot": "damaged",
                                "equals": True,
                                "then": [{"reply": "utter_damaged"}],
                            }
                        ],
                        "else": [{"reply": "utter_fine"}],
                    }
                ],
            }
        },
        # triangles stand in for damaged parcels
        "vision": [
            {
                "name": "damage",
                "model": model["id"],
                "slots": [{"slot": "damaged", "label": "triangle", "min_probability": 0.5}],
                "intent": "inspect_photo",
            }
        ],
    }
    r = api.client.post("/v1/bots", json=definition, headers=api.a)
    assert r.status_code == 201, r.text
    bot_id = r.json()["id"]

    def send(image: bytes) -> list[str]:
        up = api.client.post(
            f"/v1/bots/{bot_id}/uploads", files={"file": ("p.jpg", image)}, headers=api.a
        )
        assert up.status_code == 201, up.text
        return texts(say(api, bot_id, "gus", "", attachments=[up.json()["upload_id"]]))

    assert send(encode(shape_image("triangle", 901))) == [
        "That parcel looks damaged; I'm opening a claim."
    ]
    assert conversation_of(api, bot_id, "gus")["slots"]["damaged"] is True
    send(encode(shape_image("circle", 902)))  # not damaged: no flow starts
    assert conversation_of(api, bot_id, "gus")["slots"]["damaged"] is False
