"""What becomes an item of the improve inbox (fallback, low confidence, corrected) from a
conversation's events, and how items are grouped by meaning with the real sentence encoder."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot_gateway.services.improve import Item, find_items, group_items
from core.backends import BackendContext
from tests.conftest import CACHE_DIR

AT = datetime(2026, 11, 30, 12, tzinfo=UTC)


def conversation(conv: str, *events: tuple[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(n, conv, kind, data, AT, "rest") for n, (kind, data) in enumerate(events, 1)]


def user(text: str, intent: str | None = None, confidence: float = 0.0, **parse: Any) -> Any:
    data: dict[str, Any] = {"text": text, "parse_data": {"text": text, **parse}}
    if intent is not None:
        data["parse_data"]["intent"] = {"name": intent, "confidence": confidence}
    return ("user", data)


FALLBACK = ("fallback", {"reason": "low confidence or out of scope"})


def reasons(rows: list[tuple[Any, ...]]) -> dict[str, str]:
    return {item.text: item.reason for item in find_items(rows, unsure_below=0.6)}


def test_fallbacks_and_unsure_messages_are_items_and_understood_ones_are_not() -> None:
    rows = conversation(
        "c1",
        user("hello", "greet", 0.95),
        ("bot", {"text": "Hello!"}),
        user("hullo there mate", "greet", 0.55),  # understood (threshold 0.4), unsure (< 0.6)
        user("gift voucher?", "payment", 0.3),
        FALLBACK,
        ("bot", {"text": "Sorry?"}),
        user("/greet", "greet", 1.0, payload="/greet"),  # a button: nothing typed
        FALLBACK,
    )
    assert reasons(rows) == {"hullo there mate": "low_confidence", "gift voucher?": "fallback"}
    [item] = [i for i in find_items(rows, unsure_below=0.6) if i.reason == "fallback"]
    assert (item.id, item.intent, item.confidence) == (4, "payment", 0.3)
    assert (item.conversation_id, item.channel, item.status) == ("c1", "rest", "open")


def test_what_a_customer_tells_a_person_after_a_fallback_handoff_is_corrected() -> None:
    rows = conversation(
        "c2",
        user("blah", "greet", 0.2),
        FALLBACK,
        user("blah blah", "greet", 0.2),
        FALLBACK,
        ("handoff", {"reason": "2 messages in a row not understood"}),
        user("I want to return a broken kettle"),  # NLU does not run while a person has it
        user("it arrived broken"),
        ("agent", {"text": "Sorry to hear that"}),
        user("thanks"),  # after the agent's reply: not an item
    )
    assert reasons(rows) == {
        "blah": "fallback",
        "blah blah": "fallback",
        "I want to return a broken kettle": "corrected",
        "it arrived broken": "corrected",
    }


def test_a_handoff_the_customer_asked_for_corrects_nothing() -> None:
    rows = conversation(
        "c3",
        user("a real person please", "talk_to_human", 0.9),
        ("handoff", {"reason": "customer asked for a person"}),
        user("my order is late"),
    )
    assert reasons(rows) == {}


def test_a_new_session_ends_the_corrected_stretch() -> None:
    rows = conversation(
        "c4",
        user("blah", "greet", 0.2),
        FALLBACK,
        ("handoff", {"reason": "x"}),
        ("session_started", {}),
        user("hi again"),
    )
    assert reasons(rows) == {"blah": "fallback"}


def item(n: int, text: str, intent: str | None = None) -> Item:
    return Item(n, text, "fallback", intent, 0.3, "c", "rest", AT, "open")


@pytest.fixture(scope="module")
def context() -> BackendContext:
    return BackendContext(cache_dir=CACHE_DIR)


def test_items_are_grouped_by_meaning_the_same_way_every_time(context: BackendContext) -> None:
    items = [
        item(1, "where is my parcel", "track_order"),
        item(2, "can I pay with a gift voucher", "payment"),
        item(3, "where is my package", "greet"),
        item(4, "my parcel has not arrived yet", "track_order"),
        item(5, "is a gift voucher accepted at checkout", None),
    ]
    groups = group_items(items, context)
    texts = [[i.id for i in g.items] for g in groups]
    assert texts == [[1, 3, 4], [2, 5]]  # the biggest group first
    assert [g.id for g in groups] == ["group-1", "group-2"]
    assert [g.suggested_intent for g in groups] == ["track_order", "payment"]
    assert group_items(items, context) == groups
    assert len(group_items(items, context, similarity=1.0)) == 5
    assert len(group_items(items, context, similarity=0.0)) == 1
    assert group_items([], context) == []
