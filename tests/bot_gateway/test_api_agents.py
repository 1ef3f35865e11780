"""The agents' console API through the real gateway: a Telegram customer (the provider faked
with the Telegram kit) is handed off, agents see it live, claim it (one at a time), reply
through Telegram, write notes, a supervisor reassigns, and the conversation goes back to the
bot or is closed. Other tenants' agents see nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bot_gateway.app import create_app
from bot_gateway.services import accounts as agent_service
from bot_gateway.services.accounts import create_agent
from connectors.registry import connectors
from core.db import get_engine, session_scope
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.connectors.telegram_kit import KIT
from tests.support.bots import handoff_bot
from tests.support.images import encode, shape_image

pytestmark = pytest.mark.slow

BOT = handoff_bot()
PASSWORD = "correct horse battery"
IMAGE = encode(shape_image("circle", 5))


@dataclass
class Desk:
    client: TestClient
    calls: list[httpx.Request]
    bot: dict[str, Any]
    channel: dict[str, Any]
    tenant: str
    csrf: dict[str, str] = field(default_factory=dict)  # session cookie -> its CSRF token

    def customer(self, text: str, message_id: str, sender: str = "cust") -> None:
        cls = connectors.get("telegram")
        connector = cls(
            cls.Config.model_validate(KIT.config()),
            httpx.AsyncClient(),
            webhook_url=self.channel["webhook_url"],
        )
        request = KIT.text_webhook(connector, text, sender=sender, message_id=message_id)
        r = self.client.post(
            f"/webhooks/{self.channel['id']}", content=request.body, headers=request.headers
        )
        assert r.status_code == 200, r.text

    def sent_texts(self) -> list[str]:
        return [m["text"] for m in KIT.sent(self.calls)]

    def wait_sent(self, text: str) -> None:
        deadline = time.monotonic() + 30
        while text not in self.sent_texts():
            assert time.monotonic() < deadline, self.sent_texts()
            time.sleep(0.05)

    def login(self, username: str, tenant: str | None = None) -> httpx.Cookies:
        r = self.client.post(
            "/v1/agent/login",
            json={"tenant": tenant or self.tenant, "username": username, "password": PASSWORD},
        )
        assert r.status_code == 200, r.text
        assert "httponly" in r.headers["set-cookie"].lower()
        self.csrf[r.cookies["parley_agent"]] = r.json()["csrf_token"]
        self.client.cookies.clear()
        return r.cookies

    def as_agent(self, cookies: httpx.Cookies, method: str, path: str, **kw: Any) -> Any:
        """A request with an agent's session (and, for a write, its CSRF token)."""
        self.client.cookies.clear()
        if method != "GET":
            kw["headers"] = {"X-CSRF-Token": self.csrf[cookies["parley_agent"]]}
        return self.client.request(method, path, cookies=cookies, **kw)


@pytest.fixture(scope="module")
def desk(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Desk]:
    calls: list[httpx.Request] = []
    tmp = tmp_path_factory.mktemp("agents")
    url = make_db_url("sqlite", tmp, request)
    app = create_app(make_settings(tmp, url), http_transport=KIT.provider(IMAGE, calls))
    with TestClient(app) as client:
        tenants = [
            client.post("/v1/tenants", json={"name": n}, headers=OPERATOR).json()
            for n in ("shop", "other")
        ]
        key = {"Authorization": f"Bearer {tenants[0]['api_key']}"}
        with session_scope(get_engine(url)) as session:
            for tenant, username, role in (
                (0, "ana", "agent"),
                (0, "bo", "agent"),
                (0, "sam", "supervisor"),
                (1, "zed", "supervisor"),
            ):
                create_agent(
                    session,
                    tenant_id=tenants[tenant]["tenant_id"],
                    username=username,
                    password=PASSWORD,
                    role=role,
                    name=username.title(),
                )
        bot = client.post("/v1/bots", json=BOT, headers=key).json()
        deadline = time.monotonic() + 120
        while client.get(f"/v1/bots/{bot['id']}", headers=key).json()["status"] == "training":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        body = {"type": "telegram", "config": KIT.config()}
        channel = client.post(f"/v1/bots/{bot['id']}/channels", json=body, headers=key).json()
        yield Desk(client, calls, bot, channel, "shop")


def test_logins_are_checked(desk: Desk) -> None:
    bad = desk.client.post(
        "/v1/agent/login", json={"tenant": "shop", "username": "ana", "password": "nope-nope"}
    )
    assert bad.status_code == 401 and bad.json()["message"] == "wrong tenant, username or password"
    assert desk.client.get("/v1/agent/inbox").status_code == 401
    ana = desk.login("ana")
    me = desk.as_agent(ana, "GET", "/v1/agent/me").json()["agent"]
    assert me["username"] == "ana" and me["role"] == "agent"
    assert desk.as_agent(ana, "GET", "/v1/agent/agents").status_code == 403
    # guessing a password is throttled: after 5 failures even the right one waits
    wrong = {"tenant": "shop", "username": "bo", "password": "guess-guess"}
    codes = [desk.client.post("/v1/agent/login", json=wrong).status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    right = {**wrong, "password": PASSWORD}
    locked = desk.client.post("/v1/agent/login", json=right)
    assert locked.status_code == 429 and "try again in" in locked.json()["message"]
    gateway = desk.client.app.state.gateway  # type: ignore[attr-defined]
    with session_scope(gateway.engine) as session:  # the window is 5 minutes: end it here
        agent_service.unlock(session, gateway.counter_store, tenant="shop", username="bo")
    assert desk.client.post("/v1/agent/login", json=right).status_code == 200


def test_a_handed_off_customer_is_claimed_answered_and_handed_back(desk: Desk) -> None:
    ana, bo, sam = (desk.login(u) for u in ("ana", "bo", "sam"))
    zed = desk.login("zed", tenant="other")
    desk.customer("hello", "m1")
    desk.wait_sent("Hello from the bot!")
    with desk.client.websocket_connect("/v1/agent/ws", cookies=ana) as live:
        desk.customer("talk to a human", "m2")
        assert wait_frame(live, "inbox")
    inbox = desk.as_agent(ana, "GET", "/v1/agent/inbox").json()
    (item,) = inbox["waiting"]
    assert item["channel"] == "telegram" and item["status"] == "waiting_for_agent"
    assert item["last_message"] == "talk to a human" and item["waiting_since"]
    assert "person" in item["handoff_reason"]
    cid = item["id"]
    at = f"/v1/agent/conversations/{cid}"
    # the other tenant's supervisor sees none of it
    assert desk.as_agent(zed, "GET", at).status_code == 404
    assert desk.as_agent(zed, "POST", f"{at}/claim").status_code == 404
    assert desk.as_agent(zed, "GET", "/v1/agent/inbox").json()["waiting"] == []

    detail = desk.as_agent(ana, "GET", at).json()
    froms = [t["from"] for t in detail["transcript"]]
    assert froms[:3] == ["system", "customer", "bot"] and "system" in froms[3:]
    assert detail["last_parse"]["intent"]["name"] == "talk_to_human"

    claimed = desk.as_agent(ana, "POST", f"{at}/claim").json()
    assert claimed["status"] == "with_agent" and claimed["assigned_agent_name"] == "Ana"
    taken = desk.as_agent(bo, "POST", f"{at}/claim")
    assert taken.status_code == 409
    assert desk.as_agent(bo, "POST", f"{at}/messages", json={"text": "x"}).status_code == 409

    r = desk.as_agent(ana, "POST", f"{at}/messages", json={"text": "Hi, I'm Ana"})
    assert r.status_code == 200 and r.json()["delivered"] is True
    desk.wait_sent("Hi, I'm Ana")
    note = desk.as_agent(ana, "POST", f"{at}/notes", json={"text": "VIP"})
    assert note.json()["turn"]["from"] == "note"
    assert "VIP" not in desk.sent_texts()

    # the customer writes while the agent has the conversation: the bot stays quiet
    with desk.client.websocket_connect("/v1/agent/ws", cookies=ana) as live:
        before = len(desk.sent_texts())
        desk.customer("my parcel is broken", "m3")
        turn = wait_frame(live, "turn")
        assert turn["conversation_id"] == cid and turn["turn"]["text"] == "my parcel is broken"
    time.sleep(0.3)
    assert len(desk.sent_texts()) == before

    # a supervisor sees the load and gives the conversation to Bo
    agents = desk.as_agent(sam, "GET", "/v1/agent/agents").json()
    assert {a["username"]: a["claimed"] for a in agents} == {"ana": 1, "bo": 0, "sam": 0}
    bo_id = next(a["id"] for a in agents if a["username"] == "bo")
    moved = desk.as_agent(sam, "POST", f"{at}/assign", json={"agent_id": bo_id})
    assert moved.json()["assigned_agent_name"] == "Bo"
    back = desk.as_agent(bo, "POST", f"{at}/handback", json={"reset_flow": True})
    assert back.json()["status"] == "bot"
    desk.customer("hello", "m4")
    deadline = time.monotonic() + 30
    while desk.sent_texts().count("Hello from the bot!") < 2:
        assert time.monotonic() < deadline, desk.sent_texts()
        time.sleep(0.05)


def test_a_closed_conversation_starts_afresh(desk: Desk) -> None:
    ana = desk.login("ana")
    desk.customer("talk to a human", "c1", sender="cust-2")
    deadline = time.monotonic() + 30
    while not (waiting := desk.as_agent(ana, "GET", "/v1/agent/inbox").json()["waiting"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cid = waiting[0]["id"]
    at = f"/v1/agent/conversations/{cid}"
    desk.as_agent(ana, "POST", f"{at}/claim")
    # an image from the agent reaches Telegram as a link the provider can fetch
    sent = desk.as_agent(
        ana, "POST", f"{at}/messages", files={"file": ("p.png", IMAGE)}, data={"text": "Like this?"}
    )
    assert sent.status_code == 200, sent.text
    photo = next(json.loads(c.content) for c in desk.calls if c.url.path.endswith("/sendPhoto"))
    assert photo["caption"] == "Like this?"
    link = httpx.URL(photo["photo"])
    assert desk.client.get(link.path).content == IMAGE  # no credentials: the token is the key
    assert desk.client.get(link.path[:-3] + "xyz").status_code == 404
    closed = desk.as_agent(ana, "POST", f"{at}/close").json()
    assert closed["status"] == "closed"
    assert desk.as_agent(ana, "POST", f"{at}/claim").status_code == 409
    desk.customer("hello", "c2", sender="cust-2")
    deadline = time.monotonic() + 30
    while desk.as_agent(ana, "GET", at).json()["conversation"]["status"] != "bot":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    lines = [t["text"] for t in desk.as_agent(ana, "GET", at).json()["transcript"]]
    assert "Closed by Ana" in lines and lines[-1] == "Hello from the bot!"


def wait_frame(live: Any, kind: str) -> dict[str, Any]:
    for _ in range(50):
        frame = live.receive_json()
        if frame["type"] == kind:
            return frame  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} frame")


def test_customer_photos_show_to_the_tenants_agents_only(desk: Desk) -> None:
    ana, zed = desk.login("ana"), desk.login("zed", tenant="other")
    cls = connectors.get("telegram")
    connector = cls(
        cls.Config.model_validate(KIT.config()),
        httpx.AsyncClient(),
        webhook_url=desk.channel["webhook_url"],
    )
    desk.customer("talk to a human", "p1", sender="cust-3")
    photo = KIT.image_webhook(connector, sender="cust-3", message_id="p2")
    r = desk.client.post(
        f"/webhooks/{desk.channel['id']}", content=photo.body, headers=photo.headers
    )
    assert r.status_code == 200

    def attachments() -> list[dict[str, Any]]:
        inbox = desk.as_agent(ana, "GET", "/v1/agent/inbox").json()["waiting"]
        found = []
        for item in inbox:
            detail = desk.as_agent(ana, "GET", f"/v1/agent/conversations/{item['id']}").json()
            found += [a for t in detail["transcript"] for a in t.get("attachments", [])]
        return found

    deadline = time.monotonic() + 30
    while not (found := attachments()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    got = desk.as_agent(ana, "GET", found[0]["url"])
    assert got.status_code == 200 and got.content == IMAGE
    assert desk.as_agent(zed, "GET", found[0]["url"]).status_code == 404
