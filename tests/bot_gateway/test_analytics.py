"""``GET /v1/analytics`` and its charts on scripted conversations through the REST channel
(SQLite and PostgreSQL): contained, fallback and handoff conversations, the numbers per day and
channel, tenancy (404 for another tenant's bot) and the 422s of a bad window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from core.db import session_scope
from core.tables import Conversation, ConversationEvent
from tests.bot_gateway.conftest import Api, running_api
from tests.bot_gateway.test_api_bots import wait_ready
from tests.conftest import DB_KINDS
from tests.support.bots import HANDOFF_INTENTS

pytestmark = pytest.mark.slow  # the bot's NLU trains (about 8 s)

BOT = {
    "name": "analytics",
    # threshold 1: typed text always falls back; buttons (/intent, confidence 1.0) do not
    "nlu": {"intents": HANDOFF_INTENTS, "threshold": 1.0},
    "responses": {"utter_greet": [{"text": "Hello!"}]},
    "flows": {"greet": {"intents": ["greet"], "steps": [{"reply": "utter_greet"}]}},
    "handoff": {"intents": ["talk_to_human"]},
    "fallback": {"handoff_after": 2},
}


@pytest.fixture(scope="module", params=DB_KINDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("analytics")) as api:
        yield api


def say(api: Api, bot_id: str, sender: str, text: str) -> None:
    r = api.client.post(
        f"/v1/bots/{bot_id}/webhooks/rest", json={"sender": sender, "message": text}, headers=api.a
    )
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def bot(api: Api) -> dict[str, Any]:
    r = api.client.post("/v1/bots", json=BOT, headers=api.a)
    assert r.status_code == 201, r.text
    bot = wait_ready(api, r.json()["id"])
    say(api, bot["id"], "early", "/greet")  # contained; moved two days back below
    say(api, bot["id"], "b", "/greet")
    say(api, bot["id"], "b", "what is this")  # a fallback, then contained
    say(api, bot["id"], "c", "blah")
    say(api, bot["id"], "c", "blah blah")  # two fallbacks in a row: handed off
    say(api, bot["id"], "d", "/talk_to_human")  # asked for a person: handed off
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    engine = api.client.app.state.gateway.engine  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        early = session.scalar(select(Conversation.id).where(Conversation.sender_id == "early"))
        session.execute(
            update(Conversation).where(Conversation.id == early).values(created_at=two_days_ago)
        )
        session.execute(
            update(ConversationEvent)
            .where(ConversationEvent.conversation_id == early)
            .values(created_at=two_days_ago)
        )
    return bot


def get(api: Api, path: str, headers: dict[str, str] | None = None, **query: Any) -> Any:
    r = api.client.get(path, params=query, headers=headers or api.a)
    assert r.status_code == 200, r.text
    return r.json()


def test_totals_count_contained_fallback_and_handed_off_conversations(
    api: Api, bot: dict[str, Any]
) -> None:
    found = get(api, "/v1/analytics", bot_id=bot["id"])
    totals = found["totals"]
    assert found["bot_id"] == bot["id"] and found["timezone"] == "UTC"
    assert totals["conversations"] == 4
    assert (totals["handoffs"], totals["contained"]) == (2, 2)
    assert (totals["containment_rate"], totals["handoff_rate"]) == (0.5, 0.5)
    assert (totals["messages"], totals["fallbacks"]) == (6, 3)
    assert totals["fallback_rate"] == 0.5
    assert totals["bot_messages"] >= 4 and totals["agent_messages"] == 0
    assert 0 < totals["average_confidence"] < 1  # the typed messages' (buttons have 1.0)
    assert found["top_intents"] == [
        {"intent": "greet", "count": 2},
        {"intent": "talk_to_human", "count": 1},
    ]
    [channel] = found["channels"]
    assert channel["channel"] == "rest" and channel["conversations"] == 4
    assert channel["handoffs"] == 2 and channel["fallbacks"] == 3
    # the same numbers for all of the tenant's bots; none for the other tenant
    assert get(api, "/v1/analytics")["totals"] == totals
    other = get(api, "/v1/analytics", headers=api.b)["totals"]
    assert other["conversations"] == 0 and other["containment_rate"] is None


def test_series_splits_by_day_and_hour_in_utc(api: Api, bot: dict[str, Any]) -> None:
    today = datetime.now(UTC).date()
    start = today - timedelta(days=3)
    found = get(api, "/v1/analytics", bot_id=bot["id"], **{"from": str(start), "to": str(today)})
    assert found["from"] == f"{start}T00:00:00+00:00"
    assert found["to"] == f"{today + timedelta(days=1)}T00:00:00+00:00"  # `to` day included
    by_day = {row["period"]: row for row in found["series"]}
    assert list(by_day) == [str(start + timedelta(days=i)) for i in range(4)]
    assert by_day[str(today - timedelta(days=2))]["conversations"] == 1
    assert by_day[str(today - timedelta(days=2))]["containment_rate"] == 1.0
    assert by_day[str(today)]["conversations"] == 3 and by_day[str(today)]["messages"] == 5
    assert by_day[str(today - timedelta(days=1))]["containment_rate"] is None  # none that day
    # a window of today only leaves the early conversation out
    today_only = get(api, "/v1/analytics", bot_id=bot["id"], **{"from": str(today)})
    assert today_only["totals"]["conversations"] == 3
    hourly = get(api, "/v1/analytics", bot_id=bot["id"], granularity="hour", **{"from": str(today)})
    assert sum(row["conversations"] for row in hourly["series"]) == 3
    assert hourly["series"][0]["period"] == f"{today}T00:00:00Z"
    weekly = get(api, "/v1/analytics", bot_id=bot["id"], granularity="week")
    assert sum(row["messages"] for row in weekly["series"]) == 6
    assert all(datetime.fromisoformat(r["period"]).weekday() == 0 for r in weekly["series"])


@pytest.mark.parametrize("kind", ["conversations", "rates", "top-intents", "channels"])
def test_charts_are_svg_and_png(api: Api, bot: dict[str, Any], kind: str) -> None:
    svg = api.client.get(f"/v1/analytics/plots/{kind}.svg?bot_id={bot['id']}", headers=api.a)
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.headers["cache-control"] == "private"
    assert b"<svg" in svg.content
    png = api.client.get(f"/v1/analytics/plots/{kind}.png", headers=api.a)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_top_intents_chart_names_the_intents(api: Api, bot: dict[str, Any]) -> None:
    svg = api.client.get(f"/v1/analytics/plots/top-intents.svg?bot_id={bot['id']}", headers=api.a)
    assert b"talk_to_human" in svg.content and b"greet" in svg.content


def test_another_tenants_bot_is_not_found(api: Api, bot: dict[str, Any]) -> None:
    for path in ("/v1/analytics", "/v1/analytics/plots/rates.svg"):
        r = api.client.get(path, params={"bot_id": bot["id"]}, headers=api.b)
        assert r.status_code == 404, r.text
    r = api.client.get("/v1/analytics/plots/pie.svg", headers=api.a)
    assert r.status_code == 404 and "top-intents" in r.json()["message"]
    assert api.client.get("/v1/analytics/plots/rates.gif", headers=api.a).status_code == 422


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"granularity": "month"}, "granularity"),
        ({"from": "last tuesday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "2026-11-30", "to": "2026-11-01"}, "from"),
        # at the ends of the calendar (the day after `to`, 30 days before it, UTC of a time)
        ({"from": "2026-01-01", "to": "9999-12-31"}, "to"),
        ({"to": "0001-01-05"}, "to"),
        ({"from": "0001-01-01T00:00:00+01:00", "to": "2026-01-02"}, "from"),
        ({"from": "9999-12-31T22:00:00", "to": "9999-12-31T23:30:00"}, "to"),
    ],
)
def test_a_bad_window_is_422_naming_the_parameter(
    api: Api, query: dict[str, str], field: str
) -> None:
    r = api.client.get("/v1/analytics", params=query, headers=api.a)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == field


def test_too_many_periods_is_422(api: Api) -> None:
    r = api.client.get(
        "/v1/analytics", params={"from": "2020-01-01", "granularity": "hour"}, headers=api.a
    )
    assert r.status_code == 422 and "coarser" in r.json()["message"]
