"""A bot definition (YAML or JSON): NLU, slots, responses, flows, actions, vision steps,
fallback, handoff, session, and Rasa stories; parsed and checked as a whole.

``parse_definition(data)`` returns a ``BotDefinition`` or raises ``InvalidBotDefinition`` whose
``problems`` list every problem with its path (``errors``: the same as ``path: message`` lines;
``details``: as ``{field, path, message}``)::

    flows.track_order.steps[2].slot: unknown slot "order_id"

A flow is a list of steps, each a mapping with one of these keys::

    ask: order_id          ask for a slot (response, validate, retries, invalid, on_fail)
    reply: utter_status    send a response (a name, or an inline {text, buttons, ...})
    action: lookup_order   run an action (``actions``, built-in, or the action server)
    set: {slot: value}     set slots
    if: [{slot, equals | in | is_set | not_set | above | below, then: [steps]}], else: [steps]
    if: "slot == value"    the same, one case: then: [steps] (and else:) beside it
    link: other_flow       end this flow and start another
    handoff: utter_handoff hand the conversation to a human (the response is optional;
                           ``reason: negative_sentiment`` names why, for the agents)
    end: true              end the flow (``end: utter_bye`` sends a response first)

Built-in slots need no declaration: ``sentiment`` (positive, neutral or negative) and
``sentiment_score`` (0 to 1) hold the sentiment of the customer's last typed message
(``nlu.sentiment``), so ``if: sentiment == negative`` branches on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from core.documents import DocumentLimits, load_yaml
from core.errors import InvalidInput
from core.regex_safety import regex_problem

__all__ = [
    "BUILTIN_ACTIONS",
    "BotDefinition",
    "InvalidBotDefinition",
    "Problem",
    "parse_definition",
    "read_definition_text",
]

SLOT_TYPES = ("text", "number", "bool", "categorical", "list", "any")
SENTIMENT_SLOT = "sentiment"
SENTIMENT_SCORE_SLOT = "sentiment_score"
BUILTIN_SLOTS = frozenset({SENTIMENT_SLOT, SENTIMENT_SCORE_SLOT})
"""Slots the engine fills on every typed customer message; conditions may read them undeclared."""
_CONDITION = re.compile(r"^\s*(?P<slot>[A-Za-z_][\w-]*)\s*==\s*(?P<value>\S(?:.*\S)?)\s*$", re.S)
BUILTIN_ACTIONS = {
    "action_restart": "forget slots and flows, start over",
    "action_listen": "wait for the customer",
    "action_session_start": "start a new session",
    "action_default_fallback": "the fallback reply",
    "action_handoff": "hand the conversation to a human",
    "action_deactivate_loop": "end the active flow",
    "action_back": "undo the last user message",
}
NAME = r"^[A-Za-z_][A-Za-z0-9_\-]*$"


@dataclass(frozen=True)
class Problem:
    """One problem of a bot definition: where (a path such as ``flows.order.steps[2].if``;
    ``(top)`` for the definition as a whole) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidBotDefinition(InvalidInput):
    """A bot definition with problems: ``problems``; ``details["errors"]`` lists them as
    ``path: message`` lines and ``details["details"]`` as ``{field, path, message}`` (the
    shape of the API's other validation errors)."""

    code = "invalid_bot"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [str(p) for p in problems]
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        super().__init__(
            f"the bot definition has {len(errors)} problem(s): {shown}",
            errors=errors,
            details=[{"field": p.path, "path": p.path, "message": p.message} for p in problems],
        )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- responses ------------------------------------------------------------------------------


class Button(_Model):
    title: str = Field(min_length=1, max_length=200)
    payload: str = Field(min_length=1, max_length=500)


class Card(_Model):
    title: str = Field(min_length=1, max_length=200)
    subtitle: str | None = None
    image: str | None = None
    buttons: list[Button] = []


class SlotCondition(_Model):
    """``{name: slot, value: v}``: a response variant used only when the slot has that value."""

    name: str
    value: Any = None
    type: Literal["slot"] = "slot"


class ResponseVariant(_Model):
    text: str | None = Field(default=None, max_length=4000)
    buttons: list[Button] = []
    quick_replies: list[Button] = []
    image: str | None = None
    cards: list[Card] = []
    custom: dict[str, Any] | None = None
    condition: list[SlotCondition] = []

    def is_empty(self) -> bool:
        return not (self.text or self.buttons or self.quick_replies or self.image or self.cards)


# --- slots ----------------------------------------------------------------------------------


class SlotMapping(_Model):
    """Where a slot's value comes from, as in Rasa: ``from_entity`` (every message that has the
    entity), ``from_intent`` (a fixed value when the intent is seen), ``from_text`` (the whole
    text, when the slot is being asked for), ``from_regex`` (the first match of ``pattern`` in
    any message, group 1 if it has one), ``from_image`` (a vision step's result)."""

    type: Literal["from_entity", "from_intent", "from_text", "from_regex", "from_image"]
    entity: str | None = None
    role: str | None = None
    group: str | None = None
    intent: str | list[str] | None = None
    not_intent: str | list[str] | None = None
    value: Any = None
    pattern: str | None = None  # from_regex: the first match in any message (group 1 if any)
    vision: str | None = None  # from_image: a vision step's text or top label; none: the upload
    conditions: list[dict[str, Any]] = []  # Rasa: [{active_loop: form, requested_slot: slot}]

    def intents(self) -> list[str]:
        return _as_list(self.intent)

    def not_intents(self) -> list[str]:
        return _as_list(self.not_intent)


class Slot(_Model):
    type: Literal["text", "number", "bool", "categorical", "list", "any"] = "text"
    values: list[str] | None = None  # categorical
    initial_value: Any = None
    mappings: list[SlotMapping] = []
    min: float | None = None
    max: float | None = None
    influence_conversation: bool | None = None  # accepted from Rasa, unused


# --- flows ----------------------------------------------------------------------------------


class Validation(_Model):
    """How an ``ask`` checks a value: a regex (full match), number bounds, allowed choices,
    or a validation action (``validate_<form>`` on the action server)."""

    regex: str | None = None
    min: float | None = None
    max: float | None = None
    choices: list[str] | None = None
    action: str | None = None


class AskStep(_Model):
    ask: str
    response: str | None = None  # default utter_ask_<slot>, else a generated question
    validate_: Validation | None = Field(default=None, alias="validate")
    retries: int = Field(default=2, ge=0, le=10)
    invalid: str | None = None  # response on a rejected value; default utter_invalid_<slot>
    on_fail: str = "handoff"  # after the retries: handoff, end, or a flow name
    always: bool = False  # ask even when the slot already has a value

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ReplyStep(_Model):
    reply: str | ResponseVariant


class ActionStep(_Model):
    action: str


class SetStep(_Model):
    set: dict[str, Any]


class Case(_Model):
    slot: str
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    is_set: bool | None = None
    not_set: bool | None = None
    above: float | None = None
    below: float | None = None
    then: list[Step] = []

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _expression(cls, data: Any) -> Any:
        """``{when: "slot == value", then}`` (a string ``if``, see ``BranchStep``) as
        ``{slot, equals, then}``; the value may be quoted."""
        if not isinstance(data, dict) or "when" not in data:
            return data
        data = dict(data)
        text = data.pop("when")
        m = _CONDITION.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError(
                f"{text!r} is not a condition: write `slot == value` (e.g. sentiment == "
                "negative), or a list of cases {slot, equals | in | ..., then}"
            )
        value = m.group("value")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        return {**data, "slot": m.group("slot"), "equals": value}


class BranchStep(_Model):
    if_: list[Case] = Field(alias="if", min_length=1)
    else_: list[Step] = Field(default=[], alias="else")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _one_condition(cls, data: Any) -> Any:
        """``if: "slot == value"`` with ``then`` beside it: one case (``Case._expression``)."""
        if not isinstance(data, dict) or not isinstance(data.get("if"), str):
            return data
        data = dict(data)
        case = {"when": data.pop("if"), "then": data.pop("then", [])}
        return {**data, "if": [case]}


class LinkStep(_Model):
    link: str


class HandoffStep(_Model):
    handoff: str | bool = True
    reason: str | None = Field(
        default=None, min_length=1, max_length=200
    )  # the conversation's handoff_reason (e.g. negative_sentiment); default "flow <name>"


class EndStep(_Model):
    end: str | bool = True


STEP_KINDS: dict[str, type[_Model]] = {
    "ask": AskStep,
    "reply": ReplyStep,
    "action": ActionStep,
    "set": SetStep,
    "if": BranchStep,
    "link": LinkStep,
    "handoff": HandoffStep,
    "end": EndStep,
}


def _step_kind(step: Any) -> str | None:
    """The tag of a step: the one key of ``STEP_KINDS`` it has."""
    if isinstance(step, _Model):
        return next(f"step:{k}" for k, cls in STEP_KINDS.items() if isinstance(step, cls))
    if isinstance(step, dict):
        kinds = [k for k in step if k in STEP_KINDS]
        if len(kinds) == 1:
            return f"step:{kinds[0]}"
    return None


Step = Annotated[
    Annotated[AskStep, Tag("step:ask")]
    | Annotated[ReplyStep, Tag("step:reply")]
    | Annotated[ActionStep, Tag("step:action")]
    | Annotated[SetStep, Tag("step:set")]
    | Annotated[BranchStep, Tag("step:if")]
    | Annotated[LinkStep, Tag("step:link")]
    | Annotated[HandoffStep, Tag("step:handoff")]
    | Annotated[EndStep, Tag("step:end")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs exactly one of " + ", ".join(STEP_KINDS),
    ),
]


class Flow(_Model):
    description: str = ""
    intents: list[str] = []  # the intents that start this flow
    steps: list[Step] = []
    from_rule: bool = False  # imported from a Rasa rule (a short reply, not a form)


Case.model_rebuild()
BranchStep.model_rebuild()


# --- actions, vision, policies ---------------------------------------------------------------


class HttpAction(_Model):
    """An HTTP request with ``{slot}`` templating; ``response`` maps slots to fields of the
    JSON answer (``status``, ``items.0.name``)."""

    type: Literal["http"] = "http"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str
    headers: dict[str, str] = {}
    body: Any = None
    response: dict[str, str] = {}
    reply: str | None = None  # a response sent after success
    on_error: str | None = None  # a response sent on failure (default: a generic apology)
    on_not_found: str | None = None  # a response for a 404
    timeout_s: float = Field(default=5.0, gt=0, le=30)


class SetSlotAction(_Model):
    type: Literal["set_slot"]
    slots: dict[str, Any]


Action = Annotated[HttpAction | SetSlotAction, Field(discriminator="type")]


class ActionServer(_Model):
    url: str
    headers: dict[str, str] = {}  # sent with every call (a token); stored encrypted
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    on_error: str | None = None
    actions: list[str] = []  # names served there; empty: any unknown action


class VisionSlot(_Model):
    """Fill ``slot`` from a vision result: the first ``regex`` match in OCR text (group 1 if
    the pattern has a group); a classifier's ``label`` (true/false, or ``value``) at least
    ``min_probability``; for detection, the number of ``label`` boxes (or true/false)."""

    slot: str
    regex: str | None = None
    label: str | None = None
    min_probability: float = Field(default=0.5, ge=0, le=1)
    value: Any = None


class VisionStep(_Model):
    name: str = Field(pattern=NAME)
    model: str  # an id, an alias, or prebuilt-ocr / prebuilt-image
    slots: list[VisionSlot] = []
    intent: str | None = None  # the intent a filled slot triggers (when the message has no text)


class NluConfig(_Model):
    """The bot's NLU: a model id or alias, or a dataset to train, or inline examples."""

    model: str | None = None
    dataset: str | None = None
    intents: dict[str, list[str]] | None = None  # inline training data: intent -> examples
    entities_model: str | None = None  # e.g. prebuilt-entities, merged with the model's own
    threshold: float = Field(default=0.4, ge=0, le=1)  # below it the message is a fallback


class FallbackConfig(_Model):
    responses: list[str] = []  # in turn; default: a built-in "could you rephrase?"
    handoff_after: int = Field(default=2, ge=1, le=10)  # consecutive fallbacks, then handoff
    handoff: bool = True


class HandoffConfig(_Model):
    intents: list[str] = []  # intents that mean "talk to a human"
    response: str | None = None
    released_response: str | None = None


class SessionConfig(_Model):
    expiry_minutes: float = Field(default=60, ge=0)  # 0: sessions never expire
    carry_over_slots: bool = False


class StoryStep(_Model):
    intent: str | None = None
    action: str | None = None
    entities: list[Any] = []
    slot_was_set: list[Any] = []
    active_loop: str | None = None


class Story(_Model):
    name: str = ""
    steps: list[StoryStep]


class BotDefinition(_Model):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    language: str = "en"
    nlu: NluConfig = NluConfig()
    slots: dict[str, Slot] = {}
    responses: dict[str, list[ResponseVariant]] = {}
    flows: dict[str, Flow] = {}
    actions: dict[str, Action] = {}
    action_server: ActionServer | None = None
    vision: list[VisionStep] = []
    fallback: FallbackConfig = FallbackConfig()
    handoff: HandoffConfig = HandoffConfig()
    session: SessionConfig = SessionConfig()
    stories: list[Story] = []
    max_history: int = Field(default=5, ge=1, le=20)  # story memory, in user turns
    allowed_origins: list[str] = []  # pages that may embed the web chat widget
    max_actions_per_turn: int = Field(default=10, ge=1, le=50)

    @field_validator("actions", mode="before")
    @classmethod
    def _http_by_default(cls, actions: Any) -> Any:
        if not isinstance(actions, dict):
            return actions
        return {
            k: {"type": "http", **v} if isinstance(v, dict) and "type" not in v else v
            for k, v in actions.items()
        }

    def response_names(self) -> set[str]:
        return set(self.responses)

    def is_custom_action(self, name: str) -> bool:
        """An action the action server runs (not a response, built-in or declared action)."""
        known = (self.actions, BUILTIN_ACTIONS, self.responses, self.flows)
        if any(name in names for names in known):
            return False
        server = self.action_server
        return server is not None and (not server.actions or name in server.actions)


# --- reading and checking --------------------------------------------------------------------


def read_definition_text(text: str, limits: DocumentLimits | None = None) -> Any:
    """YAML or JSON text (JSON is YAML) to plain data within the document ``limits`` (size,
    depth, aliases); ``InvalidBotDefinition`` on bad syntax."""
    try:
        return load_yaml(text, what="the bot definition", limits=limits)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise InvalidBotDefinition([Problem("(top)", f"{where}invalid YAML: {problem}")]) from e


def parse_definition(data: Any) -> BotDefinition:
    """Check a whole definition; every problem is reported with its path."""
    if not isinstance(data, dict):
        raise InvalidBotDefinition(
            [Problem("(top)", "a bot definition is a mapping (name, flows, ...)")]
        )
    try:
        bot = BotDefinition.model_validate(data)
    except ValidationError as e:
        raise InvalidBotDefinition([_pydantic_problem(err) for err in e.errors()]) from e
    errors = _References(bot).check()
    if errors:
        raise InvalidBotDefinition(errors)
    return bot


def _pydantic_problem(err: Any) -> Problem:
    path = _path(err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    return Problem(path or "(top)", message)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("step:") or str(part) in {"http", "set_slot"}:
            continue  # the tags of steps and actions
        else:
            name = {"if_": "if", "else_": "else", "in_": "in", "validate_": "validate"}.get(
                str(part), str(part)
            )
            out += f".{name}" if out else name
    return out


class _References:
    """Cross-references: slots, responses, flows, actions and vision steps that must exist."""

    def __init__(self, bot: BotDefinition) -> None:
        self.bot = bot
        self.errors: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(Problem(path, message))

    def check(self) -> list[Problem]:
        bot = self.bot
        no_nlu = bot.nlu.model is None and bot.nlu.dataset is None and bot.nlu.intents is None
        if no_nlu and (bot.flows or bot.stories):
            self.add("nlu", "give `model` (an id or alias), `dataset`, or `intents` examples")
        for name, flow in bot.flows.items():
            self.steps(f"flows.{name}.steps", flow.steps)
        for name, variants in bot.responses.items():
            for i, variant in enumerate(variants):
                if variant.is_empty() and variant.custom is None:
                    self.add(
                        f"responses.{name}[{i}]", "a response needs text, buttons, image or cards"
                    )
                for j, cond in enumerate(variant.condition):
                    self.slot(f"responses.{name}[{i}].condition[{j}].name", cond.name)
                if variant.text:
                    self.template(f"responses.{name}[{i}].text", variant.text)
        vision_names = {v.name for v in bot.vision}
        for name, slot in bot.slots.items():
            if slot.type == "categorical" and not slot.values:
                self.add(f"slots.{name}.values", "a categorical slot needs `values`")
            for i, mapping in enumerate(slot.mappings):
                path = f"slots.{name}.mappings[{i}]"
                if mapping.type == "from_entity" and not mapping.entity:
                    self.add(f"{path}.entity", "from_entity needs `entity`")
                if mapping.type == "from_regex":
                    if mapping.pattern is None:
                        self.add(f"{path}.pattern", "from_regex needs `pattern`")
                    else:
                        self.regex(f"{path}.pattern", mapping.pattern)
                if mapping.type == "from_intent" and not mapping.intents():
                    self.add(f"{path}.intent", "from_intent needs `intent`")
                vision = mapping.vision
                if mapping.type == "from_image" and vision and vision not in vision_names:
                    self.add(f"{path}.vision", f'unknown vision step "{mapping.vision}"')
        for name, action in bot.actions.items():
            if isinstance(action, HttpAction):
                for slot_name in action.response:
                    self.slot(f"actions.{name}.response.{slot_name}", slot_name)
                for field in ("reply", "on_error", "on_not_found"):
                    value = getattr(action, field)
                    if value is not None:
                        self.response(f"actions.{name}.{field}", value)
                self.template(f"actions.{name}.url", action.url)
                if not action.url.startswith(("http://", "https://", "{")):
                    self.add(f"actions.{name}.url", "the URL must start with http:// or https://")
            else:
                for slot_name in action.slots:
                    self.slot(f"actions.{name}.slots.{slot_name}", slot_name)
        if bot.action_server is not None and bot.action_server.on_error:
            self.response("action_server.on_error", bot.action_server.on_error)
        names = [v.name for v in bot.vision]
        for i, step in enumerate(bot.vision):
            if names.count(step.name) > 1:
                self.add(f"vision[{i}].name", f'"{step.name}" is used by two vision steps')
            for j, vslot in enumerate(step.slots):
                path = f"vision[{i}].slots[{j}]"
                self.slot(f"{path}.slot", vslot.slot)
                if vslot.regex is not None:
                    self.regex(f"{path}.regex", vslot.regex)
                if vslot.regex is None and vslot.label is None:
                    self.add(path, "give `regex` (OCR text) or `label` (classes and boxes)")
        for i, name in enumerate(bot.fallback.responses):
            self.response(f"fallback.responses[{i}]", name)
        for field in ("response", "released_response"):
            value = getattr(bot.handoff, field)
            if value is not None:
                self.response(f"handoff.{field}", value)
        for i, story in enumerate(bot.stories):
            for j, sstep in enumerate(story.steps):
                if (sstep.intent is None) == (sstep.action is None) and not (
                    sstep.slot_was_set or sstep.active_loop is not None
                ):
                    self.add(f"stories[{i}].steps[{j}]", "a story step has `intent` or `action`")
                if sstep.action is not None:
                    self.action(f"stories[{i}].steps[{j}].action", sstep.action)
        for name in bot.flows:
            if not re.match(NAME, name):
                self.add(f"flows.{name}", "a flow name is letters, digits, _ and -")
        return self.errors

    def steps(self, path: str, steps: list[Any]) -> None:
        for i, step in enumerate(steps):
            here = f"{path}[{i}]"
            if isinstance(step, AskStep):
                self.slot(f"{here}.ask", step.ask)
                if step.response is not None:
                    self.response(f"{here}.response", step.response)
                if step.invalid is not None:
                    self.response(f"{here}.invalid", step.invalid)
                if step.on_fail not in ("handoff", "end") and step.on_fail not in self.bot.flows:
                    self.add(f"{here}.on_fail", f'"{step.on_fail}" is not handoff, end or a flow')
                if step.validate_ is not None:
                    if step.validate_.regex is not None:
                        self.regex(f"{here}.validate.regex", step.validate_.regex)
                    if step.validate_.action is not None:
                        self.action(f"{here}.validate.action", step.validate_.action)
            elif isinstance(step, ReplyStep):
                if isinstance(step.reply, str):
                    self.response(f"{here}.reply", step.reply)
                elif step.reply.text:
                    self.template(f"{here}.reply.text", step.reply.text)
            elif isinstance(step, ActionStep):
                self.action(f"{here}.action", step.action)
            elif isinstance(step, SetStep):
                for slot in step.set:
                    self.slot(f"{here}.set.{slot}", slot)
            elif isinstance(step, BranchStep):
                for j, case in enumerate(step.if_):
                    if case.slot not in BUILTIN_SLOTS:
                        self.slot(f"{here}.if[{j}].slot", case.slot)
                    self.steps(f"{here}.if[{j}].then", case.then)
                self.steps(f"{here}.else", step.else_)
            elif isinstance(step, LinkStep):
                if step.link not in self.bot.flows:
                    self.add(f"{here}.link", f'unknown flow "{step.link}"')
            elif isinstance(step, HandoffStep | EndStep):
                value = step.handoff if isinstance(step, HandoffStep) else step.end
                if isinstance(value, str):
                    self.response(
                        f"{here}.{'handoff' if isinstance(step, HandoffStep) else 'end'}", value
                    )

    def slot(self, path: str, name: str) -> None:
        if name not in self.bot.slots:
            self.add(path, f'unknown slot "{name}"')

    def response(self, path: str, name: str) -> None:
        if name not in self.bot.responses:
            self.add(path, f'unknown response "{name}"')

    def action(self, path: str, name: str) -> None:
        bot = self.bot
        if name in bot.actions or name in BUILTIN_ACTIONS or name in bot.responses:
            return
        if name in bot.flows or bot.is_custom_action(name):
            return
        hint = "declare it under `actions`, add it to `responses`"
        hint += (
            ", or set `action_server`"
            if bot.action_server is None
            else " or `action_server.actions`"
        )
        self.add(path, f'unknown action "{name}"; {hint}')

    def regex(self, path: str, pattern: str) -> None:
        problem = regex_problem(pattern)
        if problem is not None:
            self.add(path, problem)

    def template(self, path: str, text: str) -> None:
        for name in re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
            if name not in self.bot.slots and name not in TEMPLATE_EXTRAS:
                self.add(path, f'unknown slot "{name}" in the template')


TEMPLATE_EXTRAS = {"sender_id", "bot_name"}


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
