"""A Rasa 3 project (``domain.yml``, ``nlu.yml``, ``rules.yml``, ``stories.yml``,
``endpoints.yml``) turned into a Parley bot definition, with a list of what did not carry over.

``import_rasa(name=..., domain=..., ...)`` returns a ``RasaImport``: a definition that passes
``parse_definition``, the ``nlu.yml`` text for the caller to train, and ``unsupported``: one
sentence per thing left out, naming its file and path::

    rules.yml rules[3] ("chitchat at start"): condition `slot_was_set` is not supported; ...

What maps where::

    domain intents, entities          read (use_entities / ignore_entities: noted)
    domain slots                      slots (float -> number; from_entity / from_text /
                                      from_intent mappings with their conditions)
    domain responses (or templates)   responses (channel-specific variants: noted, skipped)
    domain forms                      one flow per form: ``ask`` each required slot (with
                                      ``validate_<form>`` when the domain declares it), then
                                      the steps of the submission rule; the activation rule's
                                      intent starts it
    rules: intent -> actions          flows ``rule_<name>`` (``from_rule``); ``or`` of intents
                                      gives several trigger intents; a ``slot_was_set`` step
                                      becomes an ``if`` (rules that differ only there merge)
    rule for nlu_fallback             fallback.responses (else ``utter_default`` if defined)
    stories                           stories (``or`` expanded into one story per choice)
    domain actions + action_endpoint  action_server (url, the custom action names)
    session_config                    session

Mistakes in the files (bad YAML, a file that is not a mapping, a rule naming a response or
action the domain does not define, a form asking for an unknown slot) raise
``InvalidRasaProject`` listing each with its file, line and path. The domain half lives in
``rasa_domain``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

from bot_gateway.conversations.definition import (
    TEMPLATE_EXTRAS,
    InvalidBotDefinition,
    parse_definition,
)
from bot_gateway.conversations.rasa_domain import (
    Domain,
    InvalidRasaProject,
    Path,
    RasaFile,
    Report,
    as_list,
    names,
    problem,
    read_domain,
    read_yaml,
    show,
)
from core.documents import DocumentLimits
from core.errors import InvalidInput
from core.logging import log_event
from training.datasets.formats.rasa_nlu import RasaNluImporter

__all__ = ["NLU_PLACEHOLDER", "InvalidRasaProject", "RasaImport", "import_rasa"]

NLU_PLACEHOLDER = "__rasa_import__"  # nlu.dataset until the caller has trained nlu.yml
MAX_STORY_VARIANTS = 16  # stories one story with `or` steps may expand into

RASA_DEFAULT_INTENTS = {"nlu_fallback", "restart", "back", "out_of_scope", "session_start"}
DATA_KEYS = {"version", "nlu", "rules", "stories"}
RULE_KEYS = {"rule", "steps", "condition", "conversation_start", "wait_for_user_input", "metadata"}
STORY_KEYS = {"story", "steps", "metadata"}
WHY_NOT = {  # action kinds (``Domain.action_kind``) that a step cannot run
    "unserved": "the custom action needs an action server (endpoints.yml `action_endpoint`)",
    "rasa_default": "the Rasa default action has no Parley equivalent",
    "dropped": "the response could not be imported",
}


@dataclass(frozen=True)
class RasaImport:
    """The result of ``import_rasa``.

    ``definition`` passes ``parse_definition``; its ``nlu`` is ``{"dataset": NLU_PLACEHOLDER}``
    until the caller trains ``nlu_yaml`` (format ``rasa-yaml``, type ``text-intent``) and puts
    the dataset id or model there. ``unsupported`` lists what was left out, one sentence each.
    """

    definition: dict[str, Any]
    nlu_yaml: str | None
    unsupported: list[str]


def import_rasa(
    *,
    name: str,
    domain: str,
    nlu: str | None = None,
    rules: str | None = None,
    stories: str | None = None,
    endpoints: str | None = None,
    limits: DocumentLimits | None = None,
) -> RasaImport:
    """Turn the texts of a Rasa 3 project's files into a Parley bot definition.

    The definition's ``nlu`` is the placeholder ``{"dataset": "__rasa_import__"}``
    (``NLU_PLACEHOLDER``): ``parse_definition`` needs an NLU source once there are flows, and
    the real one exists only after the caller has trained ``nlu_yaml``; replace
    ``definition["nlu"]`` with ``{"dataset": id}`` or ``{"model": id}`` before saving the bot.
    Rules and stories may sit in any of the three data files, as in Rasa. Each file is read
    within the document ``limits`` (the settings' when not given).
    """
    if not name.strip():
        raise InvalidRasaProject([problem("name", None, (), "give the bot a name")])
    report = Report()
    parsed = read_domain(
        read_yaml(domain, "domain.yml", required=True, limits=limits),
        read_yaml(endpoints, "endpoints.yml", limits=limits),
        report,
    )
    _check_nlu(nlu, parsed, report)
    data_files = [read_yaml(rules, "rules.yml", limits=limits)]
    data_files.append(read_yaml(stories, "stories.yml", limits=limits))
    data_files.append(read_yaml(nlu, "nlu.yml", limits=limits))
    definition = _Dialogue(parsed, report).run(name.strip(), data_files)
    log_event(
        "bot.rasa_imported",
        flows=len(definition["flows"]),
        stories=len(definition["stories"]),
        unsupported=len(report.notes),
    )
    return RasaImport(definition=definition, nlu_yaml=nlu, unsupported=report.notes)


def _check_nlu(text: str | None, domain: Domain, report: Report) -> None:
    """nlu.yml checked as the trainer will read it, and its intents against the domain's."""
    if text is None or not text.strip():
        return
    try:
        parsed = RasaNluImporter().parse(text, "text-intent")
    except InvalidInput as e:
        rows = e.details.get("errors") or [{"line": None, "message": e.message}]
        raise InvalidRasaProject(
            [problem("nlu.yml", r.get("line"), (), r["message"]) for r in rows]
        ) from e
    trained = list(dict.fromkeys(ex.label for ex in parsed.examples if ex.label))
    src = RasaFile("nlu.yml", {})
    for intent in trained:
        if intent not in domain.intents and intent not in RASA_DEFAULT_INTENTS:
            message = f"intent `{intent}` has examples but is not in the domain's `intents`"
            report.note(src, ("nlu",), message + "; it is trained anyway")
    missing = [i for i in domain.intents if i not in trained]
    if missing:
        message = f"domain intents {names(missing)} have no examples; the NLU model will never "
        report.note(src, ("nlu",), message + "predict them")


@dataclass
class _Form:
    slots: list[str]
    intents: list[str] = field(default_factory=list)
    after: list[dict[str, Any]] | None = None  # the submission rule's steps
    linked: bool = False  # a rule flow links to it


@dataclass(frozen=True)
class _Item:
    """A rule or story and where it is."""

    src: RasaFile
    path: Path
    data: dict[str, Any]
    label: str

    @property
    def kind(self) -> str:
        return "rule" if self.path[0] == "rules" else "story"


class _Skip(Exception):
    """A rule or story that cannot be imported; the note (or error) is already written."""


class _Dialogue:
    """Rules, forms and stories on top of a read domain."""

    def __init__(self, domain: Domain, report: Report) -> None:
        self.domain = domain
        self.report = report
        self.forms = {name: _Form(list(slots)) for name, slots in domain.forms.items()}
        self.flows: dict[str, dict[str, Any]] = {}
        self.owners: dict[str, tuple[str, str]] = {}  # intent -> (flow, where it came from)
        self.stories: list[dict[str, Any]] = []
        self.fallback: list[str] | None = None
        self.noted_intents: set[str] = set()

    def note(self, item: _Item, path: Path, message: str) -> None:
        self.report.note(item.src, path, message, item.label)

    def skip(self, item: _Item, path: Path, why: str) -> NoReturn:
        self.note(item, path, f"{why}; the {item.kind} was skipped")
        raise _Skip

    def fail(self, item: _Item, path: Path, message: str) -> NoReturn:
        self.report.error(item.src, path, message)
        raise _Skip

    def run(self, name: str, files: list[RasaFile]) -> dict[str, Any]:
        rules, stories = self.items(files)
        for item in rules:
            self.rule(item)
        self.build_forms()
        for item in stories:
            self.story(item)
        if self.fallback is None and "utter_default" in self.domain.responses:
            self.fallback = ["utter_default"]  # what Rasa's action_default_fallback sends
        slots = self.template_slots()
        self.report.raise_problems()
        definition: dict[str, Any] = {
            "name": name,
            "description": "imported from a Rasa project",
            "nlu": {"dataset": NLU_PLACEHOLDER},
            "slots": slots,
            "responses": self.domain.responses,
            "flows": self.flows,
            "stories": self.stories,
            "session": self.domain.session,
        }
        if self.domain.custom and self.domain.action_url is not None:
            server = {"url": self.domain.action_url, "actions": self.domain.custom}
            definition["action_server"] = server
        if self.fallback:
            definition["fallback"] = {"responses": self.fallback}
        try:
            parse_definition(definition)
        except InvalidBotDefinition as e:  # a Rasa feature this import does not handle yet
            lines = e.details.get("errors", [])
            raise InvalidRasaProject(
                [problem("(imported definition)", None, (), x) for x in lines]
            ) from e
        return definition

    def items(self, files: list[RasaFile]) -> tuple[list[_Item], list[_Item]]:
        rules: list[_Item] = []
        stories: list[_Item] = []
        for src in files:
            for key in src.data:
                if key == "responses":
                    message = "responses of retrieval intents are not supported; ignored"
                    self.report.note(src, (key,), message)
                elif key not in DATA_KEYS:
                    self.report.note(src, (key,), "not a section of Rasa training data; ignored")
                elif key == "nlu" and src.file != "nlu.yml" and src.data[key]:
                    message = "NLU examples are trained from nlu.yml only; ignored"
                    self.report.note(src, (key,), message)
            for key, kind, out in (("rules", "rule", rules), ("stories", "story", stories)):
                raw = src.data.get(key)
                if raw is None:
                    continue
                if not isinstance(raw, list):
                    self.report.error(src, (key,), f"`{key}` is a list of {{{kind}, steps}}")
                    continue
                for i, data in enumerate(raw):
                    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
                        message = f"a {kind} is a mapping with `{kind}` and `steps`"
                        self.report.error(src, (key, i), message)
                        continue
                    out.append(_Item(src, (key, i), data, str(data.get(kind) or f"{kind} {i}")))
        self.report.raise_problems()
        return rules, stories

    def check_intent(self, item: _Item, path: Path, intent: str) -> None:
        known = intent in self.domain.intents or intent in RASA_DEFAULT_INTENTS
        if not known and intent not in self.noted_intents:
            self.noted_intents.add(intent)
            self.note(item, path, f"intent `{intent}` is not in the domain's `intents`")

    def step_key(self, item: _Item, steps: list[Any], i: int) -> str:
        """The kind of step ``i``: intent, or, action, slot_was_set, active_loop, checkpoint."""
        path = (*item.path, "steps", i)
        step = steps[i]
        if not isinstance(step, dict) or not step:
            self.fail(item, path, "a step is a mapping (intent, action, slot_was_set, ...)")
        for key in ("user", "bot"):
            if key in step:
                self.skip(item, path, f"end-to-end `{key}:` steps are not supported")
        for key in ("intent", "action", "or", "slot_was_set", "active_loop", "checkpoint"):
            if key in step:
                if key == "action" and not isinstance(step[key], str):
                    self.fail(item, path, "`action` names one action or response")
                return key
        self.skip(item, path, f"step {names(list(step))} is not supported")

    def action_step(self, item: _Item, path: Path, action: str) -> dict[str, Any] | None:
        """The Parley step that runs ``action``; None (noted) when it cannot run."""
        kind = self.domain.action_kind(action)
        if kind == "response":
            return {"reply": action}
        if kind == "form":
            return {"link": action}
        if kind in ("builtin", "custom"):
            return {"action": action}
        if kind == "unknown":
            self.fail(
                item,
                path,
                f'unknown action or response "{action}"; add it to the domain\'s `responses` '
                "or `actions`",
            )
        self.note(item, path, f"`{action}`: {WHY_NOT[kind]}; the step was left out")
        return None

    # rules

    def rule(self, item: _Item) -> None:
        path, data = item.path, item.data
        for key in data.keys() - RULE_KEYS:
            self.note(item, (*path, key), "unknown rule option; ignored")
        steps: list[Any] = data["steps"]
        if not steps:
            self.note(item, path, "the rule has no steps; skipped")
            return
        try:
            first = self.step_key(item, steps, 0)
            if first == "action" and steps[0]["action"] in self.forms:
                self.submission(item, steps)
                return
            conditions = as_list(data.get("condition"))
            if conditions:
                kinds = sorted({k for c in conditions if isinstance(c, dict) for k in c})
                self.skip(item, path, f"condition {names(kinds)} is not supported")
            intents = self.trigger_intents(item, steps)
            converted = self.steps(item, (*path, "steps"), steps, 1)
        except _Skip:
            return
        if data.get("conversation_start"):
            message = "`conversation_start: true` is not supported: the rule runs at any point "
            message += "of the conversation; imported anyway"
            self.note(item, (*path, "conversation_start"), message)
        if data.get("wait_for_user_input") is False:
            message = "`wait_for_user_input: false` is not supported: the flow ends and waits "
            message += "for the customer; imported anyway"
            self.note(item, (*path, "wait_for_user_input"), message)
        if intents == ["nlu_fallback"]:
            self.fallback_rule(item, converted)
        elif not converted:
            self.note(item, path, "the rule runs no action; skipped")
        elif len(converted) == 1 and converted[0].get("link") in self.forms:
            form = self.forms[converted[0]["link"]]
            form.intents += self.claim(item, intents, converted[0]["link"])
        else:
            flow = self.flow_name(item.label, len(self.flows))
            intents = self.claim(item, intents, flow, converted)
            if intents:
                self.flows[flow] = {
                    "description": f"Rasa rule: {item.label}",
                    "intents": intents,
                    "steps": converted,
                    "from_rule": True,
                }
            for step in converted:
                if step.get("link") in self.forms:
                    self.forms[step["link"]].linked = True

    def trigger_intents(self, item: _Item, steps: list[Any]) -> list[str]:
        path = (*item.path, "steps", 0)
        kind = self.step_key(item, steps, 0)
        choices = steps[0]["or"] if kind == "or" else [steps[0]] if kind == "intent" else None
        if not isinstance(choices, list) or not all(
            isinstance(c, dict) and c.keys() <= {"intent", "entities"} and "intent" in c
            for c in choices
        ):
            self.skip(item, path, "a rule that does not start with a user intent is not supported")
        if any(c.get("entities") for c in choices):
            self.skip(item, path, "rules that depend on entities are not supported")
        intents = [str(c["intent"]) for c in choices]
        for intent in intents:
            self.check_intent(item, path, intent)
        return intents

    def steps(self, item: _Item, path: Path, steps: list[Any], start: int) -> list[dict[str, Any]]:
        """Parley steps for a rule's steps from ``start`` (after its intent)."""
        out: list[dict[str, Any]] = []
        for i in range(start, len(steps)):
            here = (*path, i)
            kind = self.step_key(item, steps, i)
            value = steps[i][kind]
            if kind == "action":
                if value == "action_listen":
                    if i == len(steps) - 1:
                        break
                    self.skip(item, here, "rules with more than one user turn are not supported")
                step = self.action_step(item, here, value)
                if step is not None:
                    out.append(step)
                if value in self.forms:
                    self.form_end(item, path, steps, i + 1, value)
                    break
            elif kind == "slot_was_set":
                cases = self.slot_cases(item, here, value)
                if cases:  # the rest of the rule runs only when the slots are so
                    out.append(_nest(cases, self.steps(item, path, steps, i + 1)))
                    break
            elif kind in ("intent", "or"):
                self.skip(item, here, "rules with more than one user turn are not supported")
            else:
                self.skip(item, here, f"`{kind}` here is not supported")
        return out

    def form_end(self, item: _Item, path: Path, steps: list[Any], i: int, form: str) -> None:
        """After ``action: form`` a rule has ``active_loop: form`` and stops."""
        rest = steps[i:]
        if rest and isinstance(rest[0], dict) and rest[0].get("active_loop") == form:
            rest = rest[1:]
        if rest:
            message = f"steps after the form `{form}` starts were ignored (its submission rule "
            self.note(item, (*path, len(steps) - len(rest)), message + "says what follows)")

    def slot_cases(self, item: _Item, path: Path, raw: Any) -> list[dict[str, Any]]:
        """``slot_was_set`` as ``if`` cases, one per slot (``requested_slot`` left out)."""
        cases = []
        for slot, value in _slot_entries(raw):
            if slot == "requested_slot":
                continue
            if slot not in self.domain.slots:
                self.fail(item, path, f'unknown slot "{slot}"; add it under the domain\'s slots')
            if value is ...:
                cases.append({"slot": slot, "is_set": True})
            elif value is None:
                cases.append({"slot": slot, "not_set": True})
            else:
                cases.append({"slot": slot, "equals": copy.deepcopy(value)})
        return cases

    def submission(self, item: _Item, steps: list[Any]) -> None:
        """``action: form``, ``active_loop: null``, then what runs once the form is filled."""
        form = steps[0]["action"]
        path = (*item.path, "steps")
        if any(c != {"active_loop": form} for c in as_list(item.data.get("condition"))):
            self.skip(item, item.path, "only the condition `active_loop: <form>` is supported")
        if len(steps) < 2 or not isinstance(steps[1], dict) or "active_loop" not in steps[1]:
            self.skip(item, path, "a rule that starts with the form but is no submission")
        if steps[1]["active_loop"] is not None:
            self.skip(item, (*path, 1), "rules for interruptions of a form are not supported")
        after = self.steps(item, path, steps, 2)
        if self.forms[form].after is not None:
            self.skip(item, item.path, f"the form `{form}` already has a submission rule")
        self.forms[form].after = after

    def fallback_rule(self, item: _Item, steps: list[dict[str, Any]]) -> None:
        replies = []
        for i, step in enumerate(steps):
            reply = step.get("reply")
            if step.get("action") == "action_default_fallback":
                reply = "utter_default" if "utter_default" in self.domain.responses else None
            if isinstance(reply, str):
                replies.append(reply)
            else:
                message = f"step {i + 1} after nlu_fallback is not a response; Parley's fallback "
                self.note(item, (*item.path, "steps"), message + "only replies, then hands off")
        if self.fallback is not None:
            self.note(item, item.path, "a second nlu_fallback rule; skipped")
        elif replies:
            self.fallback = replies

    def claim(
        self, item: _Item, intents: list[str], flow: str, steps: list[dict[str, Any]] | None = None
    ) -> list[str]:
        """The intents ``flow`` may start on: those no earlier rule took. A rule that differs
        from the earlier one only in its last ``slot_was_set`` branch merges into it."""
        got = []
        for intent in intents:
            owner = self.owners.get(intent)
            if owner is None:
                self.owners[intent] = (flow, f"{item.src.file} {show(item.path)}")
                got.append(intent)
                continue
            earlier = self.flows.get(owner[0])
            if (
                steps is not None
                and earlier is not None
                and earlier["intents"] == intents
                and _merge(earlier["steps"], steps)
            ):
                continue
            message = f"intent `{intent}` already starts `{owner[0]}` ({owner[1]}); the first "
            self.note(item, item.path, message + "rule wins, this one was skipped for it")
        return got

    def flow_name(self, label: str, index: int) -> str:
        base = "rule_" + (re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or str(index))
        name, n = base, 2
        while name in self.flows or name in self.forms:
            name, n = f"{base}_{n}", n + 1
        return name

    # forms

    def build_forms(self) -> None:
        src = RasaFile("domain.yml", {})
        for name, form in self.forms.items():
            path: Path = ("forms", name)
            if not form.intents and not form.linked:
                self.report.note(
                    src,
                    path,
                    "no rule starts the form (intent, then `action` and `active_loop` of the "
                    f"form); the flow has no trigger intent: start it with `link: {name}`",
                )
            if form.after is None:
                message = "no submission rule; the flow ends after the last slot"
                self.report.note(src, path, message)
            steps = [self.ask(src, name, slot) for slot in form.slots] + (form.after or [])
            self.flows[name] = {
                "description": f"Rasa form {name}",
                "intents": form.intents,
                "steps": steps,
            }

    def ask(self, src: RasaFile, form: str, slot: str) -> dict[str, Any]:
        """Rasa's order: the form's own question (``utter_ask_<form>_<slot>``) first."""
        path, domain = ("forms", form), self.domain
        step: dict[str, Any] = {"ask": slot}
        for action in (f"action_ask_{form}_{slot}", f"action_ask_{slot}"):
            if action in domain.custom:
                self.report.note(src, path, f"asking with the action `{action}` is not supported")
        candidates = (f"utter_ask_{form}_{slot}", f"utter_ask_{slot}")
        response = next((r for r in candidates if r in domain.responses), None)
        if response is not None:
            step["response"] = response
        else:
            message = f"no `utter_ask_{slot}` response; Parley asks a generated question"
            self.report.note(src, path, message)
        validate = f"validate_{form}"
        if domain.action_kind(validate) == "custom":
            step["validate"] = {"action": validate}
        elif validate in domain.custom:
            message = f"`{validate}` needs an action server; answers are not validated"
            self.report.note(src, path, message)
        return step

    # stories

    def story(self, item: _Item) -> None:
        path = item.path
        for key in item.data.keys() - STORY_KEYS:
            self.note(item, (*path, key), "unknown story option; ignored")
        steps: list[Any] = item.data["steps"]
        variants: list[list[dict[str, Any]]] = [[]]
        try:
            for i in range(len(steps)):
                here = (*path, "steps", i)
                kind = self.step_key(item, steps, i)
                if kind == "checkpoint":
                    self.skip(item, here, "checkpoints are not supported")
                choices = steps[i]["or"] if kind == "or" else [steps[i]]
                if not isinstance(choices, list) or not choices:
                    self.fail(item, here, "`or` is a list of steps")
                converted = [self.story_step(item, here, c) for c in choices]
                variants = [v + [c] for v in variants for c in converted]
                if len(variants) > MAX_STORY_VARIANTS:
                    why = f"its `or` steps make more than {MAX_STORY_VARIANTS} stories"
                    self.skip(item, here, why)
        except _Skip:
            return
        for n, variant in enumerate(variants):
            name = item.label if len(variants) == 1 else f"{item.label} ({n + 1})"
            self.stories.append({"name": name, "steps": variant})

    def story_step(self, item: _Item, path: Path, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.fail(item, path, "a step is a mapping (intent, action, slot_was_set, ...)")
        if "intent" in raw:
            self.check_intent(item, path, str(raw["intent"]))
            step: dict[str, Any] = {"intent": str(raw["intent"])}
            if raw.get("entities"):
                step["entities"] = copy.deepcopy(as_list(raw["entities"]))
            return step
        if "action" in raw:
            action = str(raw["action"])
            kind = self.domain.action_kind(action)
            if kind == "form":
                why = f"it runs the form `{action}` and a story cannot name a flow (the form "
                self.skip(item, path, why + "is imported as a flow)")
            if kind in ("response", "builtin", "custom"):
                return {"action": action}
            if kind == "unknown":
                self.action_step(item, path, action)  # the error
            self.skip(item, path, f"`{action}`: {WHY_NOT[kind]}")
        if "slot_was_set" in raw:
            for slot, _ in _slot_entries(raw["slot_was_set"]):
                if slot not in self.domain.slots and slot != "requested_slot":
                    self.fail(
                        item, path, f'unknown slot "{slot}"; add it under the domain\'s slots'
                    )
            return {"slot_was_set": copy.deepcopy(as_list(raw["slot_was_set"]))}
        if "active_loop" in raw:
            self.skip(item, path, "`active_loop` steps (forms) are not supported in stories")
        self.skip(item, path, f"step {names(list(raw))} is not supported")

    def template_slots(self) -> dict[str, dict[str, Any]]:
        """The domain's slots, plus one of type any for each ``{name}`` in a response that is
        no slot: Rasa fills those from what an action passes, Parley only from slots."""
        slots = dict(self.domain.slots)
        src = RasaFile("domain.yml", {})
        for name, variants in self.domain.responses.items():
            for i, variant in enumerate(variants):
                for var in re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", variant.get("text") or ""):
                    if var not in slots and var not in TEMPLATE_EXTRAS:
                        slots[var] = {"type": "any"}
                        self.report.note(
                            src,
                            ("responses", name, i),
                            f"`{{{var}}}` is not a slot; a slot `{var}` (type any, no mappings) "
                            "was added for it, which an action has to set",
                        )
        return slots


def _slot_entries(raw: Any) -> list[tuple[str, Any]]:
    """``slot_was_set`` as (slot, value) pairs; ``...`` for a bare slot name (any value)."""
    if isinstance(raw, dict):
        return [(str(k), v) for k, v in raw.items()]
    out: list[tuple[str, Any]] = []
    for entry in as_list(raw):
        if isinstance(entry, dict):
            out += [(str(k), v) for k, v in entry.items()]
        else:
            out.append((str(entry), ...))
    return out


def _nest(cases: list[dict[str, Any]], then: list[dict[str, Any]]) -> dict[str, Any]:
    """``if`` on the first case whose ``then`` holds an ``if`` on the next, ... then ``then``."""
    inner = then
    for case in reversed(cases):
        inner = [{"if": [{**case, "then": inner}]}]
    return inner[0]


def _merge(steps: list[dict[str, Any]], other: list[dict[str, Any]]) -> bool:
    """Add ``other``'s last ``if`` cases to ``steps`` when everything before them is equal."""
    if not steps or not other or "if" not in steps[-1] or "if" not in other[-1]:
        return False
    if steps[:-1] != other[:-1]:
        return False

    def test(case: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in case.items() if k != "then"}

    seen = [test(c) for c in steps[-1]["if"]]
    if any(test(c) in seen for c in other[-1]["if"]):
        return False
    steps[-1]["if"].extend(other[-1]["if"])
    return True
