"""JSON and JSONL files: ``{"text", "label"}`` objects (``entities`` spans for text-entities)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from core.documents import check_json_depth
from core.errors import ImportValidationError, LimitExceeded
from training.datasets.formats.base import (
    RowErrors,
    dataset_document_limits,
    importers,
    span_problems,
)
from training.datasets.types import ParsedDataset, ParsedExample


def _text_fields(dataset_type: str) -> tuple[set[str], set[str]]:
    """(required, optional) fields of a flat row for a text dataset type."""
    if dataset_type == "text-intent":
        return {"text", "label"}, {"entities"}
    return {"text", "entities"}, {"label"}


def _example_from_object(
    obj: Any, line: int, dataset_type: str, errors: RowErrors
) -> ParsedExample | None:
    if not isinstance(obj, dict):
        errors.add(line, f"expected an object with text and label, found {type(obj).__name__}")
        return None
    required, optional = _text_fields(dataset_type)
    extra = sorted(set(obj) - required - optional)
    if extra:
        errors.add(
            line,
            f"unexpected field(s) {', '.join(extra)}; allowed: "
            f"{', '.join(sorted(required | optional))}",
        )
        return None
    text, label = obj.get("text"), obj.get("label")
    if text is not None and not isinstance(text, str):
        errors.add(line, "text must be a string")
        return None
    if label is not None and not isinstance(label, str | int):
        errors.add(line, "label must be a string")
        return None
    entities = obj.get("entities")
    annotations = None
    if entities is not None:
        annotations = _check_entities(entities, text or "", line, errors)
        if annotations is None:
            return None
    return ParsedExample(
        line=line,
        text=text,
        label=None if label is None else str(label),
        annotations=annotations,
    )


_ENTITY_FIELDS = ("start", "end", "entity", "value", "role", "group")


def _check_entities(
    entities: Any, text: str, line: int, errors: RowErrors
) -> list[dict[str, Any]] | None:
    """The entity spans of a JSON item as ``{start, end, entity, value[, role, group]}``.

    A ``value`` that differs from the spanned text is kept as the synonym's canonical value.
    """
    problems = span_problems(entities, text)
    for n, ent in enumerate(entities if isinstance(entities, list) else [], start=1):
        if not isinstance(ent, dict):
            continue
        extra = sorted(set(ent) - set(_ENTITY_FIELDS))
        if extra:
            problems.append(
                f"bad entity {n}: unexpected field(s) {', '.join(extra)}; "
                f"allowed: {', '.join(sorted(_ENTITY_FIELDS))}"
            )
        for key in ("value", "role", "group"):
            given = ent.get(key)
            if key in ent and (
                isinstance(given, bool) or not isinstance(given, str | int) or given == ""
            ):
                problems.append(f"bad entity {n}: {key} must be a non-empty string")
    if problems:
        for problem in problems:
            errors.add(line, problem)
        return None
    out = []
    for ent in entities:
        start, end = ent["start"], ent["end"]
        item = {
            "start": start,
            "end": end,
            "entity": ent["entity"].strip(),
            "value": str(ent.get("value", text[start:end])),
        }
        item.update({k: str(ent[k]) for k in ("role", "group") if k in ent})
        out.append(item)
    return out


@importers.register("json")
class JsonImporter:
    """A JSON array of ``{"text", "label"}`` objects (``entities`` for text-entities)."""

    name: ClassVar[str] = "json"
    extensions: ClassVar[tuple[str, ...]] = (".json",)
    dataset_types: ClassVar[tuple[str, ...]] = ("text-intent", "text-entities")

    def parse(self, text: str, dataset_type: str) -> ParsedDataset:
        check_json_depth(text, dataset_document_limits().max_depth, what="the file")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ImportValidationError(
                f"line {e.lineno}: malformed JSON: {e.msg}",
                errors=[{"line": e.lineno, "message": e.msg}],
            ) from e
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise ImportValidationError(f"unreadable JSON: {e}", errors=[]) from e
        if isinstance(data, dict) and isinstance(data.get("examples"), list):
            data = data["examples"]
        if not isinstance(data, list):
            raise ImportValidationError(
                'expected a JSON array of {"text": ..., "label": ...} objects', errors=[]
            )
        errors = RowErrors()
        # JSON arrays have no per-item line numbers; report the item's position (1-based).
        examples = [
            ex
            for i, obj in enumerate(data, start=1)
            if (ex := _example_from_object(obj, i, dataset_type, errors)) is not None
        ]
        errors.raise_if_any("the file has bad items (numbered from 1)")
        return ParsedDataset(examples=examples)


@importers.register("jsonl")
class JsonlImporter:
    """One ``{"text", "label"}`` object per line."""

    name: ClassVar[str] = "jsonl"
    extensions: ClassVar[tuple[str, ...]] = (".jsonl", ".ndjson")
    dataset_types: ClassVar[tuple[str, ...]] = ("text-intent", "text-entities")

    def parse(self, text: str, dataset_type: str) -> ParsedDataset:
        errors = RowErrors()
        examples = []
        max_depth = dataset_document_limits().max_depth
        # split on newlines only: JSON strings may hold U+2028 and friends unescaped
        for i, raw in enumerate(text.split("\n"), start=1):
            raw = raw.rstrip("\r")
            if not raw.strip():
                continue
            try:
                check_json_depth(raw, max_depth, what="the line")
                obj = json.loads(raw)
            except LimitExceeded as e:
                errors.add(i, e.message)
                continue
            except ValueError as e:  # malformed, or an integer of more than 4300 digits
                errors.add(i, f"malformed JSON: {getattr(e, 'msg', e)}")
                continue
            ex = _example_from_object(obj, i, dataset_type, errors)
            if ex is not None:
                examples.append(ex)
        errors.raise_if_any("the file has bad lines")
        return ParsedDataset(examples=examples)
