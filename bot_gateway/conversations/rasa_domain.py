"""The Rasa import's first half: YAML files read with their lines, the report of what was
left out and what is wrong, and ``domain.yml`` + ``endpoints.yml`` read into a ``Domain``
(Parley's slots and responses, the forms' slots, the custom actions and their server).

``rasa_import`` builds flows and stories on top; see it for the whole mapping.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from bot_gateway.conversations.definition import BUILTIN_ACTIONS, NAME
from core.documents import BoundedLoader, DocumentLimits, read_yaml_document
from core.errors import InvalidInput

__all__ = ["Domain", "InvalidRasaProject", "RasaFile", "Report", "read_domain", "read_yaml"]

Path = tuple[str | int, ...]

SLOT_TYPES = {
    "text": "text",
    "float": "number",
    "bool": "bool",
    "categorical": "categorical",
    "list": "list",
    "any": "any",
}
MAPPING_KEYS = {
    "from_entity": {"entity", "role", "group", "intent", "not_intent", "conditions"},
    "from_text": {"intent", "not_intent", "conditions"},
    "from_intent": {"intent", "not_intent", "value", "conditions"},
}
# Rasa's default actions that Parley does not have (those it has are in BUILTIN_ACTIONS)
RASA_ONLY_DEFAULTS = {
    "action_revert_fallback_events",
    "action_default_ask_affirmation",
    "action_default_ask_rephrase",
    "action_two_stage_fallback",
    "action_unlikely_intent",
    "action_extract_slots",
}
DOMAIN_KEYS = {
    "version",
    "intents",
    "entities",
    "slots",
    "responses",
    "templates",
    "forms",
    "actions",
    "session_config",
    "config",
    "e2e_actions",
}
VARIANT_KEYS = {"text", "buttons", "quick_replies", "image", "custom", "condition", "channel"}


class InvalidRasaProject(InvalidInput):
    """A Rasa project with mistakes; ``details["errors"]`` lists ``{file, line, path, message}``."""

    code = "invalid_rasa_project"

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        lines = [_problem_line(p) for p in problems]
        shown = "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
        super().__init__(
            f"the Rasa project has {len(lines)} problem(s): {shown}; fix them and upload the "
            "project again",
            errors=problems,
        )


# --- YAML with lines -------------------------------------------------------------------------


class _Loader(BoundedLoader):
    """YAML as Rasa reads it (1.2 booleans): only true/false are booleans; yes, no, on, off
    stay text (``values: [yes, no]`` is a categorical slot, not two booleans)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass(frozen=True)
class RasaFile:
    """One file: its plain data and its YAML nodes (for the line of a path)."""

    file: str
    data: dict[str, Any]
    root: yaml.Node | None = None

    def line(self, path: Path) -> int | None:
        """The line (1-based) of the deepest node of ``path`` that exists."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in path:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                child = next(
                    (
                        v
                        for k, v in node.value
                        if isinstance(k, yaml.ScalarNode) and k.value == part
                    ),
                    None,
                )
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                child = node.value[part] if 0 <= part < len(node.value) else None
            if child is None:
                break
            node = child
            line = node.start_mark.line + 1
        return line


def read_yaml(
    text: str | None, file: str, *, required: bool = False, limits: DocumentLimits | None = None
) -> RasaFile:
    """``file``'s text as a mapping, read within the document ``limits`` (size, depth,
    aliases); no text is an empty file unless ``required``."""
    if text is None or not text.strip():
        if required:
            raise InvalidRasaProject([problem(file, None, (), "the file is empty")])
        return RasaFile(file, {})
    try:
        document = read_yaml_document(text, what=file, limits=limits, loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(e, "problem", None) or str(e)
        raise InvalidRasaProject([problem(file, line, (), f"invalid YAML: {what}")]) from e
    root, data = document.root, document.data
    if data is None and not required:
        return RasaFile(file, {}, root)
    if not isinstance(data, dict):
        found = "nothing" if data is None else f"a {type(data).__name__}"
        message = f"a Rasa {file} is a mapping of sections (version, ...), found {found}"
        raise InvalidRasaProject([problem(file, 1, (), message)])
    return RasaFile(file, data, root)


# --- the report --------------------------------------------------------------------------------


def show(path: Path) -> str:
    """``("rules", 3, "steps")`` as ``rules[3].steps``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problem(file: str, line: int | None, path: Path, message: str) -> dict[str, Any]:
    return {"file": file, "line": line, "path": show(path), "message": message}


def _problem_line(p: dict[str, Any]) -> str:
    where = p["file"]
    if p.get("line"):
        where += f" line {p['line']}"
    if p.get("path"):
        where += f"{',' if p.get('line') else ''} {p['path']}"
    return f"{where}: {p['message']}"


def names(items: list[str]) -> str:
    return ", ".join(f"`{i}`" for i in items)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


class Report:
    """What an import left out (``notes``, one sentence each) and the mistakes it found."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.problems: list[dict[str, Any]] = []

    def note(self, src: RasaFile, path: Path, message: str, label: str | None = None) -> None:
        """``rules.yml rules[3] ("label"): message``, once."""
        where = " ".join(filter(None, [src.file, show(path)]))
        named = f" ({json.dumps(label, ensure_ascii=False)})" if label else ""
        text = f"{where}{named}: {message}"
        if text not in self.notes:
            self.notes.append(text)

    def error(self, src: RasaFile, path: Path, message: str) -> None:
        self.problems.append(problem(src.file, src.line(path), path, message))

    def raise_problems(self) -> None:
        if self.problems:
            raise InvalidRasaProject(self.problems)


# --- domain.yml and endpoints.yml ---------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """What the rules and stories build on: Parley slots and responses, the forms' slots,
    the custom actions and the action server's URL."""

    intents: list[str]
    slots: dict[str, dict[str, Any]]
    responses: dict[str, list[dict[str, Any]]]
    dropped_responses: frozenset[str]  # responses that could not be imported
    forms: dict[str, list[str]]  # form -> required slots
    custom: list[str]  # actions the action server runs (validate_<form> among them)
    action_url: str | None
    session: dict[str, Any]

    def action_kind(self, action: str) -> str:
        """response, form, builtin, custom; or, for what a step cannot run: unserved (no
        action server), rasa_default, dropped (a response left out), unknown."""
        if action in self.responses:
            return "response"
        if action in self.forms:
            return "form"
        if action in BUILTIN_ACTIONS:
            return "builtin"
        if action in self.custom:
            return "custom" if self.action_url is not None else "unserved"
        if action in RASA_ONLY_DEFAULTS:
            return "rasa_default"
        if action in self.dropped_responses or any(
            r.startswith(action + "/") for r in self.dropped_responses
        ):
            return "dropped"
        return "unknown"


def read_domain(domain: RasaFile, endpoints: RasaFile, report: Report) -> Domain:
    """The domain as Parley pieces; notes and errors go to ``report`` (raised at the end)."""
    reader = _DomainReader(domain, report)
    reader.read()
    action_url = _action_url(endpoints, report)
    custom = reader.custom_actions(action_url)
    report.raise_problems()
    return Domain(
        intents=reader.intents,
        slots=reader.slots,
        responses=reader.responses,
        dropped_responses=frozenset(reader.dropped),
        forms=reader.forms,
        custom=custom,
        action_url=action_url,
        session=reader.session,
    )


def _action_url(src: RasaFile, report: Report) -> str | None:
    url: str | None = None
    for key, value in src.data.items():
        if key == "version":
            continue
        if key != "action_endpoint":
            report.note(src, (key,), "not used by Parley, which runs its own; ignored")
            continue
        found = value.get("url") if isinstance(value, dict) else None
        if not isinstance(found, str) or not found.strip():
            report.error(src, (key,), "`action_endpoint` needs a `url`")
            continue
        url = found.strip()
        if "${" in url:
            message = "environment variables are not expanded; set `action_server.url`"
            report.note(src, (key, "url"), message)
        for option in value:
            if option != "url":
                report.note(src, (key, option), "action endpoint option not supported; ignored")
    return url


class _DomainReader:
    def __init__(self, src: RasaFile, report: Report) -> None:
        self.src = src
        self.report = report
        self.intents: list[str] = []
        self.slots: dict[str, dict[str, Any]] = {}
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.dropped: set[str] = set()
        self.forms: dict[str, list[str]] = {}
        self.declared: list[tuple[int, str]] = []  # (index in `actions`, name)
        self.session: dict[str, Any] = {"expiry_minutes": 60, "carry_over_slots": True}

    def note(self, path: Path, message: str, label: str | None = None) -> None:
        self.report.note(self.src, path, message, label)

    def error(self, path: Path, message: str) -> None:
        self.report.error(self.src, path, message)

    def read(self) -> None:
        d = self.src.data
        for key in d:
            if key not in DOMAIN_KEYS:
                self.note((key,), "not a section of a Rasa 3 domain; ignored")
        if "config" in d:
            self.note(
                ("config",),
                "`config` (store_entities_as_slots) is not supported; slots fill only through "
                "their `mappings`",
            )
        if "e2e_actions" in d:
            self.note(("e2e_actions",), "end-to-end bot texts are not supported; ignored")
        self.read_intents(d.get("intents"))
        self.read_slots(d.get("slots"))
        if "templates" in d:
            self.note(("templates",), "`templates` is Rasa 1's name; read as `responses`")
        for key in ("templates", "responses"):
            self.read_responses(key, d.get(key))
        self.read_forms(d.get("forms"))
        self.read_actions(d.get("actions"))
        self.read_session(d.get("session_config"))

    def read_intents(self, raw: Any) -> None:
        if raw is None:
            return
        if not isinstance(raw, list):
            self.error(("intents",), "`intents` is a list of intent names")
            return
        for i, item in enumerate(raw):
            if isinstance(item, dict) and len(item) == 1:
                intent, options = next(iter(item.items()))
                for key in options if isinstance(options, dict) else {}:
                    if key in ("use_entities", "ignore_entities"):
                        message = f"`{key}` is not supported: every entity fills slots through "
                        self.note(("intents", i), message + "their mappings", str(intent))
                    elif key == "triggers":
                        message = "`triggers` (Rasa 2) is not supported; write a rule instead"
                        self.note(("intents", i), message, str(intent))
                    else:
                        self.note(("intents", i, key), "unknown option; ignored", str(intent))
            elif isinstance(item, str | int | float):
                intent = item
            else:
                self.error(("intents", i), "an intent is a name (or `name: {options}`)")
                continue
            if str(intent) not in self.intents:
                self.intents.append(str(intent))

    def read_slots(self, raw: Any) -> None:
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.error(("slots",), "`slots` maps slot names to {type, mappings}")
            return
        for name, spec in raw.items():
            slot = self.slot(str(name), spec, ("slots", str(name)))
            if slot is not None:
                self.slots[str(name)] = slot

    def slot(self, name: str, spec: Any, path: Path) -> dict[str, Any] | None:
        if not isinstance(spec, dict) or "type" not in spec:
            self.error(path, "a slot needs a `type` (text, float, bool, categorical, ...)")
            return None
        rasa_type = str(spec["type"])
        slot: dict[str, Any] = {"type": SLOT_TYPES.get(rasa_type, "any")}
        if rasa_type == "unfeaturized":
            self.note((*path, "type"), "`unfeaturized` (Rasa 2) was imported as `any`")
        elif rasa_type not in SLOT_TYPES:
            self.note((*path, "type"), f"custom slot type `{rasa_type}` was imported as `any`")
        for key, value in spec.items():
            if key == "values" and rasa_type == "categorical":
                slot["values"] = [str(v) for v in as_list(value) if v is not None]
            elif key == "initial_value":
                slot["initial_value"] = copy.deepcopy(value)
            elif key == "influence_conversation":
                slot["influence_conversation"] = bool(value)
            elif key == "mappings":
                slot["mappings"] = self.mappings(name, value, (*path, "mappings"))
            elif key in ("min_value", "max_value"):
                self.note((*path, key), "only scales the slot's featurization in Rasa; ignored")
            elif key == "auto_fill":
                message = "`auto_fill` (Rasa 2) is not supported; add a `from_entity` mapping"
                self.note((*path, key), message)
            elif key != "type":
                self.note((*path, key), "unknown slot option; ignored")
        if rasa_type == "categorical" and not slot.get("values"):
            self.error(path, "a categorical slot needs `values`")
            return None
        return slot

    def mappings(
        self, slot: str, raw: Any, path: Path, form: str | None = None
    ) -> list[dict[str, Any]]:
        """A slot's mappings; a Rasa 2 ``form``'s apply only while the form is active."""
        if not isinstance(raw, list):
            self.error(path, "`mappings` is a list of {type: from_entity | ...}")
            return []
        out = []
        for i, item in enumerate(raw):
            mapping = self.mapping(slot, item, (*path, i), form)
            if mapping is not None:
                out.append(mapping)
        return out

    def mapping(self, slot: str, raw: Any, path: Path, form: str | None) -> dict[str, Any] | None:
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind in ("from_trigger_intent", "custom"):
            how = " (an action sets it)" if kind == "custom" else ""
            self.note(path, f"mapping `{kind}` is not supported{how}; skipped")
            return None
        if kind not in MAPPING_KEYS:
            self.error(path, "a mapping's `type` is from_entity, from_text, from_intent, ...")
            return None
        out: dict[str, Any] = {"type": kind}
        for key, value in raw.items():
            if key == "type":
                continue
            if key not in MAPPING_KEYS[kind]:
                self.note((*path, key), f"`{key}` is not an option of {kind}; ignored")
            elif key in ("intent", "not_intent"):
                out[key] = [str(v) for v in value] if isinstance(value, list) else str(value)
            elif key == "conditions":
                out[key] = self.conditions(value, (*path, key))
            elif key == "value":
                out[key] = copy.deepcopy(value)
            elif value is not None:
                out[key] = str(value)
        if kind == "from_entity" and not out.get("entity"):
            self.error(path, "from_entity needs `entity`")
            return None
        if kind == "from_intent" and not out.get("intent"):
            excluded = set(as_list(out.pop("not_intent", None)))
            out["intent"] = [i for i in self.intents if i not in excluded]  # Rasa: any intent
            if not out["intent"]:
                self.note(path, "from_intent without `intent` and no domain intents; skipped")
                return None
        if form is not None:
            cond: dict[str, Any] = {"active_loop": form}
            if kind != "from_entity":
                cond["requested_slot"] = slot
            out.setdefault("conditions", []).append(cond)
        if kind == "from_text" and not out.get("conditions"):
            self.note(
                path,
                f"from_text without conditions fills `{slot}` only while it is being asked "
                "for (Rasa fills it from every message)",
            )
        return out

    def conditions(self, raw: Any, path: Path) -> list[dict[str, Any]]:
        out = []
        for i, cond in enumerate(as_list(raw)):
            if not isinstance(cond, dict):
                self.error((*path, i), "a condition is {active_loop, requested_slot}")
                continue
            kept = {k: v for k, v in cond.items() if k in ("active_loop", "requested_slot")}
            for key in set(cond) - set(kept):
                self.note((*path, i, key), "unknown condition; ignored")
            out.append(kept)
        return out

    def read_responses(self, key: str, raw: Any) -> None:
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.error((key,), f"`{key}` maps response names to lists of variants")
            return
        for name, variants in raw.items():
            path: Path = (key, str(name))
            if not isinstance(variants, list):
                self.error(path, "a response is a list of variants ({text, buttons, ...})")
            elif "/" in str(name):
                self.note(path, "retrieval intents (response selectors) are not supported; skipped")
                self.dropped.add(str(name))
            else:
                self.response(str(name), variants, path)

    def response(self, name: str, variants: list[Any], path: Path) -> None:
        kept: list[dict[str, Any]] = []
        by_channel: list[tuple[int, str, dict[str, Any]]] = []
        for i, raw in enumerate(variants):
            variant = self.variant(raw, (*path, i))
            if variant is None:
                continue
            channel = variant.pop("channel", None)
            if channel is None:
                kept.append(variant)
            else:
                by_channel.append((i, str(channel), variant))
        if not kept and by_channel:
            i, channel, variant = by_channel.pop(0)
            kept.append(variant)
            message = f"only channel-specific variants; the `{channel}` one is sent everywhere"
            self.note((*path, i), message)
        for i, channel, _ in by_channel:
            self.note(
                (*path, i), f"channel-specific variant (`{channel}`) is not supported; skipped"
            )
        if kept:
            self.responses[name] = kept
        else:
            self.dropped.add(name)
            self.note(path, "no variant could be imported; the response was skipped")

    def variant(self, raw: Any, path: Path) -> dict[str, Any] | None:
        if isinstance(raw, str):
            return {"text": raw}
        if not isinstance(raw, dict):
            self.error(path, "a response variant is a mapping ({text, buttons, ...})")
            return None
        out: dict[str, Any] = {}
        ignored = [k for k in raw if k not in VARIANT_KEYS]
        if ignored:
            self.note(path, f"{names(ignored)} not supported; left out of the variant")
        for key in ("text", "image"):
            if raw.get(key) is not None:
                out[key] = str(raw[key])
        for key in ("buttons", "quick_replies"):
            found = [self.button(b, (*path, key, j)) for j, b in enumerate(as_list(raw.get(key)))]
            if any(found):
                out[key] = [b for b in found if b is not None]
        custom = raw.get("custom")
        if isinstance(custom, dict):
            out["custom"] = copy.deepcopy(custom)
        elif custom is not None:
            self.note((*path, "custom"), "a `custom` payload that is not a mapping; left out")
        if raw.get("condition") is not None:
            condition = self.response_condition(raw["condition"], (*path, "condition"))
            if condition is None:
                return None
            out["condition"] = condition
        if not out.keys() - {"condition"}:
            self.note(path, "the variant has no text, buttons, image or custom; skipped")
            return None
        if raw.get("channel") is not None:
            out["channel"] = raw["channel"]
        return out

    def button(self, raw: Any, path: Path) -> dict[str, str] | None:
        if not isinstance(raw, dict) or not raw.get("title"):
            self.error(path, "a button needs a `title` and a `payload`")
            return None
        if not raw.get("payload"):
            what = "a link button (`url`)" if raw.get("url") else "a button without `payload`"
            self.note(path, f"{what} is not supported; skipped")
            return None
        return {"title": str(raw["title"]), "payload": str(raw["payload"])}

    def response_condition(self, raw: Any, path: Path) -> list[dict[str, Any]] | None:
        out = []
        for i, cond in enumerate(as_list(raw)):
            here = (*path, i)
            if not isinstance(cond, dict) or "name" not in cond:
                self.error(here, "a condition is {type: slot, name, value}")
                return None
            if cond.get("type", "slot") != "slot":
                message = f"condition type `{cond['type']}` is not supported; variant skipped"
                self.note(here, message)
                return None
            if str(cond["name"]) not in self.slots:
                self.error((*here, "name"), f'unknown slot "{cond["name"]}"')
                return None
            out.append({"name": str(cond["name"]), "value": copy.deepcopy(cond.get("value"))})
        return out

    def read_forms(self, raw: Any) -> None:
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.error(("forms",), "`forms` maps form names to {required_slots: [...]}")
            return
        for name, spec in raw.items():
            name = str(name)
            path: Path = ("forms", name)
            spec = spec or {}
            if not re.match(NAME, name):
                self.error(path, "a form name is letters, digits, _ and -")
                continue
            if not isinstance(spec, dict):
                self.error(path, "a form is {required_slots: [slot, ...]}")
                continue
            required = spec.get("required_slots")
            if required is None and spec and all(isinstance(v, list) for v in spec.values()):
                required = spec  # Rasa 2.0: {slot: [mappings]} without `required_slots`
            else:
                for key in spec.keys() - {"required_slots"}:
                    what = "is not supported" if key == "ignored_intents" else "is unknown"
                    self.note((*path, key), f"form option `{key}` {what}; ignored")
            slots = self.form_slots(name, required, (*path, "required_slots"))
            if slots is not None:
                self.forms[name] = slots

    def form_slots(self, form: str, raw: Any, path: Path) -> list[str] | None:
        if raw is None:
            self.note(path, "the form has no `required_slots`; its flow asks nothing")
            return []
        if isinstance(raw, dict):  # Rasa 2: {slot: [mappings]}, used while the form is active
            message = "Rasa 2 form: its slot mappings were moved onto the slots, with "
            self.note(path, message + f"conditions on the form `{form}`")
            for slot, mappings in raw.items():
                known = self.slots.get(str(slot))
                if known is not None:
                    more = self.mappings(str(slot), mappings or [], (*path, str(slot)), form)
                    known.setdefault("mappings", []).extend(more)
            raw = list(raw)
        if not isinstance(raw, list):
            self.error(path, "`required_slots` is a list of slot names")
            return None
        slots = []
        for i, slot in enumerate(raw):
            if str(slot) not in self.slots:
                self.error((*path, i), f'unknown slot "{slot}"; add it under `slots`')
            else:
                slots.append(str(slot))
        return slots

    def read_actions(self, raw: Any) -> None:
        if raw is None:
            return
        if not isinstance(raw, list):
            self.error(("actions",), "`actions` is a list of action names")
            return
        for i, item in enumerate(raw):
            if isinstance(item, str):
                self.declared.append((i, item))
            elif isinstance(item, dict) and len(item) == 1:
                action, options = next(iter(item.items()))
                self.declared.append((i, str(action)))
                if options:
                    self.note(("actions", i), "action options are not supported", str(action))
            else:
                self.error(("actions", i), "an action is a name")

    def read_session(self, raw: Any) -> None:
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.error(("session_config",), "`session_config` is a mapping")
            return
        for key, value in raw.items():
            path: Path = ("session_config", key)
            if key == "session_expiration_time":
                if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                    self.session["expiry_minutes"] = value
                else:
                    self.error(path, "minutes: a number, 0 or more")
            elif key == "carry_over_slots_to_new_session":
                self.session["carry_over_slots"] = bool(value)
            else:
                self.note(path, "unknown session option; ignored")

    def custom_actions(self, action_url: str | None) -> list[str]:
        """The declared actions that are neither responses, forms nor built-in."""
        custom: list[str] = []
        for i, action in self.declared:
            if action in self.responses or action in self.forms or action in custom:
                continue
            if action in BUILTIN_ACTIONS:
                message = f"`{action}` is a Parley built-in; it runs instead of the action server's"
                self.note(("actions", i), message)
                continue
            if action == "action_validate_slot_mappings":
                message = "global slot validation (`action_validate_slot_mappings`) is not called"
                self.note(("actions", i), message)
            custom.append(action)
        if custom and action_url is None:
            self.note(
                ("actions",),
                f"custom actions {names(custom)} need an action server but endpoints.yml has "
                "no `action_endpoint` url; the steps that run them were left out",
            )
        return custom
