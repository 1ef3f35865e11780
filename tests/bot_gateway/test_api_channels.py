"""Channels through the real gateway: connect a bot to each channel type, then replay what the
provider sends (signed as it signs) through ``POST /webhooks/{channel_id}``; replies leave
through the connector to a fake of the provider's API (``httpx.MockTransport``)."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bot_gateway.app import create_app
from connectors.base import Connector, WebhookRequest
from connectors.registry import connectors
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.connectors.kits import KITS, Kit
from tests.support.bots import handoff_bot
from tests.support.images import encode, shape_image

pytestmark = pytest.mark.slow

IMAGE = encode(shape_image("triangle", 3))
BOT = handoff_bot(
    "channel bot", quick_replies=[{"title": "Talk to a person", "payload": "/talk_to_human"}]
)

for _name in connectors.names():
    importlib.import_module(f"tests.connectors.{_name}_kit")


@dataclass
class Setup:
    client: TestClient
    kit: Kit
    calls: list[httpx.Request]  # every call to the provider's fake API
    key: dict[str, str]  # tenant A
    other: dict[str, str]  # tenant B
    failing: dict[str, bool] = field(default_factory=lambda: {"sends": False})

    def post(self, request: WebhookRequest, channel_id: str) -> httpx.Response:
        path = request.url.split("://", 1)[1].split("/", 1)[1]
        assert path.startswith(f"webhooks/{channel_id}")
        return self.client.post(
            "/" + path, content=request.body, headers={k: v for k, v in request.headers.items()}
        )

    def wait_sent(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 30
        while len(sent := self.kit.sent(self.calls)) < count:
            assert time.monotonic() < deadline, f"sent {sent}, wanted {count}"
            time.sleep(0.05)
        return sent


@pytest.fixture(scope="module", params=sorted(KITS))
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Setup, dict[str, Any], dict[str, Any]]]:
    kit = KITS[request.param]
    calls: list[httpx.Request] = []
    inner = kit.provider(IMAGE, calls)
    failing = {"sends": False}

    def transport(req: httpx.Request) -> httpx.Response:
        if failing["sends"]:
            calls.append(req)
            return httpx.Response(400, json={"ok": False, "error": "invalid_auth"})
        return inner.handle_request(req)

    tmp = tmp_path_factory.mktemp(f"channels-{kit.type}")
    settings = make_settings(tmp, make_db_url("sqlite", tmp, request))
    app = create_app(settings, http_transport=httpx.MockTransport(transport))
    with TestClient(app) as client:
        keys = [
            client.post("/v1/tenants", json={"name": n}, headers=OPERATOR).json()
            for n in ("a", "b")
        ]
        a, b = ({"Authorization": f"Bearer {k['api_key']}"} for k in keys)
        s = Setup(client, kit, calls, a, b, failing)
        bot = client.post("/v1/bots", json=BOT, headers=a).json()
        deadline = time.monotonic() + 120
        while client.get(f"/v1/bots/{bot['id']}", headers=a).json()["status"] == "training":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        r = client.post(
            f"/v1/bots/{bot['id']}/channels",
            json={"type": kit.type, "config": kit.config()},
            headers=a,
        )
        assert r.status_code == 201, r.text
        yield s, bot, r.json()


def connector_of(s: Setup, channel: dict[str, Any]) -> Connector[Any]:
    cls = connectors.get(s.kit.type)
    return cls(
        cls.Config.model_validate(s.kit.config()),
        httpx.AsyncClient(),
        webhook_url=channel["webhook_url"],
    )


def test_secrets_are_write_only_and_channels_private(setup: tuple[Setup, Any, Any]) -> None:
    s, bot, channel = setup
    assert channel["webhook_url"].endswith(f"/webhooks/{channel['id']}")
    registered = "registered" if s.kit.type == "telegram" else "not_needed"
    assert channel["registration"] == {"status": registered, "message": None}
    listed = s.client.get(f"/v1/bots/{bot['id']}/channels", headers=s.key).json()
    one = s.client.get(f"/v1/bots/{bot['id']}/channels/{channel['id']}", headers=s.key).json()
    for shown in (channel, listed[0], one):
        for secret in s.kit.secret_fields:
            assert secret not in shown["config"]
            assert str(s.kit.config()[secret]) not in str(shown)
    other = s.other
    assert s.client.get(f"/v1/bots/{bot['id']}/channels", headers=other).status_code == 404
    path = f"/v1/bots/{bot['id']}/channels/{channel['id']}"
    assert s.client.delete(path, headers=other).status_code == 404
    bad = s.client.post(
        f"/v1/bots/{bot['id']}/channels", json={"type": s.kit.type, "config": {}}, headers=s.key
    )
    assert bad.status_code == 422 and "config." in bad.json()["message"]
    unknown = s.client.post(
        f"/v1/bots/{bot['id']}/channels", json={"type": "pigeon", "config": {}}, headers=s.key
    )
    assert unknown.status_code == 422 and "pigeon" in unknown.json()["message"]
    for builtin in ("webchat", "rest"):  # every bot has them; they are not channel types
        refused = s.client.post(
            f"/v1/bots/{bot['id']}/channels", json={"type": builtin, "config": {}}, headers=s.key
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "unknown_plugin"
        assert f"known: {', '.join(connectors.names())}" in refused.json()["message"]
    assert not {c["type"] for c in listed} & {"webchat", "rest"}


def test_a_message_is_answered_through_its_channel_once(setup: tuple[Setup, Any, Any]) -> None:
    s, bot, channel = setup
    connector = connector_of(s, channel)
    before = len(s.kit.sent(s.calls))
    hello = s.kit.text_webhook(connector, "hello", sender="cust-1", message_id="msg-1")
    assert s.post(hello, channel["id"]).status_code == 200
    sent = s.wait_sent(before + 1)[before:]
    assert sent[0]["text"].startswith("Hello from the bot!")
    # the provider delivers it again: answered once
    assert s.post(hello, channel["id"]).status_code == 200
    time.sleep(0.5)
    assert len(s.kit.sent(s.calls)) == before + 1
    # a click on the offered option (or "1" where the channel has no buttons) hands off
    click = s.kit.button_webhook(connector, "/talk_to_human", sender="cust-1", message_id="msg-2")
    assert s.post(click, channel["id"]).status_code == 200
    s.wait_sent(before + 2)
    page = s.client.get(
        f"/v1/conversations?bot_id={bot['id']}&status=waiting_for_agent", headers=s.key
    ).json()
    assert [c["channel"] for c in page["items"]] == [channel["id"]]


def test_bad_signatures_unknown_shapes_and_failed_deliveries(
    setup: tuple[Setup, Any, Any],
) -> None:
    s, bot, channel = setup
    connector = connector_of(s, channel)
    forged = s.kit.tamper(s.kit.text_webhook(connector, "hi", sender="x", message_id="f1"))
    assert s.post(forged, channel["id"]).status_code == 401
    metrics = s.client.get("/v1/metrics", headers=OPERATOR).text
    assert f'parley_webhook_signature_failed{{channel="{s.kit.type}"}}' in metrics
    assert s.post(s.kit.unknown_webhook(connector), channel["id"]).status_code == 200
    assert s.client.post("/webhooks/ch_nope", content=b"{}").status_code == 404
    # the provider refuses the reply: recorded on the conversation, nothing lost silently
    s.failing["sends"] = True
    try:
        hello = s.kit.text_webhook(connector, "hello", sender="cust-2", message_id="msg-9")
        assert s.post(hello, channel["id"]).status_code == 200
        found = wait_for(lambda: failed_deliveries(s, bot))
        assert found[0]["channel"] == s.kit.type and "Hello from the bot!" in str(found[0])
    finally:
        s.failing["sends"] = False


def failed_deliveries(s: Setup, bot: dict[str, Any]) -> list[dict[str, Any]]:
    page = s.client.get(f"/v1/conversations?bot_id={bot['id']}", headers=s.key).json()
    out = []
    for conv in page["items"]:
        events = s.client.get(f"/v1/conversations/{conv['id']}", headers=s.key).json()["events"]
        out += [e for e in events if e["event"] == "delivery_failed"]
    return out


def wait_for(check: Callable[[], list[Any]], timeout: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def test_a_customer_photo_reaches_the_conversation(setup: tuple[Setup, Any, Any]) -> None:
    s, bot, channel = setup
    connector = connector_of(s, channel)
    photo = s.kit.image_webhook(connector, sender="cust-3", message_id="img-1")
    assert s.post(photo, channel["id"]).status_code == 200

    def attachments() -> list[Any]:
        page = s.client.get(f"/v1/conversations?bot_id={bot['id']}", headers=s.key).json()
        found = []
        for conv in page["items"]:
            events = s.client.get(f"/v1/conversations/{conv['id']}", headers=s.key).json()
            found += [a for e in events["events"] if e["event"] == "user" for a in e["attachments"]]
        return found

    (attachment,) = wait_for(attachments)
    image = s.client.get(attachment["url"], headers=s.key)
    assert image.status_code == 200 and image.content == IMAGE


def test_an_oversized_photo_gets_a_clear_answer(setup: tuple[Setup, Any, Any]) -> None:
    s, bot, channel = setup
    connector = connector_of(s, channel)
    limits = s.client.app.state.gateway.settings.limits  # type: ignore[attr-defined]
    before, limits.max_image_bytes = limits.max_image_bytes, 100
    try:
        count = len(s.kit.sent(s.calls))
        photo = s.kit.image_webhook(connector, sender="cust-4", message_id="big-1")
        assert s.post(photo, channel["id"]).status_code == 200
        sent = s.wait_sent(count + 1)[count:]
        assert "couldn't open that image" in sent[0]["text"]
    finally:
        limits.max_image_bytes = before


# --- registering the webhook with the provider ------------------------------------------------


@dataclass
class Registering:
    client: TestClient
    key: dict[str, str]  # tenant A
    other: dict[str, str]  # tenant B
    bot_id: str
    other_bot_id: str  # tenant B's
    calls: list[httpx.Request]
    reachable: dict[str, bool]


@pytest.fixture(scope="module")
def registering(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registering]:
    """A gateway whose Telegram is unreachable until ``reachable["telegram"]`` is set."""
    kit = KITS["telegram"]
    calls: list[httpx.Request] = []
    inner = kit.provider(IMAGE, calls)
    reachable = {"telegram": False}

    def transport(req: httpx.Request) -> httpx.Response:
        if not reachable["telegram"]:
            calls.append(req)
            raise httpx.ConnectError("[Errno 101] Network is unreachable", request=req)
        return inner.handle_request(req)

    async def no_wait(seconds: float) -> None:
        return None

    tmp = tmp_path_factory.mktemp("channels-registration")
    settings = make_settings(tmp, make_db_url("sqlite", tmp, request))
    app = create_app(settings, warm_encoder=False, http_transport=httpx.MockTransport(transport))
    with pytest.MonkeyPatch.context() as patch, TestClient(app) as client:
        patch.setattr(connectors.get("telegram"), "_sleep", staticmethod(no_wait))
        keys = [
            client.post("/v1/tenants", json={"name": n}, headers=OPERATOR).json()
            for n in ("a", "b")
        ]
        a, b = ({"Authorization": f"Bearer {k['api_key']}"} for k in keys)
        bots = [client.post("/v1/bots", json={"name": "r"}, headers=h).json() for h in (a, b)]
        yield Registering(client, a, b, bots[0]["id"], bots[1]["id"], calls, reachable)


def test_a_channel_whose_provider_cannot_be_reached_is_created_and_says_so(
    registering: Registering,
) -> None:
    r = registering
    created = r.client.post(
        f"/v1/bots/{r.bot_id}/channels",
        json={"type": "telegram", "config": KITS["telegram"].config()},
        headers=r.key,
    )
    assert created.status_code == 201, created.text
    channel = created.json()
    registration = channel["registration"]
    assert registration["status"] == "failed"
    assert "Network is unreachable" in registration["message"]
    assert f"/channels/{channel['id']}/register" in registration["message"]
    assert KITS["telegram"].config()["bot_token"] not in str(channel)  # not even in the message
    shown = r.client.get(f"/v1/bots/{r.bot_id}/channels/{channel['id']}", headers=r.key).json()
    assert shown["registration"] == registration
    listed = r.client.get(f"/v1/bots/{r.bot_id}/channels", headers=r.key).json()
    assert [c["registration"]["status"] for c in listed] == ["failed"]
    metrics = r.client.get("/v1/metrics", headers=OPERATOR).text
    assert 'parley_channel_register_failed{channel="telegram"}' in metrics

    # Telegram is back: the retry registers the webhook and the channel remembers it
    r.reachable["telegram"] = True
    try:
        path = f"/v1/bots/{r.bot_id}/channels/{channel['id']}/register"
        retried = r.client.post(path, headers=r.key)
        assert retried.status_code == 200, retried.text
        assert retried.json()["registration"] == {"status": "registered", "message": None}
        set_webhook = [c for c in r.calls if c.url.path.endswith("/setWebhook")][-1]
        assert json.loads(set_webhook.content)["url"] == channel["webhook_url"]
        shown = r.client.get(f"/v1/bots/{r.bot_id}/channels/{channel['id']}", headers=r.key)
        assert shown.json()["registration"]["status"] == "registered"
    finally:
        r.reachable["telegram"] = False


def test_another_tenant_cannot_register_a_channel(registering: Registering) -> None:
    r = registering
    channel = r.client.post(
        f"/v1/bots/{r.bot_id}/channels",
        json={"type": "telegram", "config": KITS["telegram"].config()},
        headers=r.key,
    ).json()
    before = len(r.calls)
    for bot_id in (r.bot_id, r.other_bot_id):  # A's ids, and B's bot with A's channel
        path = f"/v1/bots/{bot_id}/channels/{channel['id']}/register"
        refused = r.client.post(path, headers=r.other)
        assert refused.status_code == 404 and refused.json()["error"] == "not_found"
    assert (
        r.client.post(f"/v1/bots/{r.bot_id}/channels/ch_0000/register", headers=r.key).status_code
        == 404
    )
    assert len(r.calls) == before  # nothing was sent to Telegram


def test_a_channel_with_nothing_to_register_says_not_needed(registering: Registering) -> None:
    r = registering
    created = r.client.post(
        f"/v1/bots/{r.bot_id}/channels",
        json={"type": "slack", "config": KITS["slack"].config()},
        headers=r.key,
    )
    assert created.status_code == 201, created.text
    assert created.json()["registration"] == {"status": "not_needed", "message": None}
