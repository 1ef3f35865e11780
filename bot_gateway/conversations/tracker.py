"""A conversation's tracker: its slots, flow stack and events, and what actions return.

Events are typed (``conversations.events``: one model per kind, stored and sent to action
servers in Rasa's shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bot_gateway.conversations.events import ActionEvent, TrackerEvent

if TYPE_CHECKING:
    from bot_gateway.conversations.definition import BotDefinition

__all__ = ["ActionResult", "ActionRunner", "FlowFrame", "Tracker"]

BOT = "bot"
SEEN_IDS = 50  # client message ids remembered, so a message resent after a reconnect runs once
WAITING = "waiting_for_agent"


@dataclass
class FlowFrame:
    """One flow on the stack: where it is (``pc`` into its compiled steps), the slot it asked
    for and how many times that answer was rejected."""

    flow: str
    pc: int = 0
    asked: str | None = None
    retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "pc": self.pc, "asked": self.asked, "retries": self.retries}

    @classmethod
    def of(cls, data: dict[str, Any]) -> FlowFrame:
        return cls(data["flow"], data.get("pc", 0), data.get("asked"), data.get("retries", 0))


@dataclass
class Tracker:
    """What the engine knows of one conversation. ``events`` holds the events loaded with it
    (the recent ones) followed by the events of the turn being processed; ``new_events`` is
    the index where this turn's events begin."""

    conversation_id: str
    sender_id: str
    slots: dict[str, Any] = field(default_factory=dict)
    stack: list[FlowFrame] = field(default_factory=list)
    status: str = BOT  # "bot" or "waiting_for_agent"
    fallbacks: int = 0  # consecutive fallbacks
    history: list[str] = field(default_factory=list)  # "intent:x" / "action:y", for stories
    events: list[TrackerEvent] = field(default_factory=list)
    new_events: int = 0
    latest_message: dict[str, Any] | None = None
    last_active: float = 0.0
    channel: str = ""
    seen: list[str] = field(default_factory=list)  # client message ids lately handled
    options: list[str] = field(default_factory=list)  # payloads of the buttons last offered
    reply_metadata: dict[str, Any] = field(default_factory=dict)  # a channel's reply address

    def add(self, item: TrackerEvent) -> TrackerEvent:
        self.events.append(item)
        return item

    def turn_events(self) -> list[TrackerEvent]:
        return self.events[self.new_events :]

    @property
    def active_flow(self) -> str | None:
        return self.stack[-1].flow if self.stack else None

    def state(self) -> dict[str, Any]:
        """What is stored with the conversation row, so a load needs no event replay."""
        return {
            "slots": self.slots,
            "stack": [f.to_dict() for f in self.stack],
            "fallbacks": self.fallbacks,
            "history": self.history[-40:],
            "latest_message": self.latest_message,
            "seen": self.seen[-SEEN_IDS:],
            "options": self.options,
            "reply_metadata": self.reply_metadata,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.slots = {**self.slots, **(state.get("slots") or {})}  # new slots keep initial values
        self.stack = [FlowFrame.of(f) for f in state.get("stack") or []]
        self.fallbacks = int(state.get("fallbacks") or 0)
        self.history = list(state.get("history") or [])
        self.latest_message = state.get("latest_message")
        self.seen = list(state.get("seen") or [])
        self.options = list(state.get("options") or [])
        self.reply_metadata = dict(state.get("reply_metadata") or {})

    def to_rasa(self) -> dict[str, Any]:
        """The tracker in rasa-sdk's shape (``tracker`` in an action server request)."""
        latest_action = next(
            (e.name for e in reversed(self.events) if isinstance(e, ActionEvent)), None
        )
        flow = self.active_flow
        return {
            "sender_id": self.sender_id,
            "slots": dict(self.slots),
            "latest_message": self.latest_message or {},
            "events": [e.to_dict() for e in self.events],
            "paused": self.status != BOT,
            "followup_action": None,
            "active_loop": {"name": flow} if flow else {},
            "latest_action_name": latest_action,
            "latest_action": {"action_name": latest_action} if latest_action else {},
            "latest_input_channel": self.channel or None,
        }


@dataclass(frozen=True)
class ActionResult:
    """What an action produced: events to apply (Rasa shapes: ``slot``, ``reset_slots``,
    ``followup``, ``active_loop``, ``restart``, ``bot``, ...), messages to send (rasa-sdk
    response dicts: ``text``, ``buttons``, ``image``, ``elements``, ``custom``, or
    ``response``: a response name), and, when it failed, why (the engine then sends the
    action's ``on_error`` response)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_response: str | None = None  # the response to send for this failure


class ActionRunner(Protocol):
    """Runs the actions a bot declares (HTTP, set_slot) and those of its action server."""

    async def run(
        self,
        name: str,
        *,
        bot: BotDefinition,
        tracker: Tracker,
        extra_events: list[TrackerEvent] | None = None,
    ) -> ActionResult: ...
