"""The dialog engine alone (no HTTP, no database), mostly through story tests written in YAML:
what a customer would see, turn by turn. Actions run through a fake runner."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import yaml

from bot_gateway.conversations.definition import parse_definition
from bot_gateway.conversations.engine import (
    DEFAULT_ERROR,
    DEFAULT_FALLBACK,
    DEFAULT_HANDOFF,
    DEFAULT_RELEASED,
    DialogEngine,
    UserMessage,
)
from bot_gateway.conversations.events import SlotEvent, TrackerEvent
from bot_gateway.conversations.storytest import (
    EngineConverse,
    TestReport,
    UserTurn,
    engine_converse,
    load_cases,
    run_cases,
)
from bot_gateway.conversations.tracker import ActionResult, Tracker
from bot_gateway.conversations.understanding import Parse, Seen, VisionResult
from core.messages import OutboundMessage

Fake = ActionResult | Callable[[Tracker, list[TrackerEvent]], ActionResult]


class FakeRunner:
    """Actions by name: a fixed result, or a function of the tracker (and a validation's
    candidate slot events). Records the names it ran."""

    def __init__(self, actions: dict[str, Fake] | None = None) -> None:
        self.actions = actions or {}
        self.calls: list[str] = []

    async def run(
        self,
        name: str,
        *,
        bot: Any,
        tracker: Tracker,
        extra_events: list[TrackerEvent] | None = None,
    ) -> ActionResult:
        self.calls.append(name)
        found = self.actions.get(name)
        if found is None:
            return ActionResult(error=f"the fake runner has no action {name}")
        return found(tracker, extra_events or []) if callable(found) else found


def make_engine(bot_yaml: str, runner: FakeRunner | None = None) -> DialogEngine:
    bot = parse_definition(yaml.safe_load(bot_yaml))
    return DialogEngine(bot, runner or FakeRunner(), rng=random.Random(7))


def run_stories(
    engine: DialogEngine,
    stories: str,
    *,
    files: dict[str, bytes] | None = None,
    vision: dict[str, list[VisionResult]] | None = None,
) -> TestReport:
    converse = engine_converse(engine, vision=vision)
    return asyncio.run(run_cases(load_cases(stories), converse, files=files))


def assert_stories(engine: DialogEngine, stories: str, **kwargs: Any) -> TestReport:
    report = run_stories(engine, stories, **kwargs)
    failed = [
        f"{c.name}: {c.failures[0]}\n    " + "\n    ".join(c.transcript)
        for c in report.cases
        if not c.passed
    ]
    assert not failed, "\n".join(failed)
    assert report.passed == len(report.cases) > 0
    return report


def say(
    converse: EngineConverse, sender: str, text: str = "", *, intent: str | None = None
) -> list[str]:
    """One turn; the texts the bot sent."""
    reply = asyncio.run(converse(sender, UserTurn(text=text, intent=intent)))
    return [m.text or "" for m in reply.messages]


# --- slots asked, validated, retried ---------------------------------------------------------

ORDERS = r"""
name: orders
nlu: {model: orders-nlu}
slots:
  order_id: {type: text}
  email: {type: text}
  shirt_size: {type: categorical, values: [small, medium, large]}
  quantity: {type: number, min: 1, max: 10}
  gift: {type: bool}
responses:
  utter_ask_order_id: [{text: "What is your order number?"}]
  utter_invalid_order_id: [{text: "That doesn't look like an order number (PX- and 6 digits)."}]
  utter_order_status: [{text: "Order {order_id} has shipped."}]
  utter_ask_email: [{text: "Which email should we write to?"}]
  utter_subscribed: [{text: "Subscribed {email}."}]
  utter_ask_shirt_size:
    - text: Which size?
      buttons:
        - {title: Small, payload: '/choose{"shirt_size": "small"}'}
        - {title: Large, payload: '/choose{"shirt_size": "large"}'}
  utter_ask_quantity: [{text: "How many?"}]
  utter_ask_gift: [{text: "Is it a gift?"}]
  utter_shirt_summary: [{text: "{quantity} {shirt_size} shirt(s), gift: {gift}."}]
  utter_hours: [{text: We are open 9 to 5.}]
  utter_email_help: [{text: Let me help you with your email address.}]
flows:
  track_order:
    intents: [track_order]
    steps:
      - ask: order_id
        validate: {regex: 'PX-\d{6}'}
        retries: 1
        on_fail: handoff
      - reply: utter_order_status
  newsletter:
    intents: [subscribe]
    steps:
      - ask: email
        validate: {regex: '[^@ ]+@[^@ ]+\.[a-z]+'}
        retries: 0
        on_fail: end
      - reply: utter_subscribed
  newsletter_help:
    intents: [subscribe_help]
    steps:
      - ask: email
        validate: {regex: '[^@ ]+@[^@ ]+\.[a-z]+'}
        retries: 0
        on_fail: email_help
      - reply: utter_subscribed
  email_help:
    steps:
      - reply: utter_email_help
  shirt:
    intents: [buy_shirt]
    steps:
      - ask: shirt_size
      - ask: quantity
      - ask: gift
      - reply: utter_shirt_summary
  hours:
    intents: [ask_hours]
    steps:
      - reply: utter_hours
"""


def test_a_slot_is_asked_validated_by_regex_and_used_in_the_reply() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: a valid order number
    steps:
      - user: where is my order?
        intent: track_order
      - bot: What is your order number?
      - user: PX-100234
      - slots: {order_id: PX-100234}
      - bot: Order PX-100234 has shipped.
      - status: bot
  - name: a wrong number, then a right one
    steps:
      - user: where is my order?
        intent: track_order
      - bot: utter_ask_order_id
      - user: "12"
      - bot: {response: utter_invalid_order_id}
      - bot: What is your order number?
      - slots: {order_id: null}
      - user: PX-100234
      - bot: {contains: has shipped}
""",
    )


def test_retries_exhausted_hand_off_or_end_the_flow() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: two wrong order numbers hand off
    steps:
      - user: where is my order?
        intent: track_order
      - bot: What is your order number?
      - user: no idea
      - bot: utter_invalid_order_id
      - bot: utter_ask_order_id
      - user: still no idea
      - bot: "I'm connecting you with a person from our team. Please hold on."
      - status: waiting_for_agent
  - name: on_fail end stops asking
    steps:
      - user: subscribe me
        intent: subscribe
      - bot: Which email should we write to?
      - user: not telling
      - bot: {contains: look like a valid email}
      - status: bot
      - slots: {email: null}
      - user: what are your hours?
        intent: ask_hours
      - bot: We are open 9 to 5.
  - name: on_fail a flow starts that flow
    steps:
      - user: subscribe me
        intent: subscribe_help
      - bot: utter_ask_email
      - user: not telling
      - bot: Let me help you with your email address.
""",
    )


def test_on_fail_end_tells_the_customer_the_answer_was_not_accepted() -> None:
    engine = make_engine(ORDERS)
    converse = engine_converse(engine)
    say(converse, "s", "subscribe me", intent="subscribe")
    assert say(converse, "s", "not telling") != []


def test_categorical_number_and_bool_answers_are_coerced() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: words become the slot types
    steps:
      - user: I want a shirt
        intent: buy_shirt
      - bot: {text: "Which size?", buttons: [Small, Large]}
      - user: a LARGE one please
      - slots: {shirt_size: large}
      - bot: How many?
      - user: 2 please
      - slots: {quantity: 2}
      - bot: Is it a gift?
      - user: yeah
      - bot: "2 large shirt(s), gift: yes."
      - slots: {gift: true}
  - name: values the types reject are asked again
    steps:
      - user: I want a shirt
        intent: buy_shirt
      - bot: Which size?
      - user: extra huge
      - bot: {contains: valid shirt size}
      - bot: Which size?
      - user: medium
      - bot: How many?
      - user: "12"
      - bot: {contains: valid quantity}
      - bot: How many?
      - user: one, I mean 1
      - bot: Is it a gift?
      - user: maybe
      - bot: {contains: valid gift}
      - bot: Is it a gift?
      - user: nope
      - slots: {shirt_size: medium, quantity: 1, gift: false}
      - bot: "1 medium shirt(s), gift: no."
""",
    )


def test_button_payloads_carry_intent_and_entities() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: a size button fills the slot being asked
    steps:
      - user: {payload: /buy_shirt, text: Buy a shirt}
      - bot: Which size?
      - user: {payload: '/choose{"shirt_size": "small"}', text: Small}
        intent: choose
        entities: [{entity: shirt_size, value: small}]
      - slots: {shirt_size: small}
      - bot: How many?
  - name: a payload with an order number skips the question
    steps:
      - user: {payload: '/track_order{"order_id": "PX-555555"}'}
      - bot: Order PX-555555 has shipped.
""",
    )


def test_an_entity_fills_its_slot_on_any_message() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: the order number comes with the question
    steps:
      - user: where is PX-100234?
        intent: track_order
        entities: [{entity: order_id, value: PX-100234}]
      - slots: {order_id: PX-100234}
      - bot: Order PX-100234 has shipped.
  - name: an entity on an unrelated message is kept for later
    steps:
      - user: my email is ann@example.com, what are your hours?
        intent: ask_hours
        entities: [{entity: email, value: ann@example.com}]
      - bot: We are open 9 to 5.
      - slots: {email: ann@example.com}
      - user: subscribe me
        intent: subscribe
      - bot: Subscribed ann@example.com.
""",
    )


def test_a_digression_runs_another_flow_then_the_first_asks_again() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: opening hours in the middle of tracking
    steps:
      - user: where is my order?
        intent: track_order
      - bot: What is your order number?
      - user: wait, when are you open?
        intent: ask_hours
      - bot: We are open 9 to 5.
      - bot: What is your order number?
      - slots: {order_id: null}
      - user: PX-100234
      - bot: Order PX-100234 has shipped.
      - status: bot
""",
    )


def test_a_digression_does_not_count_as_a_wrong_answer() -> None:
    """Two digressions and one wrong answer stay under ``retries: 1``."""
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: digressions are not retries
    steps:
      - user: where is my order?
        intent: track_order
      - bot: utter_ask_order_id
      - user: hours?
        intent: ask_hours
      - bot: utter_hours
      - bot: utter_ask_order_id
      - user: hours again?
        intent: ask_hours
      - bot: utter_hours
      - bot: utter_ask_order_id
      - user: "123"
      - bot: utter_invalid_order_id
      - bot: utter_ask_order_id
      - user: PX-100234
      - bot: utter_order_status
""",
    )


def test_an_entity_that_fails_validation_is_asked_again() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: a wrong order number given as an entity
    steps:
      - user: where is my order?
        intent: track_order
      - bot: utter_ask_order_id
      - user: it is 12345
        intent: inform
        entities: [{entity: order_id, value: "12345"}]
      - bot: utter_invalid_order_id
      - bot: utter_ask_order_id
      - slots: {order_id: null}
""",
    )


def test_a_prefilled_slot_is_validated_when_the_flow_reaches_it() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: a wrong order number in the first message
    steps:
      - user: where is order 12345?
        intent: track_order
        entities: [{entity: order_id, value: "12345"}]
      - bot: utter_invalid_order_id
      - bot: utter_ask_order_id
""",
    )


def test_a_digression_into_a_flow_that_asks_returns_afterwards() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: buying a shirt while asked for an order number
    steps:
      - user: where is my order?
        intent: track_order
      - bot: utter_ask_order_id
      - user: actually, I want a shirt first
        intent: buy_shirt
      - bot: Which size?
      - user: small
      - bot: How many?
      - user: "1"
      - bot: Is it a gift?
      - user: no
      - bot: "1 small shirt(s), gift: no."
      - bot: What is your order number?
      - user: PX-100234
      - bot: utter_order_status
""",
    )


VALIDATE = """
name: validate
nlu: {model: validate-nlu}
slots:
  city: {type: text}
  guests: {type: number}
  photo: {type: any, mappings: [{type: from_image}]}
responses:
  utter_booked: [{text: "Table for {guests} in {city}."}]
  utter_ask_photo: [{text: Please send a photo.}]
  utter_photo: [{text: Got your photo.}]
flows:
  book:
    intents: [book]
    steps:
      - ask: city
        validate: {choices: [Paris, Lyon]}
      - ask: guests
        validate: {min: 1, max: 8}
      - reply: utter_booked
  photo:
    intents: [send_photo]
    steps:
      - ask: photo
      - reply: utter_photo
"""


def test_choices_and_number_bounds_validate_answers() -> None:
    assert_stories(
        make_engine(VALIDATE),
        """
stories:
  - name: a city from the list, normalised; guests within bounds
    steps:
      - user: book a table
        intent: book
      - bot: What is your city?
      - user: berlin
      - bot: {contains: valid city}
      - bot: What is your city?
      - user: paris
      - slots: {city: Paris}
      - bot: What is your guests?
      - user: "9"
      - bot: {contains: valid guests}
      - bot: What is your guests?
      - user: "4"
      - bot: Table for 4 in Paris.
""",
    )


def test_an_uploaded_image_fills_a_from_image_slot() -> None:
    assert_stories(
        make_engine(VALIDATE),
        """
stories:
  - name: a photo answers the question
    steps:
      - user: I have a photo for you
        intent: send_photo
      - bot: Please send a photo.
      - user: {image: parcel.jpg}
      - slots: {photo: parcel.jpg}
      - bot: Got your photo.
""",
        files={"parcel.jpg": b"jpg"},
    )


# --- branches, links, set --------------------------------------------------------------------

REFUNDS = """
name: refunds
nlu: {model: refunds-nlu}
slots:
  amount: {type: number}
  country: {type: text}
  coupon: {type: text}
  method: {type: text}
  refund_done: {type: bool}
  escalated: {type: bool}
responses:
  utter_ask_amount: [{text: "How much should we refund?"}]
  utter_refund_review: [{text: "{amount} is a lot; a colleague will review it."}]
  utter_refund_eu: [{text: EU refunds take 14 days.}]
  utter_refund_coupon: [{text: "Your coupon {coupon} is cancelled."}]
  utter_refund_card: [{text: Back on your card in 3 days.}]
  utter_refund_standard: [{text: Refund on its way.}]
  utter_refund_done: [{text: "Refund of {amount} noted."}]
  utter_escalated: [{text: Escalated to the refunds team.}]
flows:
  refund:
    intents: [refund]
    steps:
      - ask: amount
      - if:
          - slot: amount
            above: 100
            then:
              - reply: utter_refund_review
              - link: escalate
          - slot: country
            in: [FR, DE]
            then: [{reply: utter_refund_eu}]
          - slot: coupon
            is_set: true
            then: [{reply: utter_refund_coupon}]
          - slot: method
            equals: card
            then: [{reply: utter_refund_card}]
        else:
          - reply: utter_refund_standard
      - set: {refund_done: true}
      - reply: utter_refund_done
  escalate:
    steps:
      - set: {escalated: true}
      - reply: utter_escalated
"""


def test_branches_on_slot_values_link_and_set() -> None:
    assert_stories(
        make_engine(REFUNDS),
        """
stories:
  - name: above 100 links to the escalation flow
    steps:
      - user: I want a refund
        intent: refund
      - bot: How much should we refund?
      - user: "150"
      - bot: 150 is a lot; a colleague will review it.
      - bot: Escalated to the refunds team.
      - slots: {amount: 150, escalated: true, refund_done: null}
  - name: a country in the list
    steps:
      - user: refund please, I live in France
        intent: refund
        entities: [{entity: country, value: FR}]
      - bot: utter_ask_amount
      - user: "20"
      - bot: EU refunds take 14 days.
      - bot: Refund of 20 noted.
      - slots: {refund_done: true, escalated: null}
  - name: a slot that is set
    steps:
      - user: refund my coupon order
        intent: refund
        entities: [{entity: coupon, value: SAVE10}]
      - bot: utter_ask_amount
      - user: "20"
      - bot: Your coupon SAVE10 is cancelled.
      - bot: utter_refund_done
  - name: equals ignores case
    steps:
      - user: refund to my card
        intent: refund
        entities: [{entity: method, value: Card}]
      - bot: utter_ask_amount
      - user: "5.5"
      - bot: Back on your card in 3 days.
      - bot: Refund of 5.5 noted.
  - name: else
    steps:
      - user: refund
        intent: refund
      - bot: utter_ask_amount
      - user: "100"
      - bot: Refund on its way.
      - bot: Refund of 100 noted.
      - slots: {refund_done: true}
""",
    )


# --- fallback and handoff --------------------------------------------------------------------

SMALLTALK = """
name: smalltalk
nlu: {model: smalltalk-nlu, threshold: 0.5}
slots:
  name: {type: text}
responses:
  utter_greet: [{text: Hi!}]
  utter_rephrase_1: [{text: "Sorry, say that again?"}]
  utter_rephrase_2: [{text: I still don't follow.}]
  utter_human: [{text: A person will take over now.}]
  utter_back: [{text: The bot is back.}]
flows:
  greet:
    intents: [greet]
    steps: [{reply: utter_greet}]
handoff:
  intents: [human]
"""


def test_fallback_asks_to_rephrase_then_hands_off() -> None:
    assert_stories(
        make_engine(SMALLTALK),
        f"""
stories:
  - name: two misses in a row hand off
    steps:
      - user: blorp
      - bot: "{DEFAULT_FALLBACK}"
      - status: bot
      - user: blorp blorp
      - bot: "{DEFAULT_HANDOFF}"
      - status: waiting_for_agent
  - name: an understood message resets the count
    steps:
      - user: blorp
      - bot: {{contains: rephrase}}
      - user: hello
        intent: greet
      - bot: Hi!
      - user: blorp
      - bot: {{contains: rephrase}}
      - status: bot
""",
    )


def test_fallback_responses_and_handoff_after_are_configurable() -> None:
    bot = (
        SMALLTALK
        + """
fallback:
  responses: [utter_rephrase_1, utter_rephrase_2]
  handoff_after: 3
"""
    )
    assert_stories(
        make_engine(bot),
        """
stories:
  - name: responses in turn, then a handoff
    steps:
      - user: blorp
      - bot: Sorry, say that again?
      - user: blorp
      - bot: I still don't follow.
      - user: blorp
      - status: waiting_for_agent
      - bot: {contains: connecting you}
""",
    )


def test_low_confidence_and_out_of_scope_are_fallbacks() -> None:
    engine = make_engine(SMALLTALK)
    tracker = engine.new_tracker("c1", "s1")
    low = {"intent": {"name": "greet", "confidence": 0.3}, "entities": []}
    out = asyncio.run(engine.handle(tracker, UserMessage(text="hey?", parse=Parse.of(low))))
    assert [m.text for m in out] == [DEFAULT_FALLBACK]
    high = {"intent": {"name": "greet", "confidence": 0.9}, "entities": []}
    out = asyncio.run(engine.handle(tracker, UserMessage(text="hello", parse=Parse.of(high))))
    assert [m.text for m in out] == ["Hi!"]
    oos = {**high, "out_of_scope": True}
    out = asyncio.run(engine.handle(tracker, UserMessage(text="weather?", parse=Parse.of(oos))))
    assert [m.text for m in out] == [DEFAULT_FALLBACK]


def test_a_handoff_intent_waits_for_an_agent_silently_until_released() -> None:
    engine = make_engine(SMALLTALK)
    converse = engine_converse(engine)
    assert say(converse, "s", "hello", intent="greet") == ["Hi!"]
    assert say(converse, "s", "a human please", intent="human") == [DEFAULT_HANDOFF]
    tracker = converse.trackers["s"]
    assert tracker.status == "waiting_for_agent"
    assert say(converse, "s", "hello?", intent="greet") == []
    assert say(converse, "s", "anyone?") == []
    assert tracker.status == "waiting_for_agent"
    released = engine.release(tracker)
    assert [m.text for m in released] == [DEFAULT_RELEASED]
    assert tracker.status == "bot"
    assert say(converse, "s", "hello", intent="greet") == ["Hi!"]
    assert engine.release(tracker) == []  # already with the bot


def test_a_released_conversation_starts_counting_fallbacks_again() -> None:
    engine = make_engine(SMALLTALK)
    converse = engine_converse(engine)
    assert say(converse, "s", "blorp") == [DEFAULT_FALLBACK]
    assert say(converse, "s", "blorp") == [DEFAULT_HANDOFF]
    engine.release(converse.trackers["s"])
    assert say(converse, "s", "blorp") == [DEFAULT_FALLBACK]


def test_handoff_and_released_responses_are_configurable() -> None:
    bot = SMALLTALK.replace(
        "handoff:\n  intents: [human]",
        "handoff:\n  intents: [human]\n  response: utter_human\n  released_response: utter_back",
    )
    engine = make_engine(bot)
    converse = engine_converse(engine)
    assert say(converse, "s", "agent!", intent="human") == ["A person will take over now."]
    assert [m.text for m in engine.release(converse.trackers["s"])] == ["The bot is back."]


def test_a_handoff_in_the_middle_of_a_flow_ends_it() -> None:
    assert_stories(
        make_engine(ORDERS + "handoff: {intents: [human]}\n"),
        """
stories:
  - name: asking for a person while asked for an order number
    steps:
      - user: where is my order?
        intent: track_order
      - bot: utter_ask_order_id
      - user: let me talk to a human
        intent: human
      - status: waiting_for_agent
      - bot: {contains: connecting you}
""",
    )


# --- restart and sessions --------------------------------------------------------------------


def test_restart_forgets_slots_and_flows() -> None:
    assert_stories(
        make_engine(ORDERS),
        """
stories:
  - name: /restart in the middle of a flow
    steps:
      - user: I want a shirt
        intent: buy_shirt
      - bot: Which size?
      - user: large
      - slots: {shirt_size: large}
      - bot: How many?
      - user: /restart
      - bot: Let's start over. How can I help?
      - slots: {shirt_size: null}
      - user: "3"
      - bot: {contains: rephrase}
  - name: a restart button
    steps:
      - user: where is PX-100234?
        intent: track_order
        entities: [{entity: order_id, value: PX-100234}]
      - bot: utter_order_status
      - user: {payload: /restart, text: Start over}
      - bot: {contains: start over}
      - slots: {order_id: null}
""",
    )


def test_start_session_resets_or_carries_over_slots() -> None:
    for carry, expected in ((False, None), (True, "PX-100234")):
        bot = ORDERS + f"session: {{carry_over_slots: {str(carry).lower()}}}\n"
        engine = make_engine(bot)
        converse = engine_converse(engine)
        say(converse, "s", "where is my order?", intent="track_order")
        tracker = converse.trackers["s"]
        assert tracker.active_flow == "track_order"
        assert say(converse, "s", "PX-100234") == ["Order PX-100234 has shipped."]
        say(converse, "s", "I want a shirt", intent="buy_shirt")
        assert tracker.active_flow == "shirt"
        engine.start_session(tracker)
        assert tracker.active_flow is None
        assert tracker.slots["order_id"] == expected
        assert tracker.events[-1].event == "session_started"
        assert say(converse, "s", "large") == [DEFAULT_FALLBACK]  # no flow asks any more


# --- responses -------------------------------------------------------------------------------

GREETER = """
name: greeter
nlu: {model: greeter-nlu}
slots:
  vip: {type: bool}
  customer_name:
    type: text
    mappings: [{type: from_entity, entity: person}]
  plan:
    type: categorical
    values: [basic, pro]
    mappings: [{type: from_intent, intent: upgrade, value: pro}]
responses:
  utter_greet:
    - text: "Welcome back, {customer_name}!"
      condition: [{name: vip, value: true}]
    - text: "Hello {customer_name}, I'm {bot_name}."
  utter_plan:
    - text: You are on the pro plan.
      condition: [{name: plan, value: pro}]
    - text: You are on the basic plan.
      buttons: [{title: Upgrade, payload: /upgrade}]
flows:
  greet:
    intents: [greet]
    steps: [{reply: utter_greet}]
  plan:
    intents: [ask_plan, upgrade]
    steps: [{reply: utter_plan}]
  make_vip:
    intents: [vip]
    steps: [{set: {vip: true}}, {reply: utter_greet}]
"""


def test_response_variants_follow_slot_conditions_and_fill_templates() -> None:
    assert_stories(
        make_engine(GREETER),
        """
stories:
  - name: plain, then the VIP variant
    steps:
      - user: hi, I'm Ann
        intent: greet
        entities: [{entity: person, value: Ann}]
      - bot: Hello Ann, I'm greeter.
      - user: make me a VIP
        intent: vip
      - slots: {vip: true, customer_name: Ann}
      - bot: Welcome back, Ann!
  - name: from_intent fills a slot and picks the variant
    steps:
      - user: which plan am I on?
        intent: ask_plan
      - bot: {text: You are on the basic plan., buttons: [Upgrade]}
      - user: {payload: /upgrade, text: Upgrade}
      - slots: {plan: pro}
      - bot: {response: utter_plan, text: You are on the pro plan.}
""",
    )


# --- actions ---------------------------------------------------------------------------------

ACTIONS = """
name: actions
nlu: {model: actions-nlu}
action_server: {url: "http://actions.invalid/webhook"}
max_actions_per_turn: 6
slots:
  order_id: {type: text}
  status: {type: text}
  email: {type: text}
responses:
  utter_ask_order_id: [{text: "Your order number?"}]
  utter_status: [{text: "Order {order_id} is {status}."}]
  utter_anything_else: [{text: "Anything else?"}]
  utter_lookup_failed: [{text: Our order system is down; try again later.}]
  utter_hi: [{text: Hi!}]
  utter_ask_email: [{text: "Your email?"}]
  utter_thanks: [{text: "Thanks, {email}."}]
flows:
  track:
    intents: [track_order]
    steps:
      - ask: order_id
      - action: action_lookup_order
      - reply: utter_status
  loop:
    intents: [loop]
    steps: [{action: action_again}]
  greet:
    intents: [greet]
    steps: [{reply: utter_hi}]
  contact:
    intents: [contact]
    steps:
      - ask: email
        validate: {action: validate_email}
      - reply: utter_thanks
"""


LONG_FLOW = """
name: long
nlu: {model: long-nlu}
slots:
  size: {type: text}
  colour: {type: text}
  fit: {type: text}
  gift: {type: bool}
  express: {type: bool}
  checked: {type: bool}
responses:
  utter_gift: [{text: We will wrap it.}]
  utter_standard: [{text: Standard delivery.}]
  utter_summary: [{text: "A {colour} {fit} shirt in {size}."}]
flows:
  order:
    intents: [order]
    steps:
      - ask: size
      - ask: colour
      - ask: fit
      - ask: gift
      - if:
          - {slot: gift, equals: true, then: [{reply: utter_gift}]}
      - set: {checked: true}
      - if:
          - {slot: express, equals: true, then: [{set: {express: true}}]}
        else: [{reply: utter_standard}]
      - reply: utter_summary
"""


def test_a_long_flow_without_actions_is_not_cut_off() -> None:
    assert_stories(
        make_engine(LONG_FLOW),
        """
stories:
  - name: everything in the first message
    steps:
      - user: a large blue slim shirt as a gift
        intent: order
        entities:
          - {entity: size, value: large}
          - {entity: colour, value: blue}
          - {entity: fit, value: slim}
          - {entity: gift, value: true}
      - bot: We will wrap it.
      - bot: Standard delivery.
      - bot: A blue slim shirt in large.
""",
    )


def lookup(tracker: Tracker, _: list[dict[str, Any]]) -> ActionResult:
    order = tracker.slots.get("order_id")
    if order == "PX-000000":
        return ActionResult(error="HTTP 503", error_response="utter_lookup_failed")
    if order == "PX-999999":
        return ActionResult(error="timeout")
    return ActionResult(
        events=[
            {"event": "slot", "name": "status", "value": "shipped"},
            {"event": "followup", "name": "utter_anything_else"},
        ],
        responses=[{"text": "Looking it up..."}],
    )


def validate_email(_: Tracker, candidate: list[TrackerEvent]) -> ActionResult:
    (slot,) = candidate
    assert isinstance(slot, SlotEvent)
    value = slot.value
    ok = isinstance(value, str) and value.endswith("@example.com")
    events = [{"event": "slot", "name": "email", "value": value.lower() if ok else None}]
    return ActionResult(events=events)


def action_engine() -> tuple[DialogEngine, FakeRunner]:
    runner = FakeRunner(
        {
            "action_lookup_order": lookup,
            "action_again": ActionResult(events=[{"event": "followup", "name": "action_again"}]),
            "validate_email": validate_email,
        }
    )
    return make_engine(ACTIONS, runner), runner


def test_an_action_sets_slots_sends_messages_and_follows_up() -> None:
    engine, runner = action_engine()
    assert_stories(
        engine,
        """
stories:
  - name: a lookup
    steps:
      - user: track my order
        intent: track_order
      - bot: Your order number?
      - user: PX-100234
      - bot: Looking it up...
      - bot: {response: utter_anything_else}
      - bot: Order PX-100234 is shipped.
      - slots: {status: shipped}
""",
    )
    assert runner.calls == ["action_lookup_order"]


def test_a_failed_action_sends_its_error_response_and_ends_the_flow() -> None:
    engine, _ = action_engine()
    assert_stories(
        engine,
        f"""
stories:
  - name: the action's error response
    steps:
      - user: track my order
        intent: track_order
      - bot: utter_ask_order_id
      - user: PX-000000
      - bot: Our order system is down; try again later.
      - slots: {{status: null}}
      - user: hi
        intent: greet
      - bot: Hi!
  - name: the default apology
    steps:
      - user: track my order
        intent: track_order
      - bot: utter_ask_order_id
      - user: PX-999999
      - bot: "{DEFAULT_ERROR}"
      - user: PX-100234
      - bot: {{contains: rephrase}}
""",
    )


def test_an_action_that_follows_up_itself_is_stopped_and_the_bot_still_answers() -> None:
    engine, runner = action_engine()
    assert_stories(
        engine,
        f"""
stories:
  - name: a runaway action
    steps:
      - user: loop
        intent: loop
      - bot: "{DEFAULT_ERROR}"
      - status: bot
      - user: hi
        intent: greet
      - bot: Hi!
""",
    )
    assert 1 < len(runner.calls) <= engine.bot.max_actions_per_turn
    converse = engine_converse(engine)
    say(converse, "s", "loop", intent="loop")
    tracker = converse.trackers["s"]
    assert tracker.active_flow is None
    assert any(e.event == "action_failed" for e in tracker.events)


def test_a_validation_action_accepts_normalises_or_rejects() -> None:
    engine, runner = action_engine()
    assert_stories(
        engine,
        """
stories:
  - name: rejected, then accepted and normalised
    steps:
      - user: contact me
        intent: contact
      - bot: Your email?
      - user: ann@elsewhere.org
      - bot: {contains: valid email}
      - bot: Your email?
      - user: Ann@example.com
      - bot: Thanks, ann@example.com.
""",
    )
    assert runner.calls == ["validate_email", "validate_email"]


# --- vision ----------------------------------------------------------------------------------

VISION = r"""
name: parcels
nlu: {model: parcels-nlu}
slots:
  order_id: {type: text}
  damaged: {type: bool}
responses:
  utter_ask_order_id: [{text: "What is your order number?"}]
  utter_order_status: [{text: "Order {order_id} has shipped."}]
  utter_damaged: [{text: Sorry it arrived damaged; a replacement is on its way.}]
  utter_not_damaged: [{text: "The parcel looks fine to me. What is wrong with it?"}]
  utter_send_photo: [{text: Please send a photo of the parcel.}]
vision:
  - name: label
    model: prebuilt-ocr
    intent: track_order
    slots: [{slot: order_id, regex: 'PX-\d{6}'}]
  - name: damage
    model: damage-classifier
    slots: [{slot: damaged, label: damaged, min_probability: 0.8}]
flows:
  track_order:
    intents: [track_order]
    steps:
      - ask: order_id
        validate: {regex: 'PX-\d{6}'}
      - reply: utter_order_status
  damage:
    intents: [report_damage]
    steps:
      - if:
          - slot: damaged
            is_set: true
            then:
              - if:
                  - {slot: damaged, equals: true, then: [{reply: utter_damaged}]}
                else: [{reply: utter_not_damaged}]
        else: [{reply: utter_send_photo}]
"""

LABEL = VisionResult(
    "label", "prebuilt-ocr", Seen.of({"text": "SHIP TO: Ann Lee\nREF PX-100234\n2 KG", "lines": []})
)
BROKEN = VisionResult(
    "damage",
    "damage-classifier",
    Seen(
        probabilities=[
            {"label": "damaged", "probability": 0.9},
            {"label": "ok", "probability": 0.1},
        ]
    ),
)
FINE = VisionResult(
    "damage",
    "damage-classifier",
    Seen(
        probabilities=[
            {"label": "ok", "probability": 0.7},
            {"label": "damaged", "probability": 0.3},
        ]
    ),
)


def test_an_ocr_result_fills_a_slot_and_triggers_the_step_intent() -> None:
    assert_stories(
        make_engine(VISION),
        """
stories:
  - name: a photo of the label alone tracks the order
    steps:
      - user: {image: label.png}
      - slots: {order_id: PX-100234}
      - bot: Order PX-100234 has shipped.
  - name: a photo of the label answers the question
    steps:
      - user: where is my parcel?
        intent: track_order
      - bot: What is your order number?
      - user: {image: label.png, text: here is the label}
      - bot: Order PX-100234 has shipped.
  - name: a label without a number
    steps:
      - user: {image: blank.png}
      - slots: {order_id: null}
      - bot: {contains: rephrase}
""",
        files={"label.png": b"png-bytes", "blank.png": b"png-bytes"},
        vision={
            "label.png": [LABEL],
            "blank.png": [VisionResult("label", "prebuilt-ocr", Seen(text="FRAGILE"))],
        },
    )


def test_a_classifier_result_fills_a_bool_slot() -> None:
    assert_stories(
        make_engine(VISION),
        """
stories:
  - name: a damaged parcel
    steps:
      - user: {image: broken.jpg, text: my parcel arrived like this}
        intent: report_damage
      - slots: {damaged: true}
      - bot: Sorry it arrived damaged; a replacement is on its way.
  - name: a parcel below the threshold is not damaged
    steps:
      - user: {image: fine.jpg, text: my parcel arrived like this}
        intent: report_damage
      - slots: {damaged: false}
      - bot: utter_not_damaged
  - name: no photo
    steps:
      - user: my parcel is damaged
        intent: report_damage
      - bot: Please send a photo of the parcel.
""",
        files={"broken.jpg": b"jpg", "fine.jpg": b"jpg"},
        vision={"broken.jpg": [BROKEN], "fine.jpg": [FINE]},
    )


def test_vision_results_are_recorded_in_the_tracker() -> None:
    engine = make_engine(VISION)
    converse = engine_converse(engine, vision={"label.png": [LABEL]})
    turn = UserTurn(image="label.png", image_bytes=b"png")
    reply = asyncio.run(converse("s", turn))
    assert reply.messages == [OutboundMessage(text="Order PX-100234 has shipped.")]
    seen = [e.to_dict() for e in converse.trackers["s"].events if e.event == "vision"]
    assert seen == [
        {**seen[0], "name": "label", "model": "prebuilt-ocr", "result": LABEL.result.to_dict()}
    ]
    user = next(e.to_dict() for e in converse.trackers["s"].events if e.event == "user")
    assert user["attachments"][0]["upload_id"] == "label.png"


# --- stories (memoization) -------------------------------------------------------------------

MOODBOT = """
name: moodbot
nlu: {model: mood-nlu}
responses:
  utter_greet: [{text: "Hey! How are you?"}]
  utter_cheer_up: [{text: "Here is something to cheer you up:", image: "https://example.com/tiger.jpg"}]
  utter_did_that_help: [{text: "Did that help you?"}]
  utter_happy: [{text: "Great, carry on!"}]
  utter_goodbye: [{text: Bye}]
  utter_newsletter_info: [{text: We send one email a month.}]
  utter_ask_subscribe: [{text: "Shall I subscribe you?"}]
  utter_subscribed: [{text: "Done, you are subscribed."}]
stories:
  - name: happy path
    steps:
      - intent: greet
      - action: utter_greet
      - intent: mood_great
      - action: utter_happy
  - name: sad path 1
    steps:
      - intent: greet
      - action: utter_greet
      - intent: mood_unhappy
      - action: utter_cheer_up
      - action: utter_did_that_help
      - intent: affirm
      - action: utter_happy
  - name: sad path 2
    steps:
      - intent: greet
      - action: utter_greet
      - intent: mood_unhappy
      - action: utter_cheer_up
      - action: utter_did_that_help
      - intent: deny
      - action: utter_goodbye
  - name: newsletter
    steps:
      - intent: newsletter_info
      - action: utter_newsletter_info
      - action: utter_ask_subscribe
      - intent: affirm
      - action: utter_subscribed
  - name: say goodbye
    steps:
      - intent: goodbye
      - action: utter_goodbye
"""


def test_stories_are_followed_and_the_same_intent_depends_on_the_context() -> None:
    assert_stories(
        make_engine(MOODBOT),
        """
stories:
  - name: unhappy, cheered up, it helped
    steps:
      - user: hello
        intent: greet
      - bot: Hey! How are you?
      - user: sad
        intent: mood_unhappy
      - bot: {text: "Here is something to cheer you up:", image: true}
      - bot: Did that help you?
      - user: yes
        intent: affirm
      - bot: Great, carry on!
  - name: unhappy, it did not help
    steps:
      - user: hello
        intent: greet
      - bot: utter_greet
      - user: sad
        intent: mood_unhappy
      - bot: utter_cheer_up
      - bot: utter_did_that_help
      - user: no
        intent: deny
      - bot: Bye
  - name: affirm after the newsletter question subscribes
    steps:
      - user: tell me about the newsletter
        intent: newsletter_info
      - bot: We send one email a month.
      - bot: Shall I subscribe you?
      - user: yes
        intent: affirm
      - bot: Done, you are subscribed.
  - name: a story can start in its middle
    steps:
      - user: I feel down
        intent: mood_unhappy
      - bot: utter_cheer_up
      - bot: utter_did_that_help
      - user: yes
        intent: affirm
      - bot: utter_happy
""",
    )


def test_an_intent_whose_stories_disagree_without_context_falls_back() -> None:
    assert_stories(
        make_engine(MOODBOT),
        """
stories:
  - name: an affirm out of any context falls back
    steps:
      - user: yes
        intent: affirm
      - bot: {contains: rephrase}
""",
    )
