"""Custom actions for a real rasa-sdk action server (``python -m rasa_sdk --actions
tests.bot_gateway.conversations.action_server_fixture``), run from ``.venv-actions``
(scripts/install-action-server) by test_actions.py; not imported by Parley's own venv."""

from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.interfaces import ActionExecutionRejection
from rasa_sdk.types import DomainDict

ORDERS = {"A-1234": {"status": "shipped", "eta": "Friday"}}
ORDER_ID = re.compile(r"^[A-Z]-\d{4}$")


class ActionLookupOrder(Action):
    """Sets ``status`` and ``eta`` from the order in slot ``order_id`` and says so."""

    def name(self) -> str:
        return "action_lookup_order"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        order_id = tracker.get_slot("order_id")
        order = ORDERS.get(order_id)
        if order is None:
            dispatcher.utter_message(response="utter_no_order")
            return [SlotSet("status", None)]
        dispatcher.utter_message(text=f"Order {order_id} is {order['status']}.")
        return [SlotSet("status", order["status"]), SlotSet("eta", order["eta"])]


class ValidateOrderForm(FormValidationAction):
    """Accepts an ``order_id`` like A-1234; anything else is cleared, with a message."""

    def name(self) -> str:
        return "validate_order_form"

    def validate_order_id(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if isinstance(value, str) and ORDER_ID.match(value):
            return {"order_id": value}
        dispatcher.utter_message(text=f"{value} is not an order number (like A-1234).")
        return {"order_id": None}


class ActionLoop(Action):
    """Asks to be run again, forever (the engine must stop it)."""

    def name(self) -> str:
        return "action_loop"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        return [FollowupAction("action_loop")]


class ActionCrash(Action):
    """Raises, as a buggy action does."""

    def name(self) -> str:
        return "action_crash"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        raise RuntimeError("the order database is down")


class ActionReject(Action):
    """Refuses to run, as rasa-sdk lets an action do (the server answers 400)."""

    def name(self) -> str:
        return "action_reject"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        raise ActionExecutionRejection(self.name(), "no order to cancel")


class ActionSubmitOrder(Action):
    """Accepts the filled order form (the imported Rasa project's submission action)."""

    def name(self) -> str:
        return "action_submit_order"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        return [SlotSet("vip", True)]
