"""The Rasa project import: moodbot and an order-form bot become Parley definitions, what
cannot carry over is listed with file and path, and broken files are refused with their line."""

from __future__ import annotations

from typing import Any

import pytest

from bot_gateway.conversations.definition import parse_definition
from bot_gateway.conversations.rasa_import import (
    NLU_PLACEHOLDER,
    InvalidRasaProject,
    RasaImport,
    import_rasa,
)
from core.errors import InvalidInput, LimitExceeded
from tests.support.rasa_bots import (
    MOODBOT_DOMAIN,
    MOODBOT_NLU,
    MOODBOT_RULES,
    MOODBOT_STORIES,
    ORDER_DOMAIN,
    ORDER_ENDPOINTS,
    ORDER_RULES,
    moodbot,
    order_bot,
)

MINI_DOMAIN = """\
version: "3.1"
intents: [greet, goodbye, check, inform]
slots:
  paid:
    type: bool
    mappings:
    - type: from_intent
      intent: inform
      value: true
responses:
  utter_greet:
  - text: Hello
  utter_goodbye:
  - text: Bye
  utter_paid:
  - text: It is paid.
  utter_unpaid:
  - text: It is not paid yet.
actions:
  - action_check_payment
"""
MINI_ENDPOINTS = "action_endpoint: {url: 'http://actions:5055/webhook'}\n"


def _import(**files: Any) -> RasaImport:
    files = {"domain": MINI_DOMAIN, "endpoints": MINI_ENDPOINTS, **files}
    return import_rasa(name=files.pop("name", "bot"), **files)


def _problem(error: InvalidRasaProject) -> dict[str, Any]:
    assert len(error.details["errors"]) == 1, error.details["errors"]
    return error.details["errors"][0]


# --- moodbot ---------------------------------------------------------------------------------


def test_moodbot_becomes_a_valid_definition_with_nothing_left_out() -> None:
    result = import_rasa(**moodbot())

    bot = parse_definition(result.definition)
    assert result.unsupported == []
    assert result.nlu_yaml == MOODBOT_NLU
    assert bot.nlu.dataset == NLU_PLACEHOLDER
    assert bot.responses["utter_greet"][0].buttons[1].payload == "/mood_unhappy"
    assert bot.responses["utter_cheer_up"][0].image == "https://i.imgur.com/nGF1K8f.jpg"
    assert bot.session.expiry_minutes == 60 and bot.session.carry_over_slots is True


def test_moodbot_rules_become_reply_flows_on_their_intent() -> None:
    flows = import_rasa(**moodbot()).definition["flows"]

    assert flows == {
        "rule_say_goodbye_anytime": {
            "description": "Rasa rule: Say goodbye anytime",
            "intents": ["goodbye"],
            "steps": [{"reply": "utter_goodbye"}],
            "from_rule": True,
        },
        "rule_say_i_am_a_bot_anytime": {
            "description": "Rasa rule: Say 'I am a bot' anytime",
            "intents": ["bot_challenge"],
            "steps": [{"reply": "utter_iamabot"}],
            "from_rule": True,
        },
    }


def test_moodbot_stories_are_kept_step_by_step() -> None:
    stories = import_rasa(**moodbot()).definition["stories"]

    assert [s["name"] for s in stories] == ["happy path", "sad path 1", "sad path 2"]
    assert stories[2]["steps"] == [
        {"intent": "greet"},
        {"action": "utter_greet"},
        {"intent": "mood_unhappy"},
        {"action": "utter_cheer_up"},
        {"action": "utter_did_that_help"},
        {"intent": "deny"},
        {"action": "utter_goodbye"},
    ]


# --- the order-form bot ------------------------------------------------------------------------


def test_order_form_becomes_a_flow_of_asks_then_the_submission() -> None:
    result = import_rasa(**order_bot())
    parse_definition(result.definition)
    flow = result.definition["flows"]["order_form"]

    assert flow["intents"] == ["order"]
    assert flow["steps"] == [
        {
            "ask": "order_id",
            "response": "utter_ask_order_id",
            "validate": {"action": "validate_order_form"},
        },
        {  # Rasa prefers the form's own question to the slot's
            "ask": "email",
            "response": "utter_ask_order_form_email",
            "validate": {"action": "validate_order_form"},
        },
        {"action": "action_submit_order"},
        {"reply": "utter_submitted"},
    ]


def test_order_bot_slots_actions_and_session() -> None:
    definition = import_rasa(**order_bot()).definition

    assert definition["action_server"] == {
        "url": "http://localhost:5055/webhook",
        "actions": ["validate_order_form", "action_submit_order"],
    }
    assert definition["slots"]["order_id"]["mappings"] == [
        {"type": "from_entity", "entity": "order_id"},
        {
            "type": "from_text",
            "conditions": [{"active_loop": "order_form", "requested_slot": "order_id"}],
        },
    ]
    assert definition["slots"]["vip"] == {
        "type": "bool",
        "initial_value": False,
        "influence_conversation": True,
        "mappings": [{"type": "from_intent", "intent": "order", "value": True}],
    }
    assert definition["session"] == {"expiry_minutes": 30, "carry_over_slots": False}
    assert definition["responses"]["utter_greet"] == [{"text": "Hi! I can take your order."}]
    assert definition["flows"]["rule_greet"]["intents"] == ["greet"]


def test_order_bot_lists_what_it_left_out_with_file_and_path() -> None:
    assert import_rasa(**order_bot()).unsupported == [
        "domain.yml responses.utter_greet[1]: channel-specific variant (`slack`) is not "
        "supported; skipped",
        'rules.yml rules[2] ("greet a vip"): condition `slot_was_set` is not supported; '
        "the rule was skipped",
    ]


def test_a_rule_that_replies_before_starting_the_form_links_to_it() -> None:
    rules = """\
rules:
- rule: order with intro
  steps:
  - intent: order
  - action: utter_greet
  - action: order_form
  - active_loop: order_form
"""
    result = import_rasa(name="x", domain=ORDER_DOMAIN, rules=rules, endpoints=ORDER_ENDPOINTS)

    parse_definition(result.definition)
    assert result.definition["flows"]["rule_order_with_intro"]["steps"] == [
        {"reply": "utter_greet"},
        {"link": "order_form"},
    ]
    assert result.definition["flows"]["order_form"]["intents"] == []
    assert not any("no rule starts the form" in n for n in result.unsupported)


def test_custom_actions_without_an_action_endpoint_are_left_out_step_by_step() -> None:
    bot = order_bot()
    del bot["endpoints"]
    result = import_rasa(**bot)

    parse_definition(result.definition)
    assert "action_server" not in result.definition
    steps = result.definition["flows"]["order_form"]["steps"]
    assert steps[0] == {"ask": "order_id", "response": "utter_ask_order_id"}
    assert steps[2:] == [{"reply": "utter_submitted"}]
    notes = "\n".join(result.unsupported)
    assert "custom actions `validate_order_form`, `action_submit_order` need an action" in notes
    assert (
        'rules.yml rules[1].steps[3] ("submit order form"): `action_submit_order`: the custom '
        "action needs an action server"
    ) in notes
    assert "`validate_order_form` needs an action server; answers are not validated" in notes


# --- rules -------------------------------------------------------------------------------------


def test_rules_for_one_intent_the_first_wins_and_the_second_is_noted() -> None:
    rules = """\
rules:
- rule: hello
  steps: [{intent: greet}, {action: utter_greet}]
- rule: hello again
  steps: [{intent: greet}, {action: utter_goodbye}]
"""
    result = _import(rules=rules)

    assert list(result.definition["flows"]) == ["rule_hello"]
    assert result.unsupported == [
        'rules.yml rules[1] ("hello again"): intent `greet` already starts `rule_hello` '
        "(rules.yml rules[0]); the first rule wins, this one was skipped for it"
    ]


def test_rules_that_differ_after_an_action_by_a_slot_merge_into_one_branching_flow() -> None:
    rules = """\
rules:
- rule: paid
  steps:
  - intent: check
  - action: action_check_payment
  - slot_was_set: [{paid: true}]
  - action: utter_paid
- rule: not paid
  steps:
  - intent: check
  - action: action_check_payment
  - slot_was_set: [{paid: false}]
  - action: utter_unpaid
"""
    result = _import(rules=rules)

    parse_definition(result.definition)
    assert result.definition["flows"] == {
        "rule_paid": {
            "description": "Rasa rule: paid",
            "intents": ["check"],
            "steps": [
                {"action": "action_check_payment"},
                {
                    "if": [
                        {"slot": "paid", "equals": True, "then": [{"reply": "utter_paid"}]},
                        {"slot": "paid", "equals": False, "then": [{"reply": "utter_unpaid"}]},
                    ]
                },
            ],
            "from_rule": True,
        }
    }
    assert result.unsupported == []


def test_a_rule_naming_an_unknown_response_is_refused_with_its_line() -> None:
    rules = """\
rules:
- rule: hello
  steps:
  - intent: greet
  - action: utter_hello
"""
    with pytest.raises(InvalidRasaProject) as caught:
        _import(rules=rules)

    problem = _problem(caught.value)
    assert problem == {
        "file": "rules.yml",
        "line": 5,
        "path": "rules[0].steps[1]",
        "message": 'unknown action or response "utter_hello"; add it to the domain\'s '
        "`responses` or `actions`",
    }
    assert "rules.yml line 5, rules[0].steps[1]" in caught.value.message


def test_or_of_intents_gives_a_flow_several_trigger_intents() -> None:
    rules = "rules:\n- rule: hi or bye\n  steps:\n  - or: [{intent: greet}, {intent: goodbye}]\n"
    rules += "  - action: utter_greet\n"

    flow = _import(rules=rules).definition["flows"]["rule_hi_or_bye"]

    assert flow["intents"] == ["greet", "goodbye"]


def test_rule_flavours_rasa_has_and_parley_has_not_are_noted() -> None:
    rules = """\
rules:
- rule: welcome
  conversation_start: true
  steps: [{intent: greet}, {action: utter_greet}]
- rule: two turns
  steps:
  - intent: goodbye
  - action: utter_goodbye
  - intent: greet
  - action: utter_greet
- rule: rephrase
  steps: [{intent: check}, {action: action_default_ask_rephrase}, {action: utter_paid}]
"""
    result = _import(rules=rules)

    parse_definition(result.definition)
    assert result.definition["flows"]["rule_welcome"]["intents"] == ["greet"]
    assert result.definition["flows"]["rule_rephrase"]["steps"] == [{"reply": "utter_paid"}]
    assert "rule_two_turns" not in result.definition["flows"]
    assert result.unsupported[:3] == [
        'rules.yml rules[0].conversation_start ("welcome"): `conversation_start: true` is not '
        "supported: the rule runs at any point of the conversation; imported anyway",
        'rules.yml rules[1].steps[2] ("two turns"): rules with more than one user turn are not '
        "supported; the rule was skipped",
        'rules.yml rules[2].steps[1] ("rephrase"): `action_default_ask_rephrase`: the Rasa '
        "default action has no Parley equivalent; the step was left out",
    ]


def test_the_nlu_fallback_rule_sets_the_fallback_responses() -> None:
    domain = MINI_DOMAIN.replace(
        "responses:\n", "responses:\n  utter_please_rephrase:\n  - text: Eh?\n"
    )
    rules = "rules:\n- rule: fallback\n  steps:\n  - intent: nlu_fallback\n"
    rules += "  - action: utter_please_rephrase\n"

    result = _import(domain=domain, rules=rules)

    assert result.definition["fallback"] == {"responses": ["utter_please_rephrase"]}
    assert result.definition["flows"] == {}


# --- stories -----------------------------------------------------------------------------------


def test_or_steps_expand_into_one_story_each_and_checkpoints_are_skipped() -> None:
    stories = """\
stories:
- story: greet then bye
  steps:
  - intent: greet
    entities: [{name: Ana}]
  - action: utter_greet
  - or:
    - intent: goodbye
    - intent: inform
  - slot_was_set: [{paid: true}]
  - action: utter_goodbye
- story: with a checkpoint
  steps:
  - checkpoint: start
  - intent: greet
  - action: utter_greet
"""
    result = _import(stories=stories)

    parse_definition(result.definition)
    stories_out = result.definition["stories"]
    assert [s["name"] for s in stories_out] == ["greet then bye (1)", "greet then bye (2)"]
    assert stories_out[1]["steps"] == [
        {"intent": "greet", "entities": [{"name": "Ana"}]},
        {"action": "utter_greet"},
        {"intent": "inform"},
        {"slot_was_set": [{"paid": True}]},
        {"action": "utter_goodbye"},
    ]
    assert result.unsupported == [
        'stories.yml stories[1].steps[0] ("with a checkpoint"): checkpoints are not supported; '
        "the story was skipped"
    ]


def test_a_story_that_runs_a_form_is_skipped_with_a_note() -> None:
    stories = """\
stories:
- story: order
  steps:
  - intent: order
  - action: order_form
  - active_loop: order_form
"""
    result = import_rasa(
        name="orders", domain=ORDER_DOMAIN, rules=ORDER_RULES, stories=stories, endpoints=None
    )

    assert result.definition["stories"] == []
    assert any(
        n.startswith('stories.yml stories[0].steps[1] ("order"): it runs the form')
        for n in result.unsupported
    )


# --- domain details ----------------------------------------------------------------------------


def test_domain_features_without_an_equivalent_are_noted() -> None:
    domain = """\
version: "3.1"
intents:
  - greet:
      use_entities: []
  - goodbye
slots:
  mood:
    type: categorical
    values: [yes, no, maybe]
    mappings:
    - type: from_trigger_intent
      intent: greet
      value: "yes"
    - type: custom
      action: action_mood
templates:
  utter_greet:
  - text: "Hello {name}"
    elements: []
responses:
  utter_goodbye:
  - text: Bye
rasa_pro: {}
"""
    result = import_rasa(name="x", domain=domain)

    parse_definition(result.definition)
    assert result.definition["slots"]["mood"] == {
        "type": "categorical",
        "values": ["yes", "no", "maybe"],  # YAML 1.2, as Rasa reads it: not booleans
        "mappings": [],
    }
    assert result.definition["slots"]["name"] == {"type": "any"}
    assert result.definition["responses"]["utter_greet"] == [{"text": "Hello {name}"}]
    assert result.unsupported == [
        "domain.yml rasa_pro: not a section of a Rasa 3 domain; ignored",
        'domain.yml intents[0] ("greet"): `use_entities` is not supported: every entity fills '
        "slots through their mappings",
        "domain.yml slots.mood.mappings[0]: mapping `from_trigger_intent` is not supported; "
        "skipped",
        "domain.yml slots.mood.mappings[1]: mapping `custom` is not supported (an action sets "
        "it); skipped",
        "domain.yml templates: `templates` is Rasa 1's name; read as `responses`",
        "domain.yml templates.utter_greet[0]: `elements` not supported; left out of the variant",
        "domain.yml responses.utter_greet[0]: `{name}` is not a slot; a slot `name` (type any, "
        "no mappings) was added for it, which an action has to set",
    ]


def test_rasa_2_forms_move_their_mappings_onto_the_slots() -> None:
    domain = """\
version: "2.0"
intents: [order]
slots:
  order_id: {type: text}
forms:
  order_form:
    required_slots:
      order_id:
      - type: from_entity
        entity: order_id
      - type: from_text
responses:
  utter_ask_order_id:
  - text: Which order?
"""
    rules = "rules:\n- rule: go\n  steps:\n  - intent: order\n  - action: order_form\n"
    rules += "  - active_loop: order_form\n"

    result = import_rasa(name="x", domain=domain, rules=rules)

    parse_definition(result.definition)
    assert result.definition["slots"]["order_id"]["mappings"] == [
        {
            "type": "from_entity",
            "entity": "order_id",
            "conditions": [{"active_loop": "order_form"}],
        },
        {
            "type": "from_text",
            "conditions": [{"active_loop": "order_form", "requested_slot": "order_id"}],
        },
    ]
    assert result.definition["flows"]["order_form"]["intents"] == ["order"]


def test_a_form_without_an_activation_rule_is_noted() -> None:
    result = import_rasa(name="x", domain=ORDER_DOMAIN)

    assert result.definition["flows"]["order_form"]["intents"] == []
    assert any(
        n.startswith("domain.yml forms.order_form: no rule starts the form")
        for n in result.unsupported
    )


def test_unknown_sections_of_every_file_are_noted() -> None:
    result = import_rasa(
        **{
            **moodbot(),
            "endpoints": "action_endpoint: {url: 'http://a/webhook'}\ntracker_store: {}\n",
        },
    )
    rules = MOODBOT_RULES + "slots: {}\n"
    result2 = import_rasa(**{**moodbot(), "rules": rules})

    assert result.unsupported == [
        "endpoints.yml tracker_store: not used by Parley, which runs its own; ignored"
    ]
    assert result2.unsupported == ["rules.yml slots: not a section of Rasa training data; ignored"]


# --- broken input ------------------------------------------------------------------------------


def test_bad_yaml_is_refused_naming_the_file_and_line() -> None:
    with pytest.raises(InvalidInput) as caught:
        import_rasa(name="x", domain=MOODBOT_DOMAIN, stories=MOODBOT_STORIES + "  - [oops\n")

    problem = _problem(caught.value)  # type: ignore[arg-type]
    assert problem["file"] == "stories.yml"
    assert problem["line"] is not None and problem["line"] > 30
    assert caught.value.message.startswith("the Rasa project has 1 problem(s): stories.yml line")


def test_a_domain_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        import_rasa(name="x", domain="- greet\n- goodbye\n")

    assert _problem(caught.value)["file"] == "domain.yml"  # type: ignore[arg-type]
    assert "domain.yml line 1: a Rasa domain.yml is a mapping" in caught.value.message


def test_broken_nlu_is_refused_with_its_line() -> None:
    nlu = 'nlu:\n- intent: greet\n  examples: |\n    - hi\n    - [Ana]{"entity": 3}\n'

    with pytest.raises(InvalidRasaProject) as caught:
        import_rasa(name="x", domain=MOODBOT_DOMAIN, nlu=nlu)

    assert caught.value.details["errors"][0]["file"] == "nlu.yml"
    assert caught.value.details["errors"][0]["line"] == 5


def test_a_form_asking_for_an_unknown_slot_is_refused() -> None:
    domain = ORDER_DOMAIN.replace("    - email\n", "    - phone\n")

    with pytest.raises(InvalidRasaProject) as caught:
        import_rasa(name="x", domain=domain)

    assert _problem(caught.value)["path"] == "forms.order_form.required_slots[1]"


def test_every_mistake_in_the_domain_is_listed_with_its_line() -> None:
    domain = """\
version: "3.1"
slots:
  size:
    type: categorical
    mappings: []
  colour:
    mappings: []
responses:
  utter_size:
  - text: Which size?
    condition:
    - type: slot
      name: shape
      value: round
"""
    with pytest.raises(InvalidRasaProject) as caught:
        import_rasa(name="x", domain=domain)

    assert [(p["line"], p["path"], p["message"]) for p in caught.value.details["errors"]] == [
        (4, "slots.size", "a categorical slot needs `values`"),
        (7, "slots.colour", "a slot needs a `type` (text, float, bool, categorical, ...)"),
        (13, "responses.utter_size[0].condition[0].name", 'unknown slot "shape"'),
    ]


def test_yaml_aliases_that_expand_too_far_are_refused() -> None:
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n'
    for level in "bcdefg":
        bomb += f"{level}: &{level} [{','.join([f'*{chr(ord(level) - 1)}'] * 10)}]\n"

    with pytest.raises(LimitExceeded, match="domain.yml holds more than 200000 values"):
        import_rasa(name="x", domain=bomb)
