"""An imported Rasa project's form, run by the dialog engine, validated by the real rasa-sdk
action server (its ``validate_order_form``) and submitted through it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bot_gateway.conversations.actions import Actions
from bot_gateway.conversations.definition import parse_definition
from bot_gateway.conversations.engine import DialogEngine
from bot_gateway.conversations.rasa_import import import_rasa
from bot_gateway.conversations.storytest import engine_converse, load_cases, run_cases
from tests.bot_gateway.conversations.test_actions import action_server  # noqa: F401 (fixture)
from tests.support.rasa_bots import order_bot

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STORIES = """
stories:
  - name: the form asks, the action server rejects a bad order number, then it submits
    steps:
      - user: i want to place an order
        intent: order
      - bot: What is your order number?
      - user: "12345"
        intent: inform
      - bot: 12345 is not an order number (like A-1234).
      - bot: What is your order number?
      - user: it's A-1234
        intent: inform
        entities: [{entity: order_id, value: A-1234}]
      - bot: Which email should the confirmation go to?
      - user: ana@example.com
        intent: inform
        entities: [{entity: email, value: ana@example.com}]
      - bot: Thanks! Order A-1234 is confirmed; we will write to ana@example.com.
      - slots: {order_id: A-1234, email: ana@example.com, vip: true}
"""


def test_an_imported_form_validates_and_submits_through_rasa_sdk(
    action_server: str,  # noqa: F811
) -> None:
    imported = import_rasa(**order_bot())
    data = dict(imported.definition)
    data["nlu"] = {"model": "production"}
    data["action_server"] = {**data["action_server"], "url": action_server}
    bot = parse_definition(data)

    async def run() -> dict[str, object]:
        async with httpx.AsyncClient() as client:
            engine = DialogEngine(bot, Actions(client))
            report = await run_cases(load_cases(STORIES), engine_converse(engine))
            return report.to_dict()

    report = asyncio.run(run())
    assert report["failed"] == 0, report
