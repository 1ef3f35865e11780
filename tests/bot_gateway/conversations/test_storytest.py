"""The story test runner itself: reading stories files (and saying what is wrong with them),
matching bot messages, and reporting failures a bot author can act on. The bot here is a
scripted ``converse``; tests/bot_gateway/conversations/test_engine.py runs stories against
the real dialog engine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot_gateway.conversations.storytest import (
    TurnReply,
    UserTurn,
    image_names,
    load_cases,
    run_cases,
    turn_parse,
)
from core.errors import InvalidInput, NotReady
from core.messages import OutboundMessage


def reply(
    *texts: str | dict[str, Any],
    responses: list[str | None] | None = None,
    slots: dict[str, Any] | None = None,
    status: str = "bot",
    intent: str | None = None,
    entities: list[dict[str, Any]] | None = None,
) -> TurnReply:
    messages = [OutboundMessage.of({"text": t} if isinstance(t, str) else t) for t in texts]
    return TurnReply(
        messages=messages,
        responses=responses if responses is not None else [None] * len(messages),
        slots=slots or {},
        status=status,
        intent=intent,
        entities=entities,
    )


class Script:
    """A bot that answers each user text with a fixed reply; records every turn."""

    def __init__(self, replies: dict[str, TurnReply]) -> None:
        self.replies = replies
        self.turns: list[tuple[str, UserTurn]] = []

    async def __call__(self, sender_id: str, turn: UserTurn) -> TurnReply:
        self.turns.append((sender_id, turn))
        key = turn.text or turn.payload or turn.image or ""
        return self.replies.get(key, reply())


def run(stories: str, script: Script, **kwargs: Any) -> dict[str, Any]:
    return asyncio.run(run_cases(load_cases(stories), script, **kwargs)).to_dict()


ORDER = reply("What is your order number?", responses=["utter_ask_order_id"], intent="track_order")


# --- loading ---------------------------------------------------------------------------------


def test_a_stories_file_loads_into_cases_with_turns() -> None:
    cases = load_cases(
        """
stories:
  - name: one
    steps:
      - user: where is my order?
        intent: track_order
        entities: [{entity: order_id, value: PX-1}]
      - bot: utter_ask_order_id
      - user: {image: label.png, text: here}
      - user: {payload: '/choose{"size": "s"}', text: Small}
      - user: yes
      - user: 12.50
      - bot: no
      - slots: {order_id: PX-1}
      - status: waiting_for_agent
  - name: two
    steps:
      - user: {image: other.png}
      - user: {image: label.png}
"""
    )
    assert [c.name for c in cases] == ["one", "two"]
    steps = cases[0].steps
    assert [s.kind for s in steps] == ["user", "bot", "user", "user", "user", "user", "bot"] + [
        "slots",
        "status",
    ]
    assert [s.number for s in steps] == list(range(1, 10))
    assert steps[0].line == 5 and cases[0].line == 3
    first = steps[0].turn
    assert first == UserTurn(
        text="where is my order?",
        intent="track_order",
        entities=[{"entity": "order_id", "value": "PX-1"}],
    )
    assert steps[2].turn == UserTurn(text="here", image="label.png")
    assert steps[3].turn == UserTurn(text="Small", payload='/choose{"size": "s"}')
    # YAML would read these as a boolean and a number: the text is kept as written
    assert steps[4].turn.text == "yes" and steps[5].turn.text == "12.50"
    assert steps[6].expect.name_or_text == "no"
    assert image_names(cases) == ["label.png", "other.png"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stories: [", "not valid YAML: line 1"),
        ("- user: hi", "a stories file is a mapping with a `stories` list"),
        ("stories: []", "no stories"),
        ("a: &x [1, 2]\nstories: [*x]", "uses YAML aliases"),
        ("stories: [{steps: [{user: hi}]}]", "stories[0] (line 1): give the story a `name`"),
        (
            "stories:\n  - name: a\n    steps: [{user: hi}]\n  - name: a\n    steps: [{user: hi}]",
            'story "a" (line 4): the name is used twice',
        ),
        ("stories:\n  - name: a\n    steps: []", 'story "a" (line 2): `steps` is a list'),
        (
            "stories:\n  - name: a\n    steps:\n      - user: hi\n      - bot: x\n        user: y",
            'story "a", step 2 (line 5): a step has exactly one of user, bot, slots, status',
        ),
        (
            "stories:\n  - name: a\n    steps:\n      - bot: hello",
            'story "a", step 1 (line 4): a `bot` step checks a user turn; put a `user` step',
        ),
        (
            "stories:\n  - name: a\n    steps:\n      - user: hi\n        intnt: greet",
            "unknown key(s) intnt in a `user` step (a user step also takes intent, entities)",
        ),
        (
            "stories:\n  - name: a\n    steps:\n      - user: hi\n      - status: done",
            'story "a", step 2 (line 5): `status` is one of bot, waiting_for_agent',
        ),
        (
            "stories:\n  - name: a\n    steps:\n      - user: {payload: track}",
            "payload 'track' is not \"/intent\"",
        ),
        (
            "stories:\n  - name: a\n    steps:\n      - user: hi\n        entities: [order_id]",
            "`entities` is a list of {entity: name, value: v}",
        ),
        (
            "stories:\n  - name: a\n    steps:\n      - user: hi\n      - bot: {says: x}",
            "unknown key(s) says in `bot`; use text, contains, response, buttons, image",
        ),
        (
            "stories:\n  - name: a\n    steps:\n      - user: hi\n      - bot: {buttons: Yes}",
            "`buttons` in `bot` is a list of button titles",
        ),
        (
            "stories:\n  - name: a\n    steps:\n      - user: {photo: x.png}",
            "unknown key(s) photo in `user`; use text, image, payload",
        ),
        (
            "stories:\n  - name: a\n    steps:\n      - user: hi\n      - slots: [a]",
            "`slots` is a mapping of slot names to expected values",
        ),
    ],
)
def test_a_malformed_stories_file_names_the_story_step_and_line(text: str, expected: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        load_cases(text)
    assert expected in raised.value.message
    assert raised.value.details["errors"]


def test_every_problem_of_a_file_is_listed() -> None:
    with pytest.raises(InvalidInput) as raised:
        load_cases(
            "stories:\n  - name: a\n    steps:\n      - user: hi\n      - status: x\n"
            "  - name: b\n    steps:\n      - bot: hi\n"
        )
    errors = raised.value.details["errors"]
    assert len(errors) == 2
    assert errors[0].startswith('story "a", step 2 (line 5)')
    assert errors[1].startswith('story "b", step 1 (line 8)')
    assert "2 problem(s)" in raised.value.message


# --- running ---------------------------------------------------------------------------------

TRACK = """
stories:
  - name: track
    steps:
      - user: where is my order?
        intent: track_order
      - bot: What is your order number?
      - user: PX-100234
      - bot: {contains: shipped}
"""


def test_a_passing_case_and_the_report_shape() -> None:
    script = Script(
        {
            "where is my order?": ORDER,
            "PX-100234": reply("Order PX-100234 has shipped.", slots={"order_id": "PX-100234"}),
        }
    )
    report = run(TRACK, script)
    assert report == {
        "passed": 1,
        "failed": 0,
        "cases": [
            {
                "name": "track",
                "passed": True,
                "failures": [],
                "transcript": [
                    "user: 'where is my order?'",
                    "bot: 'What is your order number?' (utter_ask_order_id)",
                    "user: 'PX-100234'",
                    "bot: 'Order PX-100234 has shipped.'",
                ],
            }
        ],
    }


def test_a_failing_case_names_the_step_and_the_difference_and_stops() -> None:
    script = Script(
        {"where is my order?": reply("Sorry, I didn't get that.", intent="track_order")}
    )
    report = run(TRACK, script)
    assert report["passed"] == 0 and report["failed"] == 1
    assert report["cases"][0]["failures"] == [
        "step 2: expected bot 'What is your order number?', got \"Sorry, I didn't get that.\""
    ]
    assert len(script.turns) == 1  # the case stopped at its first failure


def test_a_response_name_matches_any_variant_and_text_matches_exactly() -> None:
    stories = """
stories:
  - name: by name
    steps:
      - user: hi
      - bot: utter_greet
  - name: by response
    steps:
      - user: hi
      - bot: {response: utter_greet}
  - name: exact text is exact
    steps:
      - user: hi
      - bot: Hello
"""
    script = Script({"hi": reply("Hello there!", responses=["utter_greet"])})
    cases = run(stories, script)["cases"]
    assert [c["passed"] for c in cases] == [True, True, False]
    assert cases[2]["failures"] == [
        "step 2: expected bot 'Hello', got 'Hello there!' (utter_greet)"
    ]


def test_buttons_images_and_combined_expectations() -> None:
    menu = {
        "text": "What next?",
        "buttons": [{"title": "Track", "payload": "/track"}, {"title": "Cancel", "payload": "/x"}],
    }
    tiger = {"text": "Cheer up", "image": "https://example.com/tiger.jpg"}
    script = Script({"menu": reply(menu, tiger, responses=["utter_menu", "utter_cheer_up"])})
    ok = """
stories:
  - name: ok
    steps:
      - user: menu
      - bot: {response: utter_menu, buttons: [Track, Cancel], contains: next}
      - bot: {image: true, text: Cheer up}
"""
    assert run(ok, script)["passed"] == 1
    wrong = """
stories:
  - name: wrong buttons
    steps:
      - user: menu
      - bot: {buttons: [Track]}
  - name: wrong image
    steps:
      - user: menu
      - bot: utter_menu
      - bot: {image: https://example.com/cat.jpg}
"""
    cases = run(wrong, script)["cases"]
    assert cases[0]["failures"] == [
        "step 2: expected bot {buttons ['Track']}, got 'What next?' buttons ['Track', 'Cancel'] "
        "(utter_menu)"
    ]
    assert cases[1]["failures"][0].startswith(
        "step 3: expected bot {image 'https://example.com/cat.jpg'}, got 'Cheer up' image "
    )


def test_unexpected_and_missing_bot_messages_fail() -> None:
    script = Script(
        {
            "hi": reply("Hi!", "How can I help?", responses=["utter_greet", "utter_help"]),
            "bye": reply(),
        }
    )
    stories = """
stories:
  - name: an extra message before the next turn
    steps:
      - user: hi
      - bot: Hi!
      - user: bye
  - name: an extra message at the end
    steps:
      - user: hi
      - bot: utter_greet
  - name: a message the bot did not send
    steps:
      - user: bye
      - bot: See you
"""
    cases = run(stories, script)["cases"]
    assert cases[0]["failures"] == [
        "step 3: the bot also said 'How can I help?' (utter_help), which no `bot` step expects"
    ]
    assert cases[1]["failures"] == [
        "after step 2: the bot also said 'How can I help?' (utter_help), which no `bot` step "
        "expects"
    ]
    assert cases[2]["failures"] == [
        "step 2: expected bot 'See you', got nothing more (the bot sent 0 messages in that turn)"
    ]


def test_slots_and_status_are_checked_after_the_latest_turn() -> None:
    script = Script({"agent": reply(slots={"order_id": None}, status="waiting_for_agent")})
    stories = """
stories:
  - name: right
    steps:
      - user: agent
      - slots: {order_id: null}
      - status: waiting_for_agent
  - name: wrong slot value
    steps:
      - user: agent
      - slots: {order_id: PX-1}
  - name: unknown slot
    steps:
      - user: agent
      - slots: {order: PX-1}
  - name: wrong status
    steps:
      - user: agent
      - status: bot
"""
    cases = run(stories, script)["cases"]
    assert [c["failures"] for c in cases] == [
        [],
        ["step 2: expected slot order_id = 'PX-1', got None"],
        ["step 2: the bot has no slot 'order'"],
        ["step 2: expected status bot, got waiting_for_agent"],
    ]


def test_intents_and_entities_are_checked_unless_turned_off() -> None:
    script = Script(
        {
            "where is PX-1?": reply(
                "ok", intent="greet", entities=[{"entity": "order_id", "value": "PX-2"}]
            ),
            "where is PX-2?": reply(
                "ok", intent="track_order", entities=[{"entity": "order_id", "value": "PX-2"}]
            ),
            "unreported": reply("ok", intent="track_order"),  # entities None: not reported
        }
    )
    stories = """
stories:
  - name: wrong intent
    steps:
      - user: where is PX-1?
        intent: track_order
      - bot: ok
  - name: wrong entity
    steps:
      - user: where is PX-2?
        intent: track_order
        entities: [{entity: order_id, value: PX-1}]
      - bot: ok
  - name: entities not reported
    steps:
      - user: unreported
        intent: track_order
        entities: [{entity: order_id, value: PX-1}]
      - bot: ok
"""
    cases = run(stories, script)["cases"]
    assert [c["failures"] for c in cases] == [
        ["step 1: expected intent track_order, got greet"],
        ["step 1: expected entity order_id='PX-1', got order_id='PX-2'"],
        [],
    ]
    assert run(stories, script, check_intents=False)["passed"] == 3


def test_each_case_is_a_new_conversation() -> None:
    script = Script({"where is my order?": ORDER})
    stories = """
stories:
  - name: a
    steps: [{user: 'where is my order?'}, {bot: utter_ask_order_id}, {user: again}]
  - name: b
    steps: [{user: 'where is my order?'}, {bot: utter_ask_order_id}]
"""
    assert run(stories, script)["passed"] == 2
    senders = [sender for sender, _ in script.turns]
    assert senders[0] == senders[1] != senders[2]
    assert all(s.startswith("test-") for s in senders)


def test_images_come_from_the_files_given() -> None:
    script = Script({"label.png": reply("Order PX-1 has shipped.")})
    stories = """
stories:
  - name: with the file
    steps:
      - user: {image: label.png}
      - bot: {contains: shipped}
  - name: without it
    steps:
      - user: {image: missing.png}
"""
    cases = run(stories, script, files={"label.png": b"\x89PNG"})["cases"]
    assert cases[0]["passed"]
    assert script.turns[0][1].image_bytes == b"\x89PNG"
    assert cases[1]["failures"] == [
        "step 1: the image 'missing.png' was not given (files given: label.png); put it beside "
        "the stories file or name its folder with --files"
    ]
    assert len(script.turns) == 1


def test_a_turn_that_fails_on_the_server_is_a_failure_of_its_case() -> None:
    async def not_ready(sender_id: str, turn: UserTurn) -> TurnReply:
        raise NotReady("bot b1 is still training its NLU; try again in a minute")

    report = asyncio.run(run_cases(load_cases(TRACK), not_ready)).to_dict()
    assert report["cases"][0]["failures"] == [
        "step 1: the turn failed: bot b1 is still training its NLU; try again in a minute"
    ]


def test_the_engine_only_parse_comes_from_the_turn() -> None:
    assert turn_parse(UserTurn(text="hello")).to_rasa() == {}
    parsed = turn_parse(UserTurn(text="hi", intent="greet", entities=[{"entity": "x", "value": 1}]))
    assert parsed.to_rasa()["intent"] == {"name": "greet", "confidence": 1.0}
    assert parsed.to_rasa()["entities"] == [{"entity": "x", "value": 1}]
    payload = turn_parse(UserTurn(text="Small", payload='/choose{"size": "s"}', intent="other"))
    assert payload.intent_name == "choose"
    assert payload.entities[0].value == "s"
    assert turn_parse(UserTurn(text="/restart")).intent_name == "restart"
