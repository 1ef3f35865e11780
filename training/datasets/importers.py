"""Dataset file importers: CSV/TSV, JSON/JSONL and Rasa ``nlu.yml`` for the text types.

Each importer turns bytes into ``ParsedDataset``; ``validate`` then checks every row and names
the line of each mistake (``line 17: empty text``). Image importers register here too.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import yaml

from core.errors import ImportValidationError, InvalidInput, LimitExceeded
from core.registry import Registry
from training.datasets.types import ParsedDataset, ParsedExample

MAX_REPORTED_ERRORS = 50


class Importer(Protocol):
    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]]
    dataset_types: ClassVar[tuple[str, ...]]

    def parse(self, text: str, dataset_type: str) -> ParsedDataset: ...


importers: Registry[type[Importer]] = Registry("dataset format")


class _Errors:
    """Collects row errors; raises them together."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, line: int, message: str) -> None:
        if len(self.items) < MAX_REPORTED_ERRORS:
            self.items.append({"line": line, "message": message})

    def raise_if_any(self, what: str) -> None:
        if self.items:
            shown = "; ".join(f"line {e['line']}: {e['message']}" for e in self.items[:10])
            more = f" (and {len(self.items) - 10} more)" if len(self.items) > 10 else ""
            raise ImportValidationError(f"{what}: {shown}{more}", errors=self.items)


def decode_text(data: bytes) -> str:
    """UTF-8 text of an upload, or a clear error for binary or other encodings."""
    if not data.strip():
        raise ImportValidationError("the file is empty", errors=[])
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportValidationError(
            "the file is UTF-16 text (Excel's 'Unicode Text' export); save it as UTF-8 "
            "(CSV UTF-8) and upload again",
            errors=[],
        )
    if b"\x00" in data[:8192]:
        raise ImportValidationError(
            "the file looks binary (it contains NUL bytes), not a text file; "
            "upload CSV, TSV, JSON, JSONL or Rasa YAML",
            errors=[],
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ImportValidationError(
            f"line {line}: the file is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); save it as UTF-8 and upload again",
            errors=[{"line": line, "message": "not valid UTF-8"}],
        ) from e


def _text_fields(dataset_type: str) -> tuple[set[str], set[str]]:
    """(required, optional) fields of a flat row for a text dataset type."""
    if dataset_type == "text-intent":
        return {"text", "label"}, {"entities"}
    return {"text", "entities"}, {"label"}


@importers.register("csv")
class CsvImporter:
    """``text,label`` with a header row; TSV with tabs."""

    name: ClassVar[str] = "csv"
    extensions: ClassVar[tuple[str, ...]] = (".csv",)
    dataset_types: ClassVar[tuple[str, ...]] = ("text-intent",)
    delimiter: ClassVar[str] = ","

    def parse(self, text: str, dataset_type: str) -> ParsedDataset:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter, strict=True)
        errors = _Errors()
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ImportValidationError("the file is empty", errors=[]) from None
        except csv.Error as e:
            raise ImportValidationError(f"line 1: {e}", errors=[]) from e
        expected = ["text", "label"]
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        if missing or extra or len(header) != len(set(header)):
            sep = self.delimiter if self.delimiter != "\t" else "<tab>"
            parts = []
            if missing:
                parts.append(f"missing column(s) {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected column(s) {', '.join(repr(c) for c in extra)}")
            if not parts:
                parts.append("a column appears twice")
            raise ImportValidationError(
                f"line 1: {'; '.join(parts)}; the header must be `text{sep}label` "
                f"(found: {sep.join(header)})",
                errors=[{"line": 1, "message": "bad header"}],
            )
        ti, li = header.index("text"), header.index("label")
        examples: list[ParsedExample] = []
        line = reader.line_num
        try:
            for row in reader:
                line, start = reader.line_num, line + 1  # a quoted field may span lines
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    errors.add(start, f"expected {len(header)} fields, found {len(row)}")
                    continue
                examples.append(ParsedExample(line=start, text=row[ti], label=row[li]))
        except csv.Error as e:
            errors.add(reader.line_num or line, f"malformed row: {e}")
        errors.raise_if_any("the file has bad rows")
        return ParsedDataset(examples=examples)


@importers.register("tsv")
class TsvImporter(CsvImporter):
    name: ClassVar[str] = "tsv"
    extensions: ClassVar[tuple[str, ...]] = (".tsv", ".tab")
    delimiter: ClassVar[str] = "\t"


def _example_from_object(
    obj: Any, line: int, dataset_type: str, errors: _Errors
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


def _check_entities(
    entities: Any, text: str, line: int, errors: _Errors
) -> list[dict[str, Any]] | None:
    if not isinstance(entities, list):
        errors.add(line, "entities must be a list of {start, end, entity}")
        return None
    out = []
    for ent in entities:
        if not (
            isinstance(ent, dict)
            and isinstance(ent.get("start"), int)
            and isinstance(ent.get("end"), int)
            and isinstance(ent.get("entity"), str)
            and 0 <= ent["start"] < ent["end"] <= len(text)
        ):
            errors.add(line, f"bad entity {ent!r}: needs start < end within the text, and entity")
            return None
        item = {
            "start": ent["start"],
            "end": ent["end"],
            "entity": ent["entity"],
            "value": str(ent.get("value", text[ent["start"] : ent["end"]])),
        }
        out.append(item)
    return out


@importers.register("json")
class JsonImporter:
    """A JSON array of ``{"text", "label"}`` objects (``entities`` for text-entities)."""

    name: ClassVar[str] = "json"
    extensions: ClassVar[tuple[str, ...]] = (".json",)
    dataset_types: ClassVar[tuple[str, ...]] = ("text-intent", "text-entities")

    def parse(self, text: str, dataset_type: str) -> ParsedDataset:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ImportValidationError(
                f"line {e.lineno}: malformed JSON: {e.msg}",
                errors=[{"line": e.lineno, "message": e.msg}],
            ) from e
        if isinstance(data, dict) and isinstance(data.get("examples"), list):
            data = data["examples"]
        if not isinstance(data, list):
            raise ImportValidationError(
                'expected a JSON array of {"text": ..., "label": ...} objects', errors=[]
            )
        errors = _Errors()
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
        errors = _Errors()
        examples = []
        # split on newlines only: JSON strings may hold U+2028 and friends unescaped
        for i, raw in enumerate(text.split("\n"), start=1):
            raw = raw.rstrip("\r")
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                errors.add(i, f"malformed JSON: {e.msg}")
                continue
            ex = _example_from_object(obj, i, dataset_type, errors)
            if ex is not None:
                examples.append(ex)
        errors.raise_if_any("the file has bad lines")
        return ParsedDataset(examples=examples)


# --- Rasa nlu.yml ---------------------------------------------------------------------------

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
            try:
                meta = json.loads(m.group("brace"))
            except json.JSONDecodeError as e:
                raise InvalidInput(f"bad entity annotation {m.group(0)!r}: {e.msg}") from e
            if not isinstance(meta, dict) or not isinstance(meta.get("entity"), str):
                raise InvalidInput(f"bad entity annotation {m.group(0)!r}: needs an entity")
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


@importers.register("rasa-yaml")
class RasaNluImporter:
    """Rasa ``nlu.yml``: intents with annotated examples, synonyms, regexes and lookups."""

    name: ClassVar[str] = "rasa-yaml"
    extensions: ClassVar[tuple[str, ...]] = (".yml", ".yaml")
    dataset_types: ClassVar[tuple[str, ...]] = ("text-intent", "text-entities")

    def parse(self, text: str, dataset_type: str) -> ParsedDataset:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
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
        errors = _Errors()
        examples: list[ParsedExample] = []
        extras: dict[str, Any] = {"synonyms": {}, "regexes": {}, "lookups": {}}
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
                    examples.append(
                        ParsedExample(line=ln, text=plain, label=intent, annotations=ents)
                    )
            elif "synonym" in keys:
                extras["synonyms"][str(keys["synonym"].value)] = [t for _, t in items]
            elif "regex" in keys:
                extras["regexes"][str(keys["regex"].value)] = [t for _, t in items]
            elif "lookup" in keys:
                extras["lookups"][str(keys["lookup"].value)] = [t for _, t in items]
            else:
                errors.add(line, "nlu item needs one of intent, synonym, regex, lookup")
        errors.raise_if_any("the Rasa file has bad items")
        return ParsedDataset(examples=examples, extras={k: v for k, v in extras.items() if v})


def _mapping_get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return v
    return None


def pick_importer(filename: str | None, fmt: str | None, dataset_type: str) -> Importer:
    """The importer for an explicit ``format`` or, failing that, the file's extension."""
    if fmt:
        cls = importers.get(fmt)
    else:
        lower = (filename or "").lower()
        matches = [c for _, c in importers.items() if lower.endswith(c.extensions)]
        if not matches:
            raise InvalidInput(
                f"cannot tell the format of {filename!r} from its extension; name the file "
                f"*.csv, *.tsv, *.json, *.jsonl or *.yml, or pass format= one of "
                f"{', '.join(importers.names())}"
            )
        cls = matches[0]
    if dataset_type not in cls.dataset_types:
        usable = [n for n, c in importers.items() if dataset_type in c.dataset_types]
        raise InvalidInput(
            f"format {cls.name!r} cannot hold {dataset_type!r} datasets; "
            + (
                f"use one of: {', '.join(usable)}"
                if usable
                else f"importers for {dataset_type!r} are not available in this release"
            )
        )
    return cls()


@dataclass(frozen=True)
class Limits:
    max_examples: int
    max_labels: int
    max_text_chars: int


@dataclass
class Validated:
    examples: list[ParsedExample]
    duplicates: int
    first_duplicate_line: int | None
    extras: dict[str, Any]


def validate(
    parsed: ParsedDataset,
    *,
    dataset_type: str,
    limits: Limits,
    existing: set[tuple[str, str | None]] | None = None,
) -> Validated:
    """Check every example; drop exact duplicates (counted); raise with the lines at fault."""
    errors = _Errors()
    seen: set[tuple[str, str | None]] = set(existing or ())
    kept: list[ParsedExample] = []
    duplicates = 0
    first_dup: int | None = None
    needs_label = dataset_type == "text-intent"
    for ex in parsed.examples:
        text = (ex.text or "").strip()
        label = (ex.label or "").strip() or None
        if not text:
            errors.add(ex.line, "empty text")
            continue
        if len(text) > limits.max_text_chars:
            errors.add(ex.line, f"text is longer than {limits.max_text_chars} characters")
            continue
        if needs_label and label is None:
            errors.add(ex.line, "missing label")
            continue
        if label is not None and len(label) > 200:
            errors.add(ex.line, "label is longer than 200 characters")
            continue
        key = (text, label)
        if key in seen:
            duplicates += 1
            first_dup = first_dup or ex.line
            continue
        seen.add(key)
        # keep annotations aligned with the stripped text
        shift = len(ex.text or "") - len((ex.text or "").lstrip())
        annotations = ex.annotations
        if annotations and shift:
            annotations = [
                {**a, "start": a["start"] - shift, "end": a["end"] - shift} for a in annotations
            ]
        kept.append(ParsedExample(line=ex.line, text=text, label=label, annotations=annotations))
    errors.raise_if_any("the file has bad rows")
    if not kept and not existing:
        raise ImportValidationError("the file holds no examples", errors=[])
    if len(kept) + len(existing or ()) > limits.max_examples:
        raise LimitExceeded(
            f"{len(kept) + len(existing or ())} examples is over the limit of "
            f"{limits.max_examples} per dataset (PARLEY_LIMITS__MAX_EXAMPLES)",
            limit="max_examples",
        )
    labels = {lab for _, lab in seen if lab is not None}
    if len(labels) > limits.max_labels:
        raise LimitExceeded(
            f"{len(labels)} labels is over the limit of {limits.max_labels} per dataset "
            "(PARLEY_LIMITS__MAX_LABELS)",
            limit="max_labels",
        )
    return Validated(
        examples=kept, duplicates=duplicates, first_duplicate_line=first_dup, extras=parsed.extras
    )
