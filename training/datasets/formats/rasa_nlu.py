"""Rasa ``nlu.yml`` files: intents with ``[value](entity)`` examples, synonyms, regexes, lookups.

Regexes are checked with ``core.regex_safety.regex_problem`` (bot definitions use it too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, ClassVar

import yaml

from core.documents import check_json_depth, compose_yaml
from core.errors import ImportValidationError, InvalidInput
from core.regex_safety import regex_problem
from training.datasets.formats.base import RowErrors, dataset_document_limits, importers
from training.datasets.types import ParsedDataset, ParsedExample

_ANNOTATION = re.compile(r"\[(?P<value>[^\]]+)\](?:\((?P<paren>[^)]+)\)|(?P<brace>\{[^}]*\}))")


def parse_rasa_example(raw: str) -> tuple[str, list[dict[str, Any]]]:
    """Plain text and entity spans of a Rasa example with ``[value](entity)`` annotations.

    Supports ``[v](entity)``, ``[v](entity:synonym)`` and ``[v]{"entity": e, "value": s,
    "role": r, "group": g}``. ``value`` is the synonym target when one is given.
    """
    out: list[str] = []
    entities: list[dict[str, Any]] = []
    pos = 0
    length = 0
    for m in _ANNOTATION.finditer(raw):
        before = raw[pos : m.start()]
        out.append(before)
        length += len(before)
        value = m.group("value")
        if m.group("paren") is not None:
            entity, _, synonym = m.group("paren").partition(":")
            meta: dict[str, Any] = {"entity": entity.strip()}
            if synonym:
                meta["value"] = synonym.strip()
        else:
            brace = m.group("brace")
            check_json_depth(brace, dataset_document_limits().max_depth, what="an annotation")
            try:
                meta = json.loads(brace)
            except ValueError as e:  # malformed, or an integer of more than 4300 digits
                problem = getattr(e, "msg", e)
                raise InvalidInput(f"bad entity annotation {m.group(0)!r}: {problem}") from e
            if not isinstance(meta, dict) or not isinstance(meta.get("entity"), str):
                raise InvalidInput(f"bad entity annotation {m.group(0)!r}: needs an entity")
            meta["entity"] = meta["entity"].strip()
        if not meta["entity"]:
            raise InvalidInput(
                f"bad entity annotation {m.group(0)!r}: needs an entity, e.g. [{value}](city)"
            )
        span = {"start": length, "end": length + len(value), "entity": meta["entity"]}
        span["value"] = str(meta.get("value", value))
        for k in ("role", "group"):
            if k in meta:
                span[k] = str(meta[k])
        entities.append(span)
        out.append(value)
        length += len(value)
        pos = m.end()
    out.append(raw[pos:])
    return "".join(out), entities


def _block_items(node: yaml.Node) -> Iterable[tuple[int, str]]:
    """(1-based line, text) of each ``- item`` in a Rasa ``examples: |`` block."""
    if isinstance(node, yaml.SequenceNode):  # examples given as a YAML list
        for item in node.value:
            if isinstance(item, yaml.ScalarNode):
                yield item.start_mark.line + 1, str(item.value)
            elif isinstance(item, yaml.MappingNode):
                for k, v in item.value:
                    if k.value == "text" and isinstance(v, yaml.ScalarNode):
                        yield v.start_mark.line + 1, str(v.value)
        return
    if not isinstance(node, yaml.ScalarNode):
        return
    first = node.start_mark.line + (2 if node.style in ("|", ">") else 1)
    for offset, raw in enumerate(str(node.value).splitlines()):
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("- "):
            stripped = stripped[2:]
        elif stripped == "-":
            stripped = ""
        yield first + offset, stripped.strip()


class _Synonyms:
    """Synonym texts seen so far and their canonical values; flags a text mapped two ways."""

    def __init__(self, errors: RowErrors) -> None:
        self.errors = errors
        self.seen: dict[str, tuple[str, int]] = {}

    def add(self, text: str, canonical: str, line: int) -> None:
        first = self.seen.setdefault(text, (canonical, line))
        if first[0] != canonical:
            self.errors.add(
                line,
                f"inconsistent synonyms: {text!r} maps to {first[0]!r} (line {first[1]}) and "
                f"to {canonical!r}; keep one of them",
            )


@importers.register("rasa-yaml")
class RasaNluImporter:
    """Rasa ``nlu.yml``: intents with annotated examples, synonyms, regexes and lookups."""

    name: ClassVar[str] = "rasa-yaml"
    extensions: ClassVar[tuple[str, ...]] = (".yml", ".yaml")
    dataset_types: ClassVar[tuple[str, ...]] = ("text-intent", "text-entities")

    def parse(self, text: str, dataset_type: str) -> ParsedDataset:
        try:
            root = compose_yaml(text, what="the Rasa NLU file", limits=dataset_document_limits())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark else 1
            raise ImportValidationError(
                f"line {line}: malformed YAML: {getattr(e, 'problem', e)}",
                errors=[{"line": line, "message": "malformed YAML"}],
            ) from e
        nlu = _mapping_get(root, "nlu")
        if not isinstance(nlu, yaml.SequenceNode):
            raise ImportValidationError(
                "not a Rasa NLU file: expected a top-level `nlu:` list of intents", errors=[]
            )
        errors = RowErrors()
        synonyms = _Synonyms(errors)
        examples: list[ParsedExample] = []
        extras: dict[str, dict[str, list[str]]] = {"synonyms": {}, "regexes": {}, "lookups": {}}
        for item in nlu.value:
            if not isinstance(item, yaml.MappingNode):
                errors.add(item.start_mark.line + 1, "each nlu item must be a mapping")
                continue
            keys = {k.value: v for k, v in item.value}
            block = keys.get("examples")
            line = item.start_mark.line + 1
            if block is None:
                errors.add(line, "nlu item without `examples`")
                continue
            items = list(_block_items(block))
            if "intent" in keys:
                intent = str(keys["intent"].value).strip()
                for ln, raw in items:
                    try:
                        plain, ents = parse_rasa_example(raw)
                    except InvalidInput as e:
                        errors.add(ln, e.message)
                        continue
                    for ent in ents:  # [NYC](city:New York City) is a synonym too
                        shown = plain[ent["start"] : ent["end"]]
                        if ent["value"] != shown:
                            synonyms.add(shown, ent["value"], ln)
                    examples.append(
                        ParsedExample(line=ln, text=plain, label=intent, annotations=ents)
                    )
            elif "synonym" in keys:
                canonical = str(keys["synonym"].value)
                for ln, example in items:
                    synonyms.add(example, canonical, ln)
                extras["synonyms"].setdefault(canonical, []).extend(t for _, t in items)
            elif "regex" in keys:
                for ln, pattern in items:
                    if (problem := regex_problem(pattern)) is not None:
                        errors.add(ln, problem)
                extras["regexes"].setdefault(str(keys["regex"].value), []).extend(
                    t for _, t in items
                )
            elif "lookup" in keys:
                extras["lookups"].setdefault(str(keys["lookup"].value), []).extend(
                    t for _, t in items
                )
            else:
                errors.add(line, "nlu item needs one of intent, synonym, regex, lookup")
        errors.raise_if_any("the Rasa file has bad items")
        return ParsedDataset(examples=examples, extras={k: v for k, v in extras.items() if v})


def _mapping_get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key and isinstance(v, yaml.Node):
                return v
    return None
