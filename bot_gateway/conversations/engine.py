"""The dialog engine: given a bot, a conversation's tracker and one customer message (already
parsed by NLU and, for images, by the bot's vision steps), decide and run what the bot does.

It knows nothing of HTTP, databases or channels: actions run through an ``ActionRunner``, and
the caller stores the tracker. What it reads comes typed (``understanding``: the parse and
vision results), responses are rendered by ``responses``, slot values read by ``slots``. One
turn, in order:

1. ``/restart`` (or a ``restart`` intent) resets the conversation; a handoff intent hands off.
2. Slots fill from the message: ``from_entity`` / ``from_intent`` mappings on every message,
   vision results, and ``from_text`` for the slot being asked.
3. A flow waiting on an ``ask`` takes the answer (validated; rejected answers are re-asked up to
   ``retries`` times, then ``on_fail``). A message that does not answer but starts another flow
   is a digression: that flow runs, then the first one re-asks.
4. Otherwise the intent starts the flow it triggers (rules become such flows), or the bot
   follows the stories (memoization over the last ``max_history`` user turns), or it falls back
   (rephrase, then hand off after ``fallback.handoff_after`` misses in a row).
5. Flows run step by step until they ask for something or end; at most
   ``max_actions_per_turn`` steps run per message, so an action that calls itself cannot hang
   a conversation.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from bot_gateway.conversations.definition import (
    BUILTIN_ACTIONS,
    SENTIMENT_SCORE_SLOT,
    SENTIMENT_SLOT,
    ActionStep,
    AskStep,
    BotDefinition,
    BranchStep,
    Case,
    EndStep,
    HandoffStep,
    LinkStep,
    ReplyStep,
    ResponseVariant,
    SetStep,
    Slot,
    SlotMapping,
)
from bot_gateway.conversations.events import SlotEvent, event
from bot_gateway.conversations.responses import render
from bot_gateway.conversations.slots import as_number, coerce, norm, vision_value
from bot_gateway.conversations.tracker import (
    BOT,
    WAITING,
    ActionResult,
    ActionRunner,
    FlowFrame,
    Tracker,
)
from bot_gateway.conversations.understanding import (
    Entity,
    Intent,
    Parse,
    VisionResult,
)
from core.documents import check_json_depth
from core.errors import LimitExceeded
from core.logging import log_event
from core.messages import OutboundMessage
from nlu import sentiment

__all__ = ["DialogEngine", "UserMessage", "parse_payload"]

DEFAULT_FALLBACK = "Sorry, I didn't quite get that. Could you rephrase?"
DEFAULT_HANDOFF = "I'm connecting you with a person from our team. Please hold on."
DEFAULT_RELEASED = "You're back with the assistant. How can I help?"
DEFAULT_ERROR = "Sorry, something went wrong on our side. Please try again in a moment."
DEFAULT_RESTART = "Let's start over. How can I help?"
MAX_STEPS_PER_TURN = 1000
RESTART_INTENTS = frozenset({"restart", "session_start"})
MAX_PAYLOAD_DEPTH = 4  # entity values are text, numbers or lists: deeper is not a payload
_PAYLOAD = re.compile(r"^/(?P<intent>[A-Za-z_][\w\-]*)(?P<entities>\{.*\})?$", re.S)


@dataclass
class UserMessage:
    """One customer message: its text (may be empty for an image), the NLU parse,
    attachments and vision results."""

    text: str = ""
    parse: Parse = field(default_factory=Parse)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    vision: list[VisionResult] = field(default_factory=list)
    message_id: str | None = None

    @property
    def intent(self) -> str | None:
        return self.parse.intent_name

    @property
    def confidence(self) -> float:
        return self.parse.confidence

    @property
    def entities(self) -> tuple[Entity, ...]:
        return self.parse.entities


def parse_payload(text: str) -> Parse | None:
    """A button payload ``/intent`` or ``/intent{"entity": "value"}`` as a parse (confidence
    1.0, no NLU), or None for ordinary text."""
    m = _PAYLOAD.match(text.strip())
    if m is None:
        return None
    entities: list[Entity] = []
    if m.group("entities"):
        try:
            check_json_depth(m.group("entities"), MAX_PAYLOAD_DEPTH, what="the payload")
            values = json.loads(m.group("entities"))
        except (LimitExceeded, ValueError):  # malformed, too deep, or a number too long
            return None
        if not isinstance(values, dict):
            return None
        for name, value in values.items():
            for v in value if isinstance(value, list) else [value]:
                entities.append(Entity(entity=str(name), value=v, start=0, end=0))
    intent = Intent(name=m.group("intent"), confidence=1.0)
    return Parse(
        intent=intent,
        entities=tuple(entities),
        intent_ranking=(intent,),
        out_of_scope=False,
        payload=text.strip(),  # a button: its title is not an answer typed by the customer
    )


# --- flows compiled to instructions -----------------------------------------------------------


@dataclass(frozen=True)
class _Branch:
    cases: list[tuple[Case, int]]  # (case, pc of its block)
    otherwise: int


@dataclass(frozen=True)
class _Jump:
    target: int


def compile_flow(steps: list[Any]) -> list[Any]:
    """Steps (with nested ``if`` blocks) as a flat list with branches and jumps."""
    program: list[Any] = []

    def emit(block: list[Any]) -> None:
        for step in block:
            if not isinstance(step, BranchStep):
                program.append(step)
                continue
            at = len(program)
            program.append(None)  # the branch, filled in below
            starts, ends = [], []
            for case in step.if_:
                starts.append(len(program))
                emit(case.then)
                ends.append(len(program))
                program.append(None)  # jump to the end
            otherwise = len(program)
            emit(step.else_)
            end = len(program)
            for j in ends:
                program[j] = _Jump(end)
            program[at] = _Branch(list(zip(step.if_, starts, strict=True)), otherwise)

    emit(steps)
    return program


def case_holds(case: Case, value: Any) -> bool:
    if case.is_set is not None:
        return (value is not None) == case.is_set
    if case.not_set is not None:
        return (value is None) == case.not_set
    if case.in_ is not None:
        return norm(value) in {norm(v) for v in case.in_}
    if case.above is not None or case.below is not None:
        number = as_number(value)
        if number is None:
            return False
        return (case.above is None or number > case.above) and (
            case.below is None or number < case.below
        )
    return norm(value) == norm(case.equals)


# --- the engine -----------------------------------------------------------------------------


class _Budget(Exception):
    """Too many steps in one turn."""


class _Turn:
    """What one message makes the bot do: outbound messages and a step budget."""

    def __init__(self, tracker: Tracker, budget: int) -> None:
        self.tracker = tracker
        self.messages: list[OutboundMessage] = []
        self.budget = budget
        self.steps = 0
        self.explained = False  # a validation action already told the customer what was wrong

    def spend(self) -> None:
        """One action or flow link (``max_actions_per_turn`` of them per message)."""
        self.budget -= 1
        if self.budget < 0:
            raise _Budget

    def step(self) -> None:
        """Any flow step: a hard cap far above what a sane flow needs."""
        self.steps += 1
        if self.steps > MAX_STEPS_PER_TURN:
            raise _Budget


class DialogEngine:
    """Runs one bot's dialog. Stateless between turns: everything lives in the tracker."""

    def __init__(
        self, bot: BotDefinition, actions: ActionRunner, *, rng: random.Random | None = None
    ) -> None:
        self.bot = bot
        self.actions = actions
        self.rng = rng or random.Random()
        self.programs = {name: compile_flow(flow.steps) for name, flow in bot.flows.items()}
        self.triggers: dict[str, str] = {}
        for name, flow in bot.flows.items():
            for intent in flow.intents:
                self.triggers.setdefault(intent, name)
        self.stories = [
            [
                f"intent:{s.intent}" if s.intent else f"action:{s.action}"
                for s in story.steps
                if s.intent or s.action
            ]
            for story in bot.stories
        ]

    # -- public ------------------------------------------------------------------------------

    def new_tracker(self, conversation_id: str, sender_id: str, channel: str = "") -> Tracker:
        tracker = Tracker(conversation_id=conversation_id, sender_id=sender_id, channel=channel)
        tracker.slots = self.initial_slots()
        return tracker

    def initial_slots(self) -> dict[str, Any]:
        return {name: slot.initial_value for name, slot in self.bot.slots.items()}

    def start_session(self, tracker: Tracker) -> None:
        """A new session (the old one expired): flows end; slots reset unless carried over."""
        tracker.add(event("session_started"))
        tracker.stack.clear()
        tracker.history.clear()
        tracker.fallbacks = 0
        if not self.bot.session.carry_over_slots:
            tracker.slots = self.initial_slots()

    async def handle(self, tracker: Tracker, message: UserMessage) -> list[OutboundMessage]:
        """Process one customer message; returns the messages the bot sends (also recorded as
        ``bot`` events in the tracker)."""
        turn = _Turn(tracker, self.bot.max_actions_per_turn)
        tracker.new_events = len(tracker.events)
        parse = message.parse.with_text(message.text).to_rasa()
        tracker.latest_message = parse
        mood = self._sentiment(tracker, message)
        tracker.add(
            event(
                "user",
                text=message.text,
                parse_data=parse,
                attachments=message.attachments,
                input_channel=tracker.channel,
                message_id=message.message_id,
                **({"sentiment": mood.to_dict()} if mood is not None else {}),
            )
        )
        if tracker.status != BOT:
            return []  # a person has the conversation; the bot stays quiet
        tracker.options = []
        try:
            await self._respond(turn, message)
        except _Budget:
            log_event("dialog.too_many_actions", conversation=tracker.conversation_id)
            tracker.add(
                event(
                    "action_failed",
                    name="",
                    error=f"more than {self.bot.max_actions_per_turn} steps in one turn "
                    "(an action calling itself?); the flow was stopped",
                )
            )
            self._end_all(tracker, "too_many_actions")
            self.say(turn, ResponseVariant(text=DEFAULT_ERROR))
        return turn.messages

    def handoff(self, tracker: Tracker, reason: str) -> list[OutboundMessage]:
        """Hand the conversation to a person (an API call or an agent)."""
        turn = _Turn(tracker, 1)
        self._handoff(turn, reason)
        return turn.messages

    def end_flows(self, tracker: Tracker, reason: str) -> None:
        """End every running flow (an agent resets the conversation)."""
        self._end_all(tracker, reason)

    def release(self, tracker: Tracker) -> list[OutboundMessage]:
        """Give the conversation back to the bot."""
        turn = _Turn(tracker, 1)
        if tracker.status == BOT:
            return []
        tracker.status = BOT
        tracker.fallbacks = 0
        tracker.add(event("release"))
        name = self.bot.handoff.released_response
        self.reply(turn, name) if name else self.say(turn, ResponseVariant(text=DEFAULT_RELEASED))
        return turn.messages

    # -- one turn ----------------------------------------------------------------------------

    async def _respond(self, turn: _Turn, message: UserMessage) -> None:
        tracker = turn.tracker
        intent = message.intent
        if (
            message.text.strip() == "/restart"
            or intent in RESTART_INTENTS
            and intent not in self.triggers
        ):
            self._restart(turn)
            return
        vision_intent = self._fill_from_vision(tracker, message)
        if vision_intent and (intent is None or self._is_fallback(message)):
            intent = vision_intent
            message.parse = message.parse.with_intent(intent)
        if intent:
            tracker.history.append(f"intent:{intent}")
        if intent in self.bot.handoff.intents:
            self._handoff(turn, "customer asked for a person")
            return
        asked = tracker.stack[-1].asked if tracker.stack else None
        self._fill_globally(tracker, message, asked)
        if asked is not None:
            await self._answer(turn, message, asked)
        elif self._start_triggered(turn, message):
            await self._run(turn)
        elif not await self._follow_story(turn):
            await self._fallback(turn)

    async def _answer(self, turn: _Turn, message: UserMessage, asked: str) -> None:
        """The customer's message while a flow waits for ``asked``."""
        tracker = turn.tracker
        frame = tracker.stack[-1]
        step = self.programs[frame.flow][frame.pc]
        assert isinstance(step, AskStep)
        value, from_text = self._extract_for_ask(tracker, message, asked)
        other = self._triggered_flow(message)
        if from_text and self._fits(step, value):
            other = None  # "yes" to a yes/no question, a well-formed order number: an answer
        if other is not None and other != frame.flow and (value is None or from_text):
            # a digression: run the other flow, then come back and ask again
            frame.asked = None
            self._start_flow(turn, other)
            await self._run(turn)
            return
        if other == frame.flow and value is None:  # "track my order" again: just ask again
            frame.asked = None
            await self._run(turn)
            return
        accepted = None if value is None else await self._validate(turn, step, asked, value)
        if accepted is None:
            await self._reject(turn, step)
            return
        tracker.fallbacks = 0
        self._set_slot(tracker, asked, accepted)
        frame.asked, frame.retries = None, 0
        frame.pc += 1
        await self._run(turn)

    def _fits(self, step: AskStep, value: Any) -> bool:
        """Whether bare text is clearly an answer: it reads as the slot's type (a number, a
        yes/no, one of the values) or matches the ask's regex."""
        slot = self.bot.slots[step.ask]
        if slot.type in ("number", "bool", "categorical") and coerce(slot, value) is not None:
            return True
        rule = step.validate_
        return bool(rule and rule.regex and re.fullmatch(rule.regex, str(value).strip()))

    async def _reject(self, turn: _Turn, step: AskStep) -> None:
        """A rejected answer: say so, then ask again, or after ``retries`` do ``on_fail``."""
        tracker = turn.tracker
        frame = tracker.stack[-1]
        frame.retries += 1
        self._set_slot(tracker, step.ask, None)  # an entity may have filled it this turn
        exhausted = frame.retries > step.retries
        if not exhausted or step.on_fail == "end":  # a handoff or a flow speaks for itself
            default = f"utter_invalid_{step.ask}"
            invalid = step.invalid or (default if default in self.bot.responses else None)
            if invalid:
                self.reply(turn, invalid)
            elif not turn.explained:
                what = step.ask.replace("_", " ")
                self.say(
                    turn, ResponseVariant(text=f"Sorry, that doesn't look like a valid {what}.")
                )
        if exhausted:
            frame.asked, frame.retries = None, 0
            self._end_flow(tracker, "retries_exhausted")
            if step.on_fail == "handoff":
                self._handoff(turn, f"no valid {step.ask} after {step.retries + 1} tries")
            elif step.on_fail != "end":
                self._start_flow(turn, step.on_fail)
                await self._run(turn)
            return
        frame.asked = None
        await self._run(turn)

    # -- running flows -----------------------------------------------------------------------

    def _start_flow(self, turn: _Turn, name: str) -> None:
        turn.tracker.stack.append(FlowFrame(name))
        turn.tracker.add(event("flow_started", name=name))
        turn.tracker.fallbacks = 0

    def _end_flow(self, tracker: Tracker, reason: str = "completed") -> None:
        frame = tracker.stack.pop()
        tracker.add(event("flow_ended", name=frame.flow, reason=reason))

    def _end_all(self, tracker: Tracker, reason: str) -> None:
        while tracker.stack:
            self._end_flow(tracker, reason)

    async def _run(self, turn: _Turn) -> None:
        """Run the top flow until it asks for something or the stack is empty."""
        tracker = turn.tracker
        while tracker.stack:
            frame = tracker.stack[-1]
            program = self.programs[frame.flow]
            if frame.pc >= len(program):
                self._end_flow(tracker)
                continue
            turn.step()
            step = program[frame.pc]
            if isinstance(step, _Jump):
                frame.pc = step.target
            elif isinstance(step, _Branch):
                frame.pc = next(
                    (
                        pc
                        for case, pc in step.cases
                        if case_holds(case, tracker.slots.get(case.slot))
                    ),
                    step.otherwise,
                )
            elif isinstance(step, AskStep):
                value = tracker.slots.get(step.ask)
                if value is not None and not step.always and frame.asked is None:
                    if step.validate_ is None:
                        frame.pc += 1
                        continue
                    accepted = await self._validate(turn, step, step.ask, value)
                    if accepted is not None:  # filled earlier (an entity): checked now
                        self._set_slot(tracker, step.ask, accepted)
                        frame.pc += 1
                        continue
                    frame.asked = step.ask
                    await self._reject(turn, step)
                    return
                self._ask(turn, step)
                frame.asked = step.ask
                return
            elif isinstance(step, ReplyStep):
                frame.pc += 1
                if isinstance(step.reply, str):
                    self.reply(turn, step.reply)
                else:
                    self.say(turn, step.reply)
            elif isinstance(step, SetStep):
                frame.pc += 1
                for name, value in step.set.items():
                    self._set_slot(tracker, name, value)
            elif isinstance(step, ActionStep):
                frame.pc += 1
                turn.spend()
                ok = await self._action(turn, step.action)
                if not ok and tracker.stack and tracker.stack[-1] is frame:
                    self._end_flow(tracker, "action_failed")
            elif isinstance(step, LinkStep):
                turn.spend()
                self._end_flow(tracker, "linked")
                self._start_flow(turn, step.link)
            elif isinstance(step, HandoffStep):
                if isinstance(step.handoff, str):
                    self.reply(turn, step.handoff)
                self._handoff(
                    turn,
                    step.reason or f"flow {frame.flow}",
                    announce=not isinstance(step.handoff, str),
                )
                return
            elif isinstance(step, EndStep):
                if isinstance(step.end, str):
                    self.reply(turn, step.end)
                self._end_flow(tracker)

    def _ask(self, turn: _Turn, step: AskStep) -> None:
        name = step.response or next(
            (
                n
                for n in (
                    f"utter_ask_{turn.tracker.active_flow}_{step.ask}",
                    f"utter_ask_{step.ask}",
                )
                if n in self.bot.responses
            ),
            None,
        )
        turn.tracker.history.append(f"action:{name or 'ask_' + step.ask}")
        if name:
            self.reply(turn, name, record=False)
        else:
            self.say(turn, ResponseVariant(text=f"What is your {step.ask.replace('_', ' ')}?"))

    async def _action(self, turn: _Turn, name: str) -> bool:
        """Run an action by name; False when it failed (its error reply is already sent)."""
        tracker = turn.tracker
        if name in self.bot.responses:
            self.reply(turn, name)
            return True
        tracker.history.append(f"action:{name}")
        if name in BUILTIN_ACTIONS:
            return self._builtin(turn, name)
        if name in self.bot.flows and name not in self.bot.actions:
            self._start_flow(turn, name)  # Rasa activates a form by running it as an action
            return True
        tracker.add(event("action", name=name))
        result = await self.actions.run(name, bot=self.bot, tracker=tracker)
        return await self._apply(turn, name, result)

    def _builtin(self, turn: _Turn, name: str) -> bool:
        tracker = turn.tracker
        tracker.add(event("action", name=name))
        if name == "action_restart":
            self._restart(turn)
        elif name == "action_handoff":
            self._handoff(turn, "action_handoff")
        elif name == "action_deactivate_loop" and tracker.stack:
            self._end_flow(tracker, "deactivated")
        elif name == "action_default_fallback":
            self._fallback_reply(turn)
        elif name == "action_session_start":
            self.start_session(tracker)
        return True

    async def _apply(self, turn: _Turn, name: str, result: ActionResult) -> bool:
        tracker = turn.tracker
        if result.error is not None:
            tracker.add(event("action_failed", name=name, error=result.error))
            log_event("dialog.action_failed", action=name, error=result.error)
            if result.error_response:
                self.reply(turn, result.error_response)
            else:
                self.say(turn, ResponseVariant(text=DEFAULT_ERROR))
            return False
        for response in result.responses:
            self._send_action_response(turn, response)
        followups: list[str] = []
        for item in result.events:
            kind = item.get("event")
            if kind == "slot" and isinstance(item.get("name"), str):
                self._set_slot(tracker, item["name"], item.get("value"))
            elif kind == "reset_slots":
                tracker.slots = self.initial_slots()
                tracker.add(event("reset_slots"))
            elif kind == "followup" and isinstance(item.get("name"), str):
                followups.append(item["name"])
            elif kind == "active_loop":
                loop = item.get("name")
                if loop is None:
                    if tracker.stack:
                        self._end_flow(tracker, "deactivated")
                elif loop in self.bot.flows:
                    self._start_flow(turn, loop)
            elif kind == "restart":
                self._restart(turn)
            elif kind == "bot":
                data = item.get("data") or {}
                self._send_action_response(turn, {"text": item.get("text"), **data})
        for followup in followups:
            turn.spend()
            if not await self._action(turn, followup):
                return False
        return True

    def _send_action_response(self, turn: _Turn, response: dict[str, Any]) -> None:
        named = response.get("response") or response.get("template")
        if isinstance(named, str) and named in self.bot.responses:
            self.reply(turn, named)
            return
        cards = [
            {
                "title": str(e.get("title", "")) or "-",
                "subtitle": e.get("subtitle"),
                "image": e.get("image_url") or e.get("image"),
                "buttons": e.get("buttons") or [],
            }
            for e in response.get("elements") or []
            if isinstance(e, dict)
        ]
        try:
            variant = ResponseVariant(
                text=response.get("text") or None,
                buttons=response.get("buttons") or [],
                image=response.get("image")
                or (
                    response.get("attachment")
                    if isinstance(response.get("attachment"), str)
                    else None
                ),
                cards=cards,
                custom=response.get("custom") if isinstance(response.get("custom"), dict) else None,
            )
        except ValueError as e:
            log_event("dialog.bad_action_response", error=str(e))
            return
        if not variant.is_empty() or variant.custom:
            self.say(turn, variant)

    # -- slots -------------------------------------------------------------------------------

    @staticmethod
    def _sentiment(tracker: Tracker, message: UserMessage) -> sentiment.Sentiment | None:
        """Score a typed customer text (VADER: microseconds, no model to load) into the
        built-in slots ``sentiment`` (the label) and ``sentiment_score``; buttons, commands
        and messages without text keep the last values."""
        text = message.text.strip()
        if not text or message.parse.payload is not None or _PAYLOAD.match(text):
            return None
        mood = sentiment.score(text)
        tracker.slots[SENTIMENT_SLOT] = mood.label
        tracker.slots[SENTIMENT_SCORE_SLOT] = mood.score
        return mood

    def _set_slot(self, tracker: Tracker, name: str, value: Any) -> None:
        if name not in self.bot.slots:
            log_event("dialog.unknown_slot", slot=name)
            return
        if tracker.slots.get(name) == value:
            return
        tracker.slots[name] = value
        tracker.add(event("slot", name=name, value=value))

    def _mappings(self, name: str, slot: Slot) -> list[SlotMapping]:
        if slot.mappings:
            return slot.mappings
        return [SlotMapping(type="from_entity", entity=name), SlotMapping(type="from_text")]

    def _mapping_applies(
        self, mapping: SlotMapping, tracker: Tracker, intent: str | None, asked: str | None
    ) -> bool:
        if mapping.intents() and intent not in mapping.intents():
            return False
        if intent is not None and intent in mapping.not_intents():
            return False
        for cond in mapping.conditions:
            loop = cond.get("active_loop")
            if loop is not None and tracker.active_flow != loop:
                return False
            requested = cond.get("requested_slot")
            if requested is not None and asked != requested:
                return False
        return True

    def _from_mapping(self, mapping: SlotMapping, slot: Slot, message: UserMessage) -> Any:
        if mapping.type == "from_entity":
            values = [
                e.value
                for e in message.entities
                if e.entity == mapping.entity
                and (mapping.role is None or e.role == mapping.role)
                and (mapping.group is None or e.group == mapping.group)
            ]
            if not values:
                return None
            return values if slot.type == "list" else values[0]
        if mapping.type == "from_intent":
            return mapping.value
        if mapping.type == "from_regex" and mapping.pattern and message.text:
            m = re.search(mapping.pattern, message.text)
            if m is not None:
                return m.group(1) if m.groups() else m.group(0)
        return None

    def _fill_globally(self, tracker: Tracker, message: UserMessage, asked: str | None) -> None:
        """``from_entity``, ``from_intent`` and ``from_regex`` mappings fill on every message."""
        for name, slot in self.bot.slots.items():
            for mapping in self._mappings(name, slot):
                if mapping.type not in ("from_entity", "from_intent", "from_regex"):
                    continue
                if not self._mapping_applies(mapping, tracker, message.intent, asked):
                    continue
                value = self._from_mapping(mapping, slot, message)
                if value is not None:
                    coerced = coerce(slot, value)
                    if coerced is not None:
                        self._set_slot(tracker, name, coerced)
                    break

    def _extract_for_ask(
        self, tracker: Tracker, message: UserMessage, asked: str
    ) -> tuple[Any, bool]:
        """A value for the slot being asked, and whether it came from the bare text."""
        slot = self.bot.slots[asked]
        for event_ in tracker.turn_events():
            if isinstance(event_, SlotEvent) and event_.name == asked:
                return event_.value, False  # filled by an entity or an image this turn
        for mapping in self._mappings(asked, slot):
            if not self._mapping_applies(mapping, tracker, message.intent, asked):
                continue
            typed = message.text.strip() and message.parse.payload is None
            if mapping.type == "from_text" and typed:
                return message.text.strip(), True
            if mapping.type == "from_image" and mapping.vision is None and message.attachments:
                return message.attachments[0].get("upload_id"), False
        return None, False

    def _fill_from_vision(self, tracker: Tracker, message: UserMessage) -> str | None:
        """Slots from the vision steps' results; the intent a filled step triggers."""
        triggered = None
        steps = {v.name: v for v in self.bot.vision}
        for found in message.vision:
            step = steps.get(found.step)
            if step is None:
                continue
            result = found.result.to_dict()
            tracker.add(event("vision", name=found.step, model=found.model, result=result))
            filled = False
            for vslot in step.slots:
                value = vision_value(vslot, found.result)
                if value is not None:
                    coerced = coerce(self.bot.slots[vslot.slot], value)
                    if coerced is not None:
                        self._set_slot(tracker, vslot.slot, coerced)
                        filled = filled or value is not False
            for name, slot in self.bot.slots.items():
                for mapping in slot.mappings:
                    if mapping.type == "from_image" and mapping.vision == found.step:
                        value = found.result.text or found.result.top_label()
                        if value:
                            self._set_slot(tracker, name, coerce(slot, value))
                            filled = True
            if filled and step.intent and triggered is None:
                triggered = step.intent
        return triggered

    async def _validate(self, turn: _Turn, step: AskStep, name: str, value: Any) -> Any:
        """The accepted (normalised) value, or None when it is rejected."""
        slot = self.bot.slots[name]
        coerced = coerce(slot, value)
        if coerced is None:
            return None
        rule = step.validate_
        if rule is None:
            return coerced
        if rule.regex is not None and not re.fullmatch(rule.regex, str(coerced).strip()):
            return None
        if rule.min is not None or rule.max is not None:
            number = as_number(coerced)
            if (
                number is None
                or (rule.min is not None and number < rule.min)
                or (rule.max is not None and number > rule.max)
            ):
                return None
        if rule.choices is not None:
            match = [c for c in rule.choices if norm(c) == norm(coerced)]
            if not match:
                return None
            coerced = match[0]
        if rule.action is not None:
            turn.spend()
            candidate = event("slot", name=name, value=coerced)
            turn.tracker.add(event("action", name=rule.action))
            result = await self.actions.run(
                rule.action, bot=self.bot, tracker=turn.tracker, extra_events=[candidate]
            )
            if result.error is not None:
                await self._apply(turn, rule.action, result)
                return None
            for response in result.responses:
                self._send_action_response(turn, response)
                turn.explained = True
            for item in result.events:
                if item.get("event") == "slot" and item.get("name") == name:
                    coerced = item.get("value")
                elif item.get("event") == "slot" and isinstance(item.get("name"), str):
                    self._set_slot(turn.tracker, item["name"], item.get("value"))
            if coerced is None:
                return None
        return coerced

    # -- triggers, stories, fallback, handoff -------------------------------------------------

    def _is_fallback(self, message: UserMessage) -> bool:
        if message.intent is None:
            return True
        return message.parse.out_of_scope or message.confidence < self.bot.nlu.threshold

    def _triggered_flow(self, message: UserMessage) -> str | None:
        if message.intent is None or self._is_fallback(message):
            return None
        return self.triggers.get(message.intent)

    def _start_triggered(self, turn: _Turn, message: UserMessage) -> bool:
        flow = self._triggered_flow(message)
        if flow is None:
            return False
        self._start_flow(turn, flow)
        return True

    def story_actions(self, history: list[str]) -> list[str] | None:
        """Memoization: the actions that follow the longest stretch of a story matching the end
        of ``history`` (the last ``max_history`` user turns at most)."""
        if not history or not history[-1].startswith("intent:"):
            return None
        best: tuple[int, list[str]] | None = None
        ambiguous = False
        for tokens in self.stories:
            for j, token in enumerate(tokens):
                if token != history[-1]:
                    continue
                matched, turns = 1, 1
                while (
                    j - matched >= 0
                    and len(history) - 1 - matched >= 0
                    and turns < self.bot.max_history
                ):
                    if tokens[j - matched] != history[-1 - matched]:
                        break
                    turns += tokens[j - matched].startswith("intent:")
                    matched += 1
                complete = (
                    j - matched < 0
                    or len(history) - 1 - matched < 0
                    or turns >= self.bot.max_history
                )
                if not complete:
                    continue
                following = []
                for t in tokens[j + 1 :]:
                    if t.startswith("intent:"):
                        break
                    following.append(t.removeprefix("action:"))
                if not following:
                    continue
                if best is None or matched > best[0]:
                    best, ambiguous = (matched, following), False
                elif matched == best[0] and following != best[1]:
                    ambiguous = True  # stories disagree here: follow none (as Rasa does)
        return best[1] if best and not ambiguous else None

    async def _follow_story(self, turn: _Turn) -> bool:
        actions = self.story_actions(turn.tracker.history)
        if actions is None:
            return False
        turn.tracker.fallbacks = 0
        for name in actions:
            turn.spend()
            if name == "action_listen":
                break
            if not await self._action(turn, name):
                break
        await self._run(turn)
        return True

    async def _fallback(self, turn: _Turn) -> None:
        tracker = turn.tracker
        tracker.fallbacks += 1
        tracker.add(event("fallback", reason="low confidence or out of scope"))
        cfg = self.bot.fallback
        if cfg.handoff and tracker.fallbacks >= cfg.handoff_after:
            self._handoff(turn, f"{tracker.fallbacks} messages in a row not understood")
            return
        self._fallback_reply(turn)
        if tracker.stack and tracker.stack[-1].asked is not None:
            tracker.stack[-1].asked = None
            await self._run(turn)  # ask again

    def _fallback_reply(self, turn: _Turn) -> None:
        names = self.bot.fallback.responses
        if names:
            self.reply(turn, names[max(0, min(turn.tracker.fallbacks, len(names)) - 1)])
        else:
            self.say(turn, ResponseVariant(text=DEFAULT_FALLBACK))

    def _handoff(self, turn: _Turn, reason: str, *, announce: bool = True) -> None:
        tracker = turn.tracker
        self._end_all(tracker, "handoff")
        if tracker.status == WAITING:
            return
        tracker.status = WAITING
        tracker.add(event("handoff", reason=reason))
        if announce:
            name = self.bot.handoff.response
            self.reply(turn, name) if name else self.say(
                turn, ResponseVariant(text=DEFAULT_HANDOFF)
            )

    def _restart(self, turn: _Turn) -> None:
        tracker = turn.tracker
        tracker.add(event("restart"))
        tracker.stack.clear()
        tracker.history.clear()
        tracker.fallbacks = 0
        tracker.slots = self.initial_slots()
        name = "utter_restart" if "utter_restart" in self.bot.responses else None
        self.reply(turn, name) if name else self.say(turn, ResponseVariant(text=DEFAULT_RESTART))

    # -- responses ---------------------------------------------------------------------------

    def reply(self, turn: _Turn, name: str, *, record: bool = True) -> None:
        """Send the named response (a variant whose conditions hold, templated)."""
        variants = self.bot.responses.get(name) or []
        slots = turn.tracker.slots
        conditional = [
            v
            for v in variants
            if v.condition and all(norm(slots.get(c.name)) == norm(c.value) for c in v.condition)
        ]
        plain = [v for v in variants if not v.condition]
        pool = conditional or plain
        if not pool:
            log_event("dialog.no_response_variant", response=name)
            return
        if record:
            turn.tracker.history.append(f"action:{name}")
        self.say(turn, self.rng.choice(pool), name=name)

    def say(self, turn: _Turn, variant: ResponseVariant, *, name: str | None = None) -> None:
        message = render(
            variant, turn.tracker.slots, sender_id=turn.tracker.sender_id, bot_name=self.bot.name
        )
        turn.messages.append(message)
        offered = [b.payload for b in message.options()]
        if offered:  # "2" on a text-only channel picks the second of these
            turn.tracker.options = offered
        data = message.model_copy(update={"text": None}).to_wire()
        turn.tracker.add(event("bot", text=message.text, data=data, response=name))
