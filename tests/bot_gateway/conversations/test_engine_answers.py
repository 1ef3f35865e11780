"""What counts as an answer to an ``ask``: found by running the demo bot's stories against the
real server (an action named like its flow; an address the NLU reads as the flow's intent; a
"yes" the NLU reads as another intent)."""

from __future__ import annotations

import asyncio
from typing import Any

import yaml

from bot_gateway.conversations.definition import parse_definition
from bot_gateway.conversations.engine import DialogEngine
from bot_gateway.conversations.storytest import engine_converse, load_cases, run_cases
from bot_gateway.conversations.tracker import ActionResult, Tracker

BOT = """
name: addresses
nlu: {model: production}
slots:
  new_address: {type: text}
  confirm: {type: bool}
  done: {type: text}
responses:
  utter_ask_new_address: [{text: "Which address?"}]
  utter_ask_confirm: [{text: "Sure?"}]
  utter_changed: [{text: "Changed to {new_address} ({done})."}]
  utter_kept: [{text: "Kept."}]
  utter_thanks: [{text: "You're welcome!"}]
flows:
  change_address:
    intents: [change_address]
    steps:
      - ask: new_address
      - ask: confirm
      - if:
          - {slot: confirm, equals: true, then: [{action: change_address}, {reply: utter_changed}]}
        else: [{reply: utter_kept}]
  thanks: {intents: [thanks], steps: [{reply: utter_thanks}]}
actions:
  change_address: {type: set_slot, slots: {done: "yes"}}
"""

STORIES = """
stories:
  - name: an answer the NLU reads as the flow's own intent is taken as the answer
    steps:
      - user: I need to change my address
        intent: change_address
      - bot: Which address?
      - user: please deliver to 10 Main Street
        intent: change_address
      - bot: Sure?
  - name: a yes the NLU reads as another intent still answers a yes/no question
    steps:
      - user: change my address
        intent: change_address
      - bot: Which address?
      - user: 10 Main Street
      - bot: Sure?
      - user: "yes"
        intent: thanks
      - bot: Changed to 10 Main Street (yes).
  - name: the flow's button again just asks again (a button's title is not an answer)
    steps:
      - user: change my address
        intent: change_address
      - bot: Which address?
      - user: {payload: /change_address, text: Change address}
      - bot: Which address?
  - name: another flow's intent with free text is a digression
    steps:
      - user: change my address
        intent: change_address
      - bot: Which address?
      - user: thank you
        intent: thanks
      - bot: You're welcome!
      - bot: Which address?
"""


def test_answers_digressions_and_an_action_named_like_its_flow() -> None:
    bot = parse_definition(yaml.safe_load(BOT))
    engine = DialogEngine(bot, SetSlots())
    report = asyncio.run(run_cases(load_cases(STORIES), engine_converse(engine)))
    assert report.to_dict()["failed"] == 0, report.to_dict()


class SetSlots:
    """Runs ``set_slot`` actions as Parley's runner does (no HTTP needed)."""

    async def run(self, name: str, *, bot: Any, tracker: Tracker, **_: Any) -> ActionResult:
        action = bot.actions[name]
        return ActionResult(
            events=[{"event": "slot", "name": k, "value": v} for k, v in action.slots.items()]
        )
