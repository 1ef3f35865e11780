"""The public widget key acts only for the web chat session it opened (issue 12, finding 5):
with no ``Origin`` it used to post to the REST channel as any ``sender`` and fetch any upload
of the bot by id."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bot_gateway.app import create_app
from bot_gateway.services.accounts import create_agent
from core.db import get_engine, session_scope
from core.tables import Conversation
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.support.bots import handoff_bot
from tests.support.images import shipping_label_png

pytestmark = pytest.mark.slow

SHOP = {"origin": "http://shop.example"}
PASSWORD = "correct horse battery"


def greeter(name: str, origins: list[str] | None) -> dict[str, Any]:
    """The handoff bot; it answers the payload ``/greet`` with "Hello from the bot!"."""
    bot = handoff_bot(name)
    if origins is not None:
        bot["allowed_origins"] = origins
    return bot


@dataclass
class Chat:
    client: TestClient
    api: dict[str, str]
    bot_id: str
    key: str
    open_bot_id: str  # no allowed_origins
    open_key: str
    db_url: str

    def open(
        self, session: str | None = None, token: str | None = None, headers: Any = SHOP
    ) -> dict[str, Any]:
        """The welcome frame of a widget socket."""
        url = f"/v1/bots/{self.bot_id}/ws?key={self.key}"
        if session:
            url += f"&session={session}"
        if token:
            url += f"&session_token={token}"
        with self.client.websocket_connect(url, headers=headers) as ws:
            welcome = ws.receive_json()
        assert welcome["type"] == "welcome", welcome
        return welcome  # type: ignore[no-any-return]

    def rest(self, sender: str, token: str | None = None, **body: Any) -> Any:
        headers = {"X-Parley-Session-Token": token} if token else {}
        return self.client.post(
            f"/v1/bots/{self.bot_id}/webhooks/rest?key={self.key}",
            json={"sender": sender, "message": "/greet", **body},
            headers=headers,
        )

    def upload(self, token: str | None) -> Any:
        query = f"key={self.key}" + (f"&session_token={token}" if token else "")
        return self.client.post(
            f"/v1/bots/{self.bot_id}/uploads?{query}",
            files={"file": ("label.png", shipping_label_png())},
        )


@pytest.fixture(scope="module")
def chat(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chat]:
    tmp = tmp_path_factory.mktemp("webchat_security")
    url = make_db_url("sqlite", tmp, request)
    with TestClient(create_app(make_settings(tmp, url), warm_encoder=False)) as client:
        tenant = client.post("/v1/tenants", json={"name": "shop"}, headers=OPERATOR).json()
        api = {"Authorization": f"Bearer {tenant['api_key']}"}
        bots = []
        for name, origins in (("guarded", ["http://shop.example"]), ("anywhere", None)):
            r = client.post("/v1/bots", json=greeter(name, origins), headers=api)
            assert r.status_code == 201, r.text
            bots.append(r.json())
        deadline = time.monotonic() + 120
        for bot in bots:
            while client.get(f"/v1/bots/{bot['id']}", headers=api).json()["status"] != "ready":
                assert time.monotonic() < deadline, "the bot's NLU did not train"
                time.sleep(0.2)
        with session_scope(get_engine(url)) as session:
            create_agent(session, tenant_id=tenant["tenant_id"], username="ana", password=PASSWORD)
        yield Chat(
            client,
            api,
            bots[0]["id"],
            bots[0]["widget_key"],
            bots[1]["id"],
            bots[1]["widget_key"],
            url,
        )


def test_a_widget_session_resumes_only_with_its_token(chat: Chat) -> None:
    first = chat.open("visitor-0001")
    token = first["session_token"]
    assert first["session_id"] == "visitor-0001" and token
    with chat.client.websocket_connect(
        f"/v1/bots/{chat.bot_id}/ws?key={chat.key}&session=visitor-0001&session_token={token}",
        headers=SHOP,
    ) as ws:
        assert ws.receive_json()["conversation_id"] == first["conversation_id"]
        ws.send_json({"type": "message", "text": "/greet"})
        frames = [ws.receive_json() for _ in range(3)]
        assert frames[1]["message"]["text"] == "Hello from the bot!"
    resumed = chat.open("visitor-0001", token)
    assert resumed["conversation_id"] == first["conversation_id"]
    assert "session_token" not in resumed  # it has one already
    assert [h["message"].get("text") for h in resumed["history"]][-1] == "Hello from the bot!"
    # the session id alone (someone who learnt it) gets a conversation of its own
    for stranger in (chat.open("visitor-0001"), chat.open("visitor-0001", token + "x")):
        assert stranger["session_id"] != "visitor-0001"
        assert stranger["conversation_id"] != first["conversation_id"]
        assert stranger["history"] == [] and stranger["session_token"] != token
    # another session's token does not open this one either
    other = chat.open("visitor-0002")
    assert chat.open("visitor-0001", other["session_token"])["session_id"] != "visitor-0001"
    with session_scope(get_engine(chat.db_url)) as session:  # only its hash is kept
        row = session.get(Conversation, first["conversation_id"])
        assert row is not None
        assert row.widget_token_hash == hashlib.sha256(token.encode()).hexdigest()


def test_the_rest_channel_with_the_widget_key_acts_only_for_its_session(chat: Chat) -> None:
    ann, bob = chat.open("ann-session"), chat.open("bob-session")
    # no Origin, no token: refused (it used to drive any sender's conversation)
    missing = chat.rest("ann-session")
    assert missing.status_code == 401 and "session_token" in missing.json()["message"]
    assert chat.rest("ann-session", bob["session_token"]).status_code == 403  # bob's token
    forged = f"{ann['conversation_id']}.not-the-token"
    assert chat.rest("ann-session", forged).status_code == 403
    assert chat.rest("ann-session", ann["session_token"] + "x").status_code == 403
    ok = chat.rest("ann-session", ann["session_token"])
    assert ok.status_code == 200, ok.text
    assert ok.json()[0]["text"] == "Hello from the bot!"
    # it went to ann's web chat conversation, which her socket sees
    events = chat.client.get(f"/v1/conversations/{ann['conversation_id']}", headers=chat.api)
    assert [e["event"] for e in events.json()["events"]].count("user") == 1
    # a tenant API key keeps the Rasa-compatible REST channel: any sender
    r = chat.client.post(
        f"/v1/bots/{chat.bot_id}/webhooks/rest",
        json={"sender": "anyone", "message": "/greet"},
        headers=chat.api,
    )
    assert r.status_code == 200 and r.json()[0]["recipient_id"] == "anyone"


def test_uploads_under_the_widget_key_belong_to_their_session(chat: Chat) -> None:
    ann, bob = chat.open("ann-uploads"), chat.open("bob-uploads")
    assert chat.upload(None).status_code == 401
    assert chat.upload("cv_0000.forged").status_code == 403
    r = chat.upload(ann["session_token"])
    assert r.status_code == 201, r.text
    upload_id = r.json()["upload_id"]
    path = f"/v1/bots/{chat.bot_id}/uploads/{upload_id}?key={chat.key}"
    assert chat.client.get(path).status_code == 401  # no token: no image
    assert chat.client.get(f"{path}&session_token={bob['session_token']}").status_code == 404
    mine = chat.client.get(f"{path}&session_token={ann['session_token']}")
    assert mine.status_code == 200 and mine.content == shipping_label_png()
    api_read = chat.client.get(f"/v1/bots/{chat.bot_id}/uploads/{upload_id}", headers=chat.api)
    assert api_read.status_code == 200  # the tenant's keys read every upload
    # bob cannot attach ann's image (and so take it over) over REST or the socket
    stolen = chat.rest("bob-uploads", bob["session_token"], attachments=[upload_id])
    assert stolen.status_code == 404
    with chat.client.websocket_connect(
        f"/v1/bots/{chat.bot_id}/ws?key={chat.key}&session=bob-uploads"
        f"&session_token={bob['session_token']}",
        headers=SHOP,
    ) as ws:
        ws.receive_json()
        ws.send_json({"type": "message", "attachments": [{"upload_id": upload_id}]})
        frames = [ws.receive_json() for _ in range(3)]
        assert frames[2]["error"] == "not_found"
    assert chat.client.get(f"{path}&session_token={bob['session_token']}").status_code == 404
    # ann sends it; the tenant's agents see it in her conversation
    sent = chat.rest("ann-uploads", ann["session_token"], attachments=[upload_id])
    assert sent.status_code == 200, sent.text
    agent = chat.client.post(
        "/v1/agent/login", json={"tenant": "shop", "username": "ana", "password": PASSWORD}
    )
    assert agent.status_code == 200
    seen = chat.client.get(
        f"/v1/agent/conversations/{ann['conversation_id']}/uploads/{upload_id}",
        cookies=agent.cookies,
    )
    assert seen.status_code == 200 and seen.content == shipping_label_png()
    chat.client.cookies.clear()


def test_widget_sockets_without_an_origin_are_refused_where_origins_are_set(chat: Chat) -> None:
    url = f"/v1/bots/{chat.bot_id}/ws?key={chat.key}"
    with chat.client.websocket_connect(url) as ws:  # no Origin: not the shop's page
        frame = ws.receive_json()
        assert frame["error"] == "forbidden" and "allowed_origins" in frame["message"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4403
    # a bot that names no origins, and a tenant API key, need none
    with chat.client.websocket_connect(f"/v1/bots/{chat.open_bot_id}/ws?key={chat.open_key}") as ws:
        assert ws.receive_json()["type"] == "welcome"
    token = chat.api["Authorization"].removeprefix("Bearer ")
    with chat.client.websocket_connect(f"/v1/bots/{chat.bot_id}/ws?token={token}") as ws:
        welcome = ws.receive_json()
        assert welcome["type"] == "welcome" and "session_token" not in welcome
