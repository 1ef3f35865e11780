"""A conversation's events: one pydantic model per kind, together the discriminated union
``TrackerEvent`` (on ``event``). Every event is stamped with a ``timestamp`` (seconds since the
epoch) and stored as JSON in Rasa's shapes, so an action server reads them as they are::

    user             text, parse_data {text, intent, entities, intent_ranking, out_of_scope, ...},
                     attachments [{upload_id, url, media_type}], input_channel, message_id
    bot              text, data {buttons, quick_replies, image, cards, custom}, response
    agent            text, data {image, quick_replies}, agent_id, agent_name
    note             text, agent_id, agent_name          (agents only; never sent to the customer)
    claim / closed   agent_id, agent_name
    slot             name, value                         action           name
    session_started  restart  release  reset_slots       (no fields)
    flow_started     name                                flow_ended       name, reason
    handoff          reason                              fallback         reason
    vision           name, model, result (the image model's answer)
    action_failed    name, error
    delivery_failed  channel, error, message (the outbound message, wire shape)

``event(kind, **fields)`` makes one, stamped now; ``to_dict()`` is its stored JSON: exactly the
keys it was made (or stored) with, in the order above, ``null`` where a field was given as None
(a ``bot`` message without text), nothing added. ``load_event`` reads a stored event back,
validated: a kind this version does not know (written by a newer one), or a known kind of a
shape it does not read (logged as ``tracker.event_unreadable``), loads as ``UnknownEvent``, kept
as it was, so an old or newer conversation still opens and its history still reaches the action
server unchanged; a stored item without an ``event`` kind raises ``InvalidEvent``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core.errors import InvalidInput
from core.logging import log_event

__all__ = [
    "ActionEvent",
    "ActionFailedEvent",
    "AgentEvent",
    "BotEvent",
    "ClaimEvent",
    "ClosedEvent",
    "DeliveryFailedEvent",
    "FallbackEvent",
    "FlowEndedEvent",
    "FlowStartedEvent",
    "HandoffEvent",
    "InvalidEvent",
    "KNOWN_KINDS",
    "NoteEvent",
    "ReleaseEvent",
    "ResetSlotsEvent",
    "RestartEvent",
    "SessionStartedEvent",
    "SlotEvent",
    "TrackerEvent",
    "UnknownEvent",
    "UserEvent",
    "VisionEvent",
    "event",
    "load_event",
]


class InvalidEvent(InvalidInput):
    """A stored or new event that is not of its kind's shape."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str
    timestamp: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON: the keys this event was made with, nothing added."""
        return self.model_dump(mode="json", exclude_unset=True)


class UserEvent(_Event):
    event: Literal["user"] = "user"
    text: str | None = None
    parse_data: dict[str, Any] = {}
    attachments: list[dict[str, Any]] = []
    input_channel: str | None = None
    message_id: str | None = None
    sentiment: dict[str, Any] | None = None  # {label, score} of a typed text (nlu.sentiment)


class BotEvent(_Event):
    event: Literal["bot"] = "bot"
    text: str | None = None
    data: dict[str, Any] = {}
    response: str | None = None


class AgentEvent(_Event):
    event: Literal["agent"] = "agent"
    text: str | None = None
    data: dict[str, Any] = {}
    agent_id: str | None = None
    agent_name: str | None = None


class NoteEvent(_Event):
    event: Literal["note"] = "note"
    text: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None


class ClaimEvent(_Event):
    event: Literal["claim"] = "claim"
    agent_id: str | None = None
    agent_name: str | None = None


class ClosedEvent(_Event):
    event: Literal["closed"] = "closed"
    agent_id: str | None = None
    agent_name: str | None = None


class SlotEvent(_Event):
    event: Literal["slot"] = "slot"
    name: str
    value: Any = None


class ActionEvent(_Event):
    event: Literal["action"] = "action"
    name: str


class SessionStartedEvent(_Event):
    event: Literal["session_started"] = "session_started"


class RestartEvent(_Event):
    event: Literal["restart"] = "restart"


class ReleaseEvent(_Event):
    event: Literal["release"] = "release"


class ResetSlotsEvent(_Event):
    event: Literal["reset_slots"] = "reset_slots"


class FlowStartedEvent(_Event):
    event: Literal["flow_started"] = "flow_started"
    name: str


class FlowEndedEvent(_Event):
    event: Literal["flow_ended"] = "flow_ended"
    name: str
    reason: str | None = None


class HandoffEvent(_Event):
    event: Literal["handoff"] = "handoff"
    reason: str | None = None


class FallbackEvent(_Event):
    event: Literal["fallback"] = "fallback"
    reason: str | None = None


class VisionEvent(_Event):
    event: Literal["vision"] = "vision"
    name: str
    model: str
    result: dict[str, Any] = {}


class ActionFailedEvent(_Event):
    event: Literal["action_failed"] = "action_failed"
    name: str
    error: str


class DeliveryFailedEvent(_Event):
    event: Literal["delivery_failed"] = "delivery_failed"
    channel: str
    error: str
    message: dict[str, Any] = {}


class UnknownEvent(_Event):
    """A stored event of a kind this version does not know: kept as it was."""

    model_config = ConfigDict(frozen=True, extra="allow")
    timestamp: Any = None


KnownEvent = Annotated[
    UserEvent
    | BotEvent
    | AgentEvent
    | NoteEvent
    | ClaimEvent
    | ClosedEvent
    | SlotEvent
    | ActionEvent
    | SessionStartedEvent
    | RestartEvent
    | ReleaseEvent
    | ResetSlotsEvent
    | FlowStartedEvent
    | FlowEndedEvent
    | HandoffEvent
    | FallbackEvent
    | VisionEvent
    | ActionFailedEvent
    | DeliveryFailedEvent,
    Field(discriminator="event"),
]
TrackerEvent = KnownEvent | UnknownEvent
"""Any event of a conversation."""

_KNOWN: TypeAdapter[Any] = TypeAdapter(KnownEvent)
KNOWN_KINDS = frozenset(
    model.model_fields["event"].default
    for model in (
        UserEvent, BotEvent, AgentEvent, NoteEvent, ClaimEvent, ClosedEvent, SlotEvent,
        ActionEvent, SessionStartedEvent, RestartEvent, ReleaseEvent, ResetSlotsEvent,
        FlowStartedEvent, FlowEndedEvent, HandoffEvent, FallbackEvent, VisionEvent,
        ActionFailedEvent, DeliveryFailedEvent,
    )
)  # fmt: skip


def event(kind: str, **fields: Any) -> TrackerEvent:
    """A new event of ``kind`` (one of ``KNOWN_KINDS``), stamped now; ``InvalidEvent`` for an
    unknown kind or fields that are not its shape."""
    if kind not in KNOWN_KINDS:
        known = ", ".join(sorted(KNOWN_KINDS))
        raise InvalidEvent(f"no event kind {kind!r}; the kinds are {known}")
    return _validate({"event": kind, "timestamp": time.time(), **fields})


def load_event(data: dict[str, Any]) -> TrackerEvent:
    """A stored event read back (see the module docstring for unknown kinds)."""
    kind = data.get("event") if isinstance(data, dict) else None
    if not isinstance(kind, str):
        raise InvalidEvent(f"a stored event without an `event` kind: {str(data)[:200]}")
    if kind not in KNOWN_KINDS:
        return UnknownEvent.model_validate(data)
    try:
        return _validate(data)
    except InvalidEvent as e:  # one odd row must not stop the conversation from opening
        log_event("tracker.event_unreadable", kind=kind, error=e.message)
        return UnknownEvent.model_validate(data)


def _validate(data: dict[str, Any]) -> TrackerEvent:
    try:
        validated: TrackerEvent = _KNOWN.validate_python(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'event'}: {err['msg']}"
            for err in e.errors(include_url=False)
        )
        raise InvalidEvent(f"a {data['event']!r} event of the wrong shape: {problems}") from e
    return validated
