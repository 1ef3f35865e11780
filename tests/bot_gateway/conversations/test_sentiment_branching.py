"""Bots branch on the customer's sentiment: the engine scores every typed message with the real
VADER lexicon (``nlu.sentiment``) into the built-in ``sentiment`` slots, ``if: sentiment ==
negative`` reads them, and a handoff step carries ``reason: negative_sentiment``."""

from __future__ import annotations

import pytest

from bot_gateway.conversations.definition import InvalidBotDefinition
from bot_gateway.conversations.engine import DEFAULT_HANDOFF
from bot_gateway.conversations.events import HandoffEvent, UserEvent
from bot_gateway.conversations.storytest import engine_converse
from tests.bot_gateway.conversations.test_engine import make_engine, say

SUPPORT = """
name: support
nlu: {model: support-nlu}
responses:
  utter_glad: [{text: "Glad to hear it!"}]
  utter_sorry: [{text: "Sorry about that, a colleague will take over."}]
flows:
  feedback:
    intents: [feedback]
    steps:
      - if: sentiment == negative
        then:
          - handoff: utter_sorry
            reason: negative_sentiment
        else:
          - reply: utter_glad
"""


def test_a_negative_message_hands_off_with_reason_negative_sentiment() -> None:
    engine = make_engine(SUPPORT)
    converse = engine_converse(engine)
    reply = say(converse, "s", "This is terrible, I hate your awful service.", intent="feedback")
    assert reply == ["Sorry about that, a colleague will take over."]
    tracker = converse.trackers["s"]
    assert tracker.status == "waiting_for_agent"
    assert tracker.slots["sentiment"] == "negative"
    assert 0.5 < tracker.slots["sentiment_score"] <= 1.0
    handoffs = [e for e in tracker.events if isinstance(e, HandoffEvent)]
    assert [e.reason for e in handoffs] == ["negative_sentiment"]
    user = [e for e in tracker.events if isinstance(e, UserEvent)][-1]
    assert user.sentiment is not None and user.sentiment["label"] == "negative"


def test_a_positive_message_does_not_hand_off() -> None:
    engine = make_engine(SUPPORT)
    converse = engine_converse(engine)
    assert say(converse, "s", "I love it, thank you so much!", intent="feedback") == [
        "Glad to hear it!"
    ]
    tracker = converse.trackers["s"]
    assert tracker.status == "bot"
    assert tracker.slots["sentiment"] == "positive"
    assert not [e for e in tracker.events if isinstance(e, HandoffEvent)]


def test_the_list_form_and_a_plain_handoff_keep_working() -> None:
    bot = SUPPORT.replace(
        "      - if: sentiment == negative\n        then:",
        "      - if:\n          - slot: sentiment\n            equals: negative\n            then:",
    ).replace(
        "          - handoff: utter_sorry\n            reason: negative_sentiment",
        "              - handoff: true",
    )
    engine = make_engine(bot)
    converse = engine_converse(engine)
    assert say(converse, "s", "Awful. Worst order ever.", intent="feedback") == [DEFAULT_HANDOFF]
    handoffs = [e for e in converse.trackers["s"].events if isinstance(e, HandoffEvent)]
    assert [e.reason for e in handoffs] == ["flow feedback"]


def test_button_payloads_keep_the_last_sentiment() -> None:
    engine = make_engine(SUPPORT)
    converse = engine_converse(engine)
    say(converse, "s", "great, thanks!", intent="feedback")
    say(converse, "s", "/feedback")
    tracker = converse.trackers["s"]
    assert tracker.slots["sentiment"] == "positive"
    users = [e for e in tracker.events if isinstance(e, UserEvent)]
    assert users[-1].sentiment is None and users[0].sentiment is not None


@pytest.mark.parametrize(
    ("condition", "path"),
    [
        ("sentiment = negative", "flows.feedback.steps[0].if[0]"),
        ("sentiment ==", "flows.feedback.steps[0].if[0]"),
        ("== negative", "flows.feedback.steps[0].if[0]"),
    ],
)
def test_a_bad_condition_is_reported_at_its_path(condition: str, path: str) -> None:
    with pytest.raises(InvalidBotDefinition) as e:
        make_engine(SUPPORT.replace("sentiment == negative", f"'{condition}'"))
    problems = {p.path: p.message for p in e.value.problems}
    assert path in problems, problems
    assert "slot == value" in problems[path]


def test_an_unknown_slot_in_a_condition_is_reported() -> None:
    with pytest.raises(InvalidBotDefinition) as e:
        make_engine(SUPPORT.replace("sentiment == negative", "mood == negative"))
    assert [str(p) for p in e.value.problems] == [
        'flows.feedback.steps[0].if[0].slot: unknown slot "mood"'
    ]


def test_then_beside_a_list_of_cases_is_an_unknown_field() -> None:
    bot = SUPPORT.replace(
        "      - if: sentiment == negative\n",
        "      - if: [{slot: sentiment, equals: negative}]\n",
    )
    with pytest.raises(InvalidBotDefinition) as e:
        make_engine(bot)
    assert "flows.feedback.steps[0].then: unknown field" in [str(p) for p in e.value.problems]
