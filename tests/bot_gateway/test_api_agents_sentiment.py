"""Sentiment end to end through the real gateway: a Telegram customer (the provider faked with
the Telegram kit) writes to a bot whose flow branches on ``sentiment == negative``; VADER's real
lexicon scores each message. A negative message is handed off with reason
``negative_sentiment``, a positive one is answered by the bot, and the agents' console API shows
each customer line's sentiment and the conversation's latest one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bot_gateway.app import create_app
from bot_gateway.services.accounts import create_agent
from core.db import get_engine, session_scope
from tests.bot_gateway.conftest import OPERATOR
from tests.bot_gateway.test_api_agents import IMAGE, PASSWORD, Desk
from tests.conftest import make_db_url, make_settings
from tests.connectors.telegram_kit import KIT

pytestmark = pytest.mark.slow

THANKS = "Thanks for the kind words!"
SORRY = "I'm sorry. A colleague will take over."
BOT: dict[str, Any] = {
    "name": "moods",
    "nlu": {
        "intents": {
            "greet": ["hi", "hello", "hey there", "good morning", "hello bot", "hiya"],
            "feedback": [
                "about your service",
                "my delivery experience",
                "the support I got",
                "feedback on my order",
                "your shop and your service",
                "the parcel and the delivery",
            ],
        }
    },
    "responses": {
        "utter_greet": [{"text": "Hello from the bot!"}],
        "utter_thanks": [{"text": THANKS}],
        "utter_sorry": [{"text": SORRY}],
    },
    "flows": {
        "greet": {"intents": ["greet"], "steps": [{"reply": "utter_greet"}]},
        "feedback": {
            "intents": ["feedback"],
            "steps": [
                {
                    "if": "sentiment == negative",
                    "then": [{"handoff": "utter_sorry", "reason": "negative_sentiment"}],
                    "else": [{"reply": "utter_thanks"}],
                }
            ],
        },
    },
}


@pytest.fixture(scope="module")
def desk(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Desk]:
    calls: list[httpx.Request] = []
    tmp = tmp_path_factory.mktemp("moods")
    url = make_db_url("sqlite", tmp, request)
    app = create_app(make_settings(tmp, url), http_transport=KIT.provider(IMAGE, calls))
    with TestClient(app) as client:
        tenants = [
            client.post("/v1/tenants", json={"name": n}, headers=OPERATOR).json()
            for n in ("shop", "other")
        ]
        key = {"Authorization": f"Bearer {tenants[0]['api_key']}"}
        with session_scope(get_engine(url)) as session:
            for tenant, username in ((0, "ana"), (1, "zed")):
                create_agent(
                    session,
                    tenant_id=tenants[tenant]["tenant_id"],
                    username=username,
                    password=PASSWORD,
                    role="agent",
                    name=username.title(),
                )
        r = client.post("/v1/bots", json=BOT, headers=key)
        assert r.status_code in (200, 201, 202), r.text
        bot = r.json()
        deadline = time.monotonic() + 120
        while client.get(f"/v1/bots/{bot['id']}", headers=key).json()["status"] == "training":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        body = {"type": "telegram", "config": KIT.config()}
        channel = client.post(f"/v1/bots/{bot['id']}/channels", json=body, headers=key).json()
        yield Desk(client, calls, bot, channel, "shop")


def test_a_positive_customer_stays_with_the_bot(desk: Desk) -> None:
    ana = desk.login("ana")
    desk.customer("I love your service, the delivery was great!", "p1", sender="happy")
    desk.wait_sent(THANKS)
    assert desk.as_agent(ana, "GET", "/v1/agent/inbox").json()["waiting"] == []


def test_a_negative_customer_is_handed_off_and_agents_see_the_sentiment(desk: Desk) -> None:
    ana, zed = desk.login("ana"), desk.login("zed", tenant="other")
    desk.customer("hello", "n1", sender="angry")
    desk.wait_sent("Hello from the bot!")
    desk.customer("Your service is terrible, the delivery was awful!", "n2", sender="angry")
    desk.wait_sent(SORRY)
    (item,) = desk.as_agent(ana, "GET", "/v1/agent/inbox").json()["waiting"]
    assert item["handoff_reason"] == "negative_sentiment"
    assert item["sentiment"] == "negative"
    at = f"/v1/agent/conversations/{item['id']}"
    assert desk.as_agent(zed, "GET", at).status_code == 404  # another tenant's agent
    detail = desk.as_agent(ana, "GET", at).json()
    assert detail["conversation"]["sentiment"] == "negative"
    assert detail["slots"]["sentiment"] == "negative"
    customer = [t for t in detail["transcript"] if t["from"] == "customer"]
    assert [t["text"] for t in customer] == [
        "hello",
        "Your service is terrible, the delivery was awful!",
    ]
    assert [t["sentiment"]["label"] for t in customer] == ["neutral", "negative"]
    assert all(0.5 <= t["sentiment"]["score"] <= 1.0 for t in customer)
    assert all("sentiment" not in t for t in detail["transcript"] if t["from"] != "customer")
    system = [t["text"] for t in detail["transcript"] if t["from"] == "system"]
    assert "Handed to a person: negative_sentiment" in system

    # the customer writes on while waiting: still scored, and the latest one is shown
    desk.customer("ok thanks, that is great", "n3", sender="angry")
    deadline = time.monotonic() + 30
    while True:
        detail = desk.as_agent(ana, "GET", at).json()
        if detail["conversation"]["sentiment"] == "positive":
            break
        assert time.monotonic() < deadline, detail["conversation"]
        time.sleep(0.05)
    assert detail["transcript"][-1]["sentiment"]["label"] == "positive"
