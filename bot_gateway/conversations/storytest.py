"""Bot story tests: end-to-end conversations written as YAML, run against a bot.

A stories file holds cases; each is a list of steps checked in order::

    stories:
      - name: track an order by number
        steps:
          - user: where is my order?
            intent: track_order           # optional: the intent NLU should find
            entities: [{entity: order_id, value: PX-100234}]   # optional, same
          - bot: What is your order number?    # exact text (after templating), or
          - bot: utter_ask_order_id            # a response name (any of its variants)
          - user: PX-100234
          - slots: {order_id: PX-100234}
          - bot: {contains: shipped}           # a part of the text
          - user: {image: label.png}           # an image given alongside; {image, text}
          - bot: {response: utter_track, buttons: [Track, Cancel]}   # keys combine
          - user: {payload: /track_order, text: Track}   # a button click
          - status: waiting_for_agent          # or bot

Each ``user`` step is one turn; the ``bot`` steps after it are matched, in order, against the
messages the bot sent in that turn. A message no ``bot`` step expects is a failure, and so is
an expected message the bot did not send. ``bot`` mappings take ``text`` (exact), ``contains``,
``response`` (the response name), ``buttons`` (button titles, in order) and ``image`` (true,
or the image URL). ``slots`` and ``status`` check the conversation after the latest turn.

When a case is run against the engine alone (``engine_converse``), a step's ``intent`` and
``entities`` *are* the parse (confidence 1.0) and a step without them is not understood (the
bot's fallback); when it is run through a bot's real NLU they are checked against the parse.

``load_cases(text)`` reads a file (``InvalidInput`` names the story, step and line of every
problem); ``run_cases(cases, converse)`` runs them through any ``converse(sender_id, turn)``
and returns a ``TestReport``; ``engine_converse(engine)`` is such a ``converse`` over a
``DialogEngine`` in memory (no HTTP, no database).
"""

from __future__ import annotations

import mimetypes
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from bot_gateway.conversations.engine import DialogEngine, UserMessage, parse_payload
from bot_gateway.conversations.events import BotEvent
from bot_gateway.conversations.tracker import BOT, WAITING, Tracker
from bot_gateway.conversations.understanding import Intent, Parse, VisionResult
from core.documents import DocumentLimits, read_yaml_document
from core.errors import InvalidInput, ParleyError
from core.logging import log_event
from core.messages import OutboundMessage

__all__ = [
    "BotExpectation",
    "CaseResult",
    "CaseStep",
    "EngineConverse",
    "StoryCase",
    "TestReport",
    "TurnReply",
    "UserTurn",
    "engine_converse",
    "image_names",
    "load_cases",
    "run_cases",
]

STEP_KEYS = ("user", "bot", "slots", "status")
USER_KEYS = ("text", "image", "payload")
BOT_KEYS = ("text", "contains", "response", "buttons", "image")
STATUSES = (BOT, WAITING)


# --- what a case holds -----------------------------------------------------------------------


@dataclass(frozen=True)
class UserTurn:
    """One customer message: text, a button ``payload`` (``/intent{...}``), an image (its
    file name; ``image_bytes`` is filled in by ``run_cases`` from the files given), and the
    intent and entities expected of NLU (in engine-only runs, the parse itself)."""

    text: str = ""
    payload: str | None = None
    image: str | None = None
    intent: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    image_bytes: bytes | None = None


@dataclass(frozen=True)
class BotExpectation:
    """What one bot message must be. ``name_or_text`` (a plain ``bot: x`` step) matches the
    message's text or its response name; the others must all hold when given."""

    name_or_text: str | None = None
    text: str | None = None
    contains: str | None = None
    response: str | None = None
    buttons: list[str] | None = None
    image: str | bool | None = None

    def matches(self, message: OutboundMessage, response: str | None) -> bool:
        text = message.text
        if self.name_or_text is not None and self.name_or_text not in (text, response):
            return False
        if self.text is not None and text != self.text:
            return False
        if self.contains is not None and self.contains not in (text or ""):
            return False
        if self.response is not None and response != self.response:
            return False
        if self.buttons is not None and _button_titles(message) != self.buttons:
            return False
        image = message.image
        if self.image is True and not image:
            return False
        return not (isinstance(self.image, str) and image != self.image)

    def describe(self) -> str:
        if self.name_or_text is not None:
            return repr(self.name_or_text)
        parts = []
        for key in BOT_KEYS:
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key} {value!r}")
        return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True)
class CaseStep:
    """One step of a case: ``kind`` is user, bot, slots or status; ``number`` counts from 1."""

    kind: str
    number: int
    line: int | None
    turn: UserTurn | None = None
    expect: BotExpectation | None = None
    slots: dict[str, Any] | None = None
    status: str | None = None


@dataclass(frozen=True)
class StoryCase:
    name: str
    steps: list[CaseStep]
    line: int | None = None


@dataclass(frozen=True)
class TurnReply:
    """What the bot did in one turn: its messages, the response name of each (None for inline
    text), the slots and status after the turn, and what NLU understood (``entities`` None: not
    reported)."""

    messages: list[OutboundMessage]
    responses: list[str | None]
    slots: dict[str, Any]
    status: str
    intent: str | None = None
    entities: list[dict[str, Any]] | None = None


Converse = Callable[[str, UserTurn], Awaitable[TurnReply]]


# --- loading ---------------------------------------------------------------------------------


def load_cases(text: str, limits: DocumentLimits | None = None) -> list[StoryCase]:
    """The cases of a stories file, read within the document ``limits`` (the settings' when
    not given); ``InvalidInput`` lists every problem with its story, step and line (``errors``
    in its details)."""
    try:
        if any(isinstance(t, yaml.AliasToken) for t in yaml.scan(text, Loader=yaml.SafeLoader)):
            raise InvalidInput(
                "the stories file uses YAML aliases (*name); write the steps out in full",
                errors=["aliases are not supported"],
            )
        document = read_yaml_document(text, what="the stories file", limits=limits)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise InvalidInput(
            f"the stories file is not valid YAML: {where}{problem}", errors=[problem]
        ) from e
    loader = _Loader(document.root)
    cases = loader.cases(document.data)
    if loader.errors:
        errors = loader.errors
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise InvalidInput(f"the stories file has {len(errors)} problem(s): {shown}", errors=errors)
    return cases


def image_names(cases: Sequence[StoryCase]) -> list[str]:
    """The image files the cases send, each once, in order of use."""
    names: list[str] = []
    for case in cases:
        for step in case.steps:
            image = step.turn.image if step.turn else None
            if image and image not in names:
                names.append(image)
    return names


class _Loader:
    """Checks the plain data of a stories file, with lines from its YAML node tree."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root
        self.errors: list[str] = []

    def cases(self, data: Any) -> list[StoryCase]:
        if not isinstance(data, dict) or not isinstance(data.get("stories"), list):
            self.errors.append(
                "(top): a stories file is a mapping with a `stories` list "
                "(each story has `name` and `steps`)"
            )
            return []
        unknown = sorted(str(k) for k in data if k != "stories")
        if unknown:
            self.errors.append(f"(top): unknown key(s) {', '.join(unknown)}; only `stories`")
        if not data["stories"]:
            self.errors.append("stories: no stories; add at least one")
        out: list[StoryCase] = []
        names: set[str] = set()
        for i, story in enumerate(data["stories"]):
            case = self.story(i, story)
            if case is None:
                continue
            if case.name in names:
                self.errors.append(f"{self.where(i, case.name)}: the name is used twice")
            names.add(case.name)
            out.append(case)
        return out

    def story(self, i: int, story: Any) -> StoryCase | None:
        here = self.where(i)
        if not isinstance(story, dict):
            self.errors.append(f"{here}: a story is a mapping with `name` and `steps`")
            return None
        name = story.get("name")
        if not isinstance(name, str) or not name.strip():
            self.errors.append(f"{here}: give the story a `name`")
            name = f"story {i + 1}"
        here = self.where(i, name)
        unknown = sorted(str(k) for k in story if k not in ("name", "steps"))
        if unknown:
            self.errors.append(f"{here}: unknown key(s) {', '.join(unknown)}; use name, steps")
        steps = story.get("steps")
        if not isinstance(steps, list) or not steps:
            self.errors.append(f"{here}: `steps` is a list of user/bot/slots/status steps")
            return None
        out: list[CaseStep] = []
        seen_user = False
        for j, raw in enumerate(steps):
            step = self.step(i, name, j, raw)
            if step is None:
                continue
            if step.kind != "user" and not seen_user:
                self.errors.append(
                    f"{self.where(i, name, j)}: a `{step.kind}` step checks a user turn; "
                    "put a `user` step before it"
                )
            seen_user = seen_user or step.kind == "user"
            out.append(step)
        return StoryCase(name=name, steps=out, line=self.line(i))

    def step(self, i: int, name: str, j: int, raw: Any) -> CaseStep | None:
        here = self.where(i, name, j)
        kinds = [k for k in STEP_KEYS if isinstance(raw, dict) and k in raw]
        if len(kinds) != 1:
            self.errors.append(f"{here}: a step has exactly one of {', '.join(STEP_KEYS)}")
            return None
        kind = kinds[0]
        extra = set(raw) - {kind} - ({"intent", "entities"} if kind == "user" else set())
        if extra:
            allowed = " (a user step also takes intent, entities)" if kind == "user" else ""
            self.errors.append(
                f"{here}: unknown key(s) {', '.join(sorted(map(str, extra)))} "
                f"in a `{kind}` step{allowed}"
            )
            return None
        number, line = j + 1, self.line(i, j)
        value = raw[kind]
        if kind in ("user", "bot") and isinstance(value, bool | int | float):
            # YAML reads `yes`, `no`, `on` and `12.50` as booleans and numbers: keep the text
            scalar = _child(self.node(i, j), kind)
            value = scalar.value if isinstance(scalar, yaml.ScalarNode) else str(value)
        problem: str | None = None
        if kind == "user":
            turn, problem = _user_turn(value, raw.get("intent"), raw.get("entities"))
            if turn is not None:
                return CaseStep("user", number, line, turn=turn)
        elif kind == "bot":
            expect, problem = _expectation(value)
            if expect is not None:
                return CaseStep("bot", number, line, expect=expect)
        elif kind == "slots":
            if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
                return CaseStep("slots", number, line, slots=dict(value))
            problem = "`slots` is a mapping of slot names to expected values"
        elif value in STATUSES:
            return CaseStep("status", number, line, status=value)
        else:
            problem = f"`status` is one of {', '.join(STATUSES)}, not {value!r}"
        self.errors.append(f"{here}: {problem}")
        return None

    def where(self, i: int, name: str | None = None, j: int | None = None) -> str:
        out = f'story "{name}"' if name else f"stories[{i}]"
        if j is not None:
            out += f", step {j + 1}"
        line = self.line(i, j)
        return f"{out} (line {line})" if line else out

    def line(self, i: int, j: int | None = None) -> int | None:
        """The 1-based line of story ``i`` (or of its step ``j``), when the tree has one."""
        node = self.node(i, j)
        return node.start_mark.line + 1 if node is not None else None

    def node(self, i: int, j: int | None = None) -> yaml.Node | None:
        """The YAML node of story ``i`` (or of its step ``j``)."""
        node = _child(_child(self.root, "stories"), i)
        return node if j is None else _child(_child(node, "steps"), j)


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(key, str):
        return next((v for k, v in node.value if getattr(k, "value", None) == key), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]
    return None


def _user_turn(value: Any, intent: Any, entities: Any) -> tuple[UserTurn | None, str | None]:
    if intent is not None and (not isinstance(intent, str) or not intent):
        return None, "`intent` is an intent name"
    entity_list = entities if entities is not None else []
    if not isinstance(entity_list, list) or not all(
        isinstance(e, dict) and isinstance(e.get("entity"), str) and "value" in e
        for e in entity_list
    ):
        return None, "`entities` is a list of {entity: name, value: v}"
    if isinstance(value, str) and value:
        return UserTurn(text=value, intent=intent, entities=list(entity_list)), None
    if not isinstance(value, dict) or not value:
        return None, "`user` is the text, or a mapping with text, image and/or payload"
    unknown = set(value) - set(USER_KEYS)
    if unknown:
        return None, f"unknown key(s) {', '.join(sorted(map(str, unknown)))} in `user`; use " + (
            ", ".join(USER_KEYS)
        )
    if not all(isinstance(v, str) and v for v in value.values()):
        return None, "the text, image and payload of a `user` step are non-empty strings"
    payload = value.get("payload")
    if payload is not None and parse_payload(payload) is None:
        return None, f'payload {payload!r} is not "/intent" or /intent{{"entity": "value"}}'
    turn = UserTurn(
        text=value.get("text", ""),
        payload=payload,
        image=value.get("image"),
        intent=intent,
        entities=list(entity_list),
    )
    return turn, None


def _expectation(value: Any) -> tuple[BotExpectation | None, str | None]:
    if isinstance(value, str) and value:
        return BotExpectation(name_or_text=value), None
    if not isinstance(value, dict) or not value:
        return None, "`bot` is the text or a response name, or a mapping of " + ", ".join(BOT_KEYS)
    unknown = set(value) - set(BOT_KEYS)
    if unknown:
        return None, f"unknown key(s) {', '.join(sorted(map(str, unknown)))} in `bot`; use " + (
            ", ".join(BOT_KEYS)
        )
    for key in ("text", "contains", "response"):
        if key in value and not (isinstance(value[key], str) and value[key]):
            return None, f"`{key}` in `bot` is a non-empty string"
    buttons = value.get("buttons")
    if buttons is not None and not (
        isinstance(buttons, list) and all(isinstance(b, str) for b in buttons)
    ):
        return None, "`buttons` in `bot` is a list of button titles"
    image = value.get("image")
    if image is not None and not (image is True or (isinstance(image, str) and image)):
        return None, "`image` in `bot` is true (any image) or the image URL"
    return BotExpectation(
        text=value.get("text"),
        contains=value.get("contains"),
        response=value.get("response"),
        buttons=buttons,
        image=image,
    ), None


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    name: str
    passed: bool
    failures: list[str]
    transcript: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "failures": list(self.failures),
            "transcript": list(self.transcript),
        }


@dataclass(frozen=True)
class TestReport:
    __test__ = False  # not a pytest test class

    cases: list[CaseResult]

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def failed(self) -> int:
        return len(self.cases) - self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failed": self.failed,
            "cases": [c.to_dict() for c in self.cases],
        }


async def run_cases(
    cases: Sequence[StoryCase],
    converse: Converse,
    *,
    files: Mapping[str, bytes] | None = None,
    check_intents: bool = True,
) -> TestReport:
    """Run each case as a new conversation (sender ``test-<uuid>``), one turn per ``user``
    step; a case stops at its first failure. ``files`` maps image names to their bytes."""
    results = []
    for case in cases:
        run = _CaseRun(case, converse, files or {}, check_intents)
        results.append(await run.run())
    report = TestReport(results)
    log_event("storytest.finished", passed=report.passed, failed=report.failed)
    return report


class _Failed(Exception):
    pass


class _CaseRun:
    def __init__(
        self, case: StoryCase, converse: Converse, files: Mapping[str, bytes], check: bool
    ) -> None:
        self.case = case
        self.converse = converse
        self.files = files
        self.check_intents = check
        self.sender_id = f"test-{uuid.uuid4().hex}"
        self.reply: TurnReply | None = None
        self.next_message = 0
        self.transcript: list[str] = []

    async def run(self) -> CaseResult:
        try:
            for step in self.case.steps:
                await self.step(step)
            self.no_leftovers(f"after step {self.case.steps[-1].number}")
        except _Failed as e:
            return CaseResult(self.case.name, False, [str(e)], self.transcript)
        return CaseResult(self.case.name, True, [], self.transcript)

    async def step(self, step: CaseStep) -> None:
        at = f"step {step.number}"
        if step.kind == "user":
            assert step.turn is not None
            self.no_leftovers(at)
            await self.user(at, step.turn)
            return
        reply = self.reply
        assert reply is not None  # load_cases puts a user step first
        if step.kind == "bot":
            assert step.expect is not None
            self.bot(at, reply, step.expect)
        elif step.kind == "slots":
            assert step.slots is not None
            for name, expected in step.slots.items():
                if name not in reply.slots:
                    raise _Failed(f"{at}: the bot has no slot {name!r}")
                if reply.slots[name] != expected:
                    raise _Failed(
                        f"{at}: expected slot {name} = {expected!r}, got {reply.slots[name]!r}"
                    )
        elif reply.status != step.status:
            raise _Failed(f"{at}: expected status {step.status}, got {reply.status}")

    async def user(self, at: str, turn: UserTurn) -> None:
        if turn.image is not None:
            data = self.files.get(turn.image)
            if data is None:
                given = ", ".join(sorted(self.files)) or "none"
                raise _Failed(
                    f"{at}: the image {turn.image!r} was not given (files given: {given}); "
                    "put it beside the stories file or name its folder with --files"
                )
            turn = replace(turn, image_bytes=data)
        self.transcript.append("user: " + _describe_turn(turn))
        try:
            reply = await self.converse(self.sender_id, turn)
        except ParleyError as e:
            raise _Failed(f"{at}: the turn failed: {e.message}") from e
        self.reply, self.next_message = reply, 0
        for message, response in zip(reply.messages, reply.responses, strict=False):
            self.transcript.append("bot: " + _describe_message(message, response))
        if self.check_intents and turn.intent is not None and reply.intent != turn.intent:
            raise _Failed(f"{at}: expected intent {turn.intent}, got {reply.intent or 'none'}")
        if self.check_intents and reply.entities is not None:
            for want in turn.entities:
                found = [
                    e
                    for e in reply.entities
                    if e.get("entity") == want["entity"] and e.get("value") == want["value"]
                ]
                if not found:
                    got = ", ".join(f"{e.get('entity')}={e.get('value')!r}" for e in reply.entities)
                    raise _Failed(
                        f"{at}: expected entity {want['entity']}={want['value']!r}, "
                        f"got {got or 'no entities'}"
                    )

    def bot(self, at: str, reply: TurnReply, expect: BotExpectation) -> None:
        i = self.next_message
        if i >= len(reply.messages):
            said = len(reply.messages)
            raise _Failed(
                f"{at}: expected bot {expect.describe()}, got nothing more "
                f"(the bot sent {said} message{'s' if said != 1 else ''} in that turn)"
            )
        message, response = reply.messages[i], _response_at(reply, i)
        if not expect.matches(message, response):
            got = _describe_message(message, response)
            raise _Failed(f"{at}: expected bot {expect.describe()}, got {got}")
        self.next_message += 1

    def no_leftovers(self, at: str) -> None:
        reply = self.reply
        if reply is None or self.next_message >= len(reply.messages):
            return
        i = self.next_message
        said = _describe_message(reply.messages[i], _response_at(reply, i))
        raise _Failed(f"{at}: the bot also said {said}, which no `bot` step expects")


def _response_at(reply: TurnReply, i: int) -> str | None:
    return reply.responses[i] if i < len(reply.responses) else None


def _button_titles(message: OutboundMessage) -> list[str]:
    return [b.title for b in message.buttons or message.quick_replies]


def _describe_message(message: OutboundMessage, response: str | None) -> str:
    text = message.text
    out = repr(text) if text else ""
    titles = _button_titles(message)
    if titles:
        out += f" buttons {titles!r}"
    if message.image:
        out += f" image {message.image!r}"
    if message.cards:
        out += f" {len(message.cards)} card(s)"
    out = out.strip() or "an empty message"
    return f"{out} ({response})" if response else out


def _describe_turn(turn: UserTurn) -> str:
    parts = [repr(turn.text)] if turn.text else []
    if turn.payload:
        parts.append(f"payload {turn.payload}")
    if turn.image:
        parts.append(f"image {turn.image}")
    return " ".join(parts) or "(empty)"


# --- the engine alone ------------------------------------------------------------------------


class EngineConverse:
    """``converse`` over a ``DialogEngine`` in memory: one tracker per sender (``trackers``),
    the parse taken from the turn (a payload, else its ``intent`` and ``entities`` at
    confidence 1.0, else nothing: the bot's fallback), and ``vision`` results per image name
    standing in for the bot's vision models."""

    def __init__(
        self,
        engine: DialogEngine,
        *,
        vision: Mapping[str, Sequence[VisionResult]] | None = None,
    ) -> None:
        self.engine = engine
        self.vision = vision or {}
        self.trackers: dict[str, Tracker] = {}

    def tracker(self, sender_id: str) -> Tracker:
        tracker = self.trackers.get(sender_id)
        if tracker is None:
            tracker = self.engine.new_tracker(sender_id, sender_id, "test")
            self.engine.start_session(tracker)
            self.trackers[sender_id] = tracker
        return tracker

    async def __call__(self, sender_id: str, turn: UserTurn) -> TurnReply:
        tracker = self.tracker(sender_id)
        attachments: list[dict[str, Any]] = []
        vision: list[VisionResult] = []
        if turn.image is not None:
            media_type = mimetypes.guess_type(turn.image)[0] or "application/octet-stream"
            attachments.append(
                {"upload_id": turn.image, "url": turn.image, "media_type": media_type}
            )
            vision = list(self.vision.get(turn.image, ()))
        parse = turn_parse(turn)
        message = UserMessage(
            text=turn.text.strip(),
            parse=parse,
            attachments=attachments,
            vision=vision,
        )
        await self.engine.handle(tracker, message)
        entities = [e.to_dict() for e in parse.entities]
        return reply_of(tracker, intent=parse.intent_name, entities=entities)


def engine_converse(
    engine: DialogEngine, *, vision: Mapping[str, Sequence[VisionResult]] | None = None
) -> EngineConverse:
    """An in-memory ``converse`` for engine-only runs (see ``EngineConverse``)."""
    return EngineConverse(engine, vision=vision)


def turn_parse(turn: UserTurn) -> Parse:
    """The parse an engine-only run uses: the payload's, else the expected intent and
    entities at confidence 1.0, else empty (not understood)."""
    payload = parse_payload(turn.payload or turn.text) if (turn.payload or turn.text) else None
    if payload is not None:
        return payload
    if turn.intent is None:
        return Parse.of({"entities": list(turn.entities)} if turn.entities else {})
    intent = Intent(name=turn.intent, confidence=1.0)
    return Parse.of(
        {
            "intent": intent,
            "entities": list(turn.entities),
            "intent_ranking": [intent],
            "out_of_scope": False,
        }
    )


def reply_of(
    tracker: Tracker, *, intent: str | None, entities: list[dict[str, Any]] | None = None
) -> TurnReply:
    """A ``TurnReply`` from the ``bot`` events of the tracker's current turn."""
    messages: list[OutboundMessage] = []
    responses: list[str | None] = []
    for item in tracker.turn_events():
        if not isinstance(item, BotEvent):
            continue
        message = {k: v for k, v in item.data.items() if v}
        if item.text:
            message = {"text": item.text, **message}
        messages.append(OutboundMessage.of(message))
        responses.append(item.response)
    return TurnReply(
        messages=messages,
        responses=responses,
        slots=dict(tracker.slots),
        status=tracker.status,
        intent=intent,
        entities=entities,
    )
