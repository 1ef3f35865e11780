"""Tracker events: every kind reads back from its stored JSON and writes the very same JSON
(keys, order, nulls), a kind this version does not know is kept as it was, a known kind of the
wrong shape is refused, and the SQL store keeps them byte for byte."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bot_gateway.conversations.events import (
    KNOWN_KINDS,
    BotEvent,
    HandoffEvent,
    InvalidEvent,
    SlotEvent,
    UnknownEvent,
    UserEvent,
    event,
    load_event,
)
from bot_gateway.conversations.store import SqlTrackerStore
from core.db import ensure_schema, get_engine, session_scope
from core.tables import Bot, Tenant

T = 1796294823.1576834

# each kind as the gateway has stored it (the shapes of the event() calls before the union)
STORED: list[dict[str, Any]] = [
    {
        "event": "user",
        "timestamp": T,
        "text": "where is PX-100234?",
        "parse_data": {
            "text": "where is PX-100234?",
            "intent": {"name": "track_order", "confidence": 0.93},
            "intent_ranking": [{"name": "track_order", "confidence": 0.93}],
            "entities": [
                {
                    "entity": "order_id",
                    "value": "PX-100234",
                    "start": 9,
                    "end": 18,
                    "confidence": 1.0,
                    "extractor": "pattern",
                }
            ],
            "out_of_scope": False,
            "model_id": "mdl_1",
        },
        "attachments": [
            {"upload_id": "up_1", "url": "/v1/uploads/up_1", "media_type": "image/png"}
        ],
        "input_channel": "webchat",
        "message_id": None,
    },
    {
        "event": "bot",
        "timestamp": T,
        "text": None,
        "data": {"buttons": [{"title": "Track", "payload": "/track"}]},
        "response": None,
    },
    {
        "event": "bot",
        "timestamp": T,
        "text": "Hi!",
        "data": {},
        "response": "utter_greet",
    },
    {
        "event": "agent",
        "timestamp": T,
        "text": "Let me check.",
        "data": {"quick_replies": [{"title": "Yes", "payload": "yes"}]},
        "agent_id": "agt_1",
        "agent_name": "Ann",
    },
    {"event": "note", "timestamp": T, "text": "VIP", "agent_id": "agt_1", "agent_name": "Ann"},
    {"event": "claim", "timestamp": T, "agent_id": "agt_1", "agent_name": None},
    {"event": "closed", "timestamp": T, "agent_id": "agt_1", "agent_name": "Ann"},
    {"event": "slot", "timestamp": T, "name": "order_id", "value": None},
    {"event": "slot", "timestamp": T, "name": "items", "value": [1, "two", {"three": 3}]},
    {"event": "action", "timestamp": T, "name": "action_lookup"},
    {"event": "session_started", "timestamp": T},
    {"event": "restart", "timestamp": T},
    {"event": "release", "timestamp": T},
    {"event": "reset_slots", "timestamp": T},
    {"event": "flow_started", "timestamp": T, "name": "track"},
    {"event": "flow_ended", "timestamp": T, "name": "track", "reason": "completed"},
    {"event": "handoff", "timestamp": T, "reason": "customer asked for a person"},
    {"event": "fallback", "timestamp": T, "reason": "low confidence or out of scope"},
    {
        "event": "vision",
        "timestamp": T,
        "name": "label",
        "model": "prebuilt-ocr",
        "result": {"model_id": "prebuilt-ocr", "text": "REF PX-1", "lines": []},
    },
    {"event": "action_failed", "timestamp": T, "name": "", "error": "too many steps"},
    {
        "event": "delivery_failed",
        "timestamp": T,
        "channel": "slack",
        "error": "slack chat.postMessage: channel_not_found",
        "message": {"text": "Hello"},
    },
]


def test_every_kind_has_a_stored_example() -> None:
    assert {item["event"] for item in STORED} == KNOWN_KINDS


@pytest.mark.parametrize("stored", STORED, ids=lambda d: str(d["event"]))
def test_a_stored_event_reads_back_and_writes_the_same_json(stored: dict[str, Any]) -> None:
    loaded = load_event(stored)
    assert not isinstance(loaded, UnknownEvent)
    assert loaded.event == stored["event"]
    assert json.dumps(loaded.to_dict()) == json.dumps(stored)  # same keys, order and nulls


def test_event_stamps_now_and_keeps_what_it_was_given() -> None:
    made = event("bot", text=None, data={"image": "https://cdn.example/a.png"}, response=None)
    assert isinstance(made, BotEvent) and made.text is None
    stored = made.to_dict()
    assert list(stored) == ["event", "timestamp", "text", "data", "response"]
    assert stored["text"] is None and isinstance(stored["timestamp"], float)
    assert list(event("release").to_dict()) == ["event", "timestamp"]


def test_older_events_without_some_fields_still_load_as_they_were() -> None:
    old = {"event": "user", "timestamp": T, "text": "hi", "parse_data": {"text": "hi"}}
    loaded = load_event(old)
    assert isinstance(loaded, UserEvent) and loaded.attachments == []
    assert loaded.to_dict() == old  # nothing added


def test_an_unknown_kind_is_kept_as_it_was() -> None:
    newer = {"event": "reminder", "timestamp": 12, "name": "r1", "data": {"x": [1]}}
    loaded = load_event(newer)
    assert isinstance(loaded, UnknownEvent) and loaded.event == "reminder"
    assert json.dumps(loaded.to_dict()) == json.dumps(newer)


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ({"event": "slot", "timestamp": T, "value": 1}, "name: Field required"),
        ({"event": "action", "timestamp": T, "name": ["a"]}, "name: Input should be a valid"),
        ({"event": "restart", "timestamp": T, "name": "x"}, "name: Extra inputs"),
    ],
)
def test_a_stored_known_kind_of_the_wrong_shape_is_kept_as_it_was(
    stored: dict[str, Any], problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    loaded = load_event(stored)
    assert isinstance(loaded, UnknownEvent)
    assert loaded.to_dict() == stored
    assert "tracker.event_unreadable" in caplog.text and problem in caplog.text
    fields = {k: v for k, v in stored.items() if k not in ("event", "timestamp")}
    with pytest.raises(InvalidEvent, match=problem):  # making one of that shape is refused
        event(stored["event"], **fields)


def test_a_stored_item_without_a_kind_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="without an `event` kind"):
        load_event({"timestamp": T, "name": "x"})


def test_making_an_event_of_no_known_kind_or_shape_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="no event kind 'slots'; the kinds are action"):
        event("slots", name="x", value=1)
    with pytest.raises(InvalidEvent, match="'handoff' event of the wrong shape: why: Extra"):
        event("handoff", why="asked")


def test_the_store_keeps_events_byte_for_byte(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    ensure_schema(url)
    engine = get_engine(url)
    with session_scope(engine) as session:
        session.add(Tenant(id="tnt_1", name="acme"))
        session.flush()
        session.add(Bot(id="bot_1", tenant_id="tnt_1", name="b", definition={}, widget_key="k"))
    store = SqlTrackerStore(engine)
    typed = [load_event(item) for item in STORED]
    newer = load_event({"event": "reminder", "timestamp": 12, "name": "r1"})

    async def scenario() -> tuple[list[Any], list[dict[str, Any]], Any]:
        record, _ = await store.open("tnt_1", "bot_1", "webchat", "s1")
        await store.save(record, status="waiting_for_agent", state={}, events=typed)
        await store.append(record.id, [newer])
        _, recent = await store.open("tnt_1", "bot_1", "webchat", "s1", recent=100)
        history = await store.events("tnt_1", record.id)
        return recent, history, await store.get("tnt_1", record.id)

    recent, history, record = asyncio.run(scenario())
    assert recent == [*typed, newer]  # read back typed, equal to what was saved
    assert isinstance(recent[7], SlotEvent) and recent[7].value is None
    without_ids = [{k: v for k, v in item.items() if k != "id"} for item in history]
    assert json.dumps(without_ids) == json.dumps([*STORED, newer.to_dict()])
    handoff = next(e for e in typed if isinstance(e, HandoffEvent))
    assert record.handoff_reason == handoff.reason
