"""Dataset file importers for the text types: CSV/TSV, JSON/JSONL, Rasa ``nlu.yml``, CoNLL/BIO.

Each importer turns bytes into ``ParsedDataset``; ``validate`` then checks every row and names
the line of each mistake (``line 17: empty text``). Entity spans are checked the same way for
every importer (``_span_problems``). Image importers register here too.
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

from core.documents import DocumentLimits, check_json_depth, compose_yaml, document_limits
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


def _document_limits() -> DocumentLimits:
    """Dataset files are documents as large as an upload may be (the process settings)."""
    return document_limits(bytes_setting="max_upload_bytes")


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
            "upload CSV, TSV, JSON, JSONL, Rasa YAML or CoNLL",
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


_ENTITY_FIELDS = ("start", "end", "entity", "value", "role", "group")


def _is_offset(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _span_problems(spans: Any, text: str) -> list[str]:
    """What is wrong with the entity spans of one example over its ``text`` (empty if nothing).

    Each span needs whole-number ``start < end`` within the text and a non-empty ``entity``;
    spans of one example must not overlap. A ``value`` that differs from the spanned text is a
    synonym's canonical value and is not checked against the text.
    """
    if not isinstance(spans, list):
        return ["entities must be a list of {start, end, entity} objects"]
    problems: list[str] = []
    good: list[tuple[int, int, str]] = []
    for n, span in enumerate(spans, start=1):
        if not isinstance(span, dict):
            problems.append(
                f"bad entity {n}: expected an object with start, end and entity, "
                f"found {type(span).__name__}"
            )
            continue
        start, end, entity = span.get("start"), span.get("end"), span.get("entity")
        if not (_is_offset(start) and _is_offset(end)):
            problems.append(
                f"bad entity {n}: start and end must be whole-number character offsets, "
                f"found start={start!r}, end={end!r}"
            )
            continue
        if not isinstance(entity, str) or not entity.strip():
            problems.append(
                f'bad entity {n} at {start}-{end}: needs an entity type, e.g. "entity": "city"'
            )
            continue
        where = f"bad entity {n} ({entity} at {start}-{end})"
        if start >= end:
            problems.append(f"{where}: start must be less than end")
        elif start < 0 or end > len(text):
            problems.append(f"{where}: outside the text, which has {len(text)} characters")
        else:
            good.append((start, end, entity))
    good.sort()
    widest: tuple[int, int, str] | None = None  # the span reaching furthest right so far
    for span in good:
        if widest is not None and span[0] < widest[1]:
            problems.append(
                f"entities overlap: {_describe_span(widest, text)} and "
                f"{_describe_span(span, text)}; spans in one example must not overlap"
            )
        if widest is None or span[1] > widest[1]:
            widest = span
    return problems


def _describe_span(span: tuple[int, int, str], text: str) -> str:
    start, end, entity = span
    return f"{entity} {text[start:end]!r} at {start}-{end}"


def _check_entities(
    entities: Any, text: str, line: int, errors: _Errors
) -> list[dict[str, Any]] | None:
    """The entity spans of a JSON item as ``{start, end, entity, value[, role, group]}``.

    A ``value`` that differs from the spanned text is kept as the synonym's canonical value.
    """
    problems = _span_problems(entities, text)
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
        check_json_depth(text, _document_limits().max_depth, what="the file")
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
        max_depth = _document_limits().max_depth
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


# --- CoNLL / BIO ----------------------------------------------------------------------------


class _ConllSentence:
    """The tokens and entity spans of the sentence being read, in the example's text."""

    def __init__(self, line: int) -> None:
        self.line = line  # the first token's line: the example's line
        self.tokens: list[str] = []
        self.spans: list[dict[str, Any]] = []
        self.length = 0  # characters of " ".join(tokens)
        self.open: dict[str, Any] | None = None  # the entity the last token belongs to
        self.previous = "none"  # the previous token's tag, for messages; "" after a bad tag

    def add(self, token: str, entity: str | None, begins: bool) -> None:
        start = self.length + (1 if self.tokens else 0)
        self.tokens.append(token)
        self.length = start + len(token)
        if entity is None:
            self.open = None
        elif begins or self.open is None or self.open["entity"] != entity:
            self.open = {"start": start, "end": self.length, "entity": entity}
            self.spans.append(self.open)
        else:
            self.open["end"] = self.length

    def example(self) -> ParsedExample:
        text = " ".join(self.tokens)
        spans = [{**s, "value": text[s["start"] : s["end"]]} for s in self.spans]
        return ParsedExample(line=self.line, text=text, annotations=spans)


def _conll_tag(tag: str) -> tuple[str | None, bool] | str:
    """(entity type or None for O, whether it begins an entity), or what is wrong with ``tag``."""
    if tag == "O":
        return None, False
    prefix, dash, entity = tag.partition("-")
    if not dash or prefix not in ("B", "I"):
        hint = ""
        if tag == "0":
            hint = " (write the letter O, not the digit 0)"
        elif tag.upper() != tag and (tag.upper() == "O" or tag[:2].upper() in ("B-", "I-")):
            hint = f" (tags are case-sensitive: write {tag[:2].upper() + tag[2:]!r})"
        elif prefix.upper() in ("E", "S", "L", "U") and dash:
            hint = " (BIOES/BILOU tags are not supported; convert them to BIO)"
        return f"tag {tag!r} is not O, B-<type> or I-<type>{hint}"
    if not entity.strip():
        return f"tag {tag!r} has no entity type; write {prefix}-<type>, e.g. {prefix}-city"
    return entity, prefix == "B"


@importers.register("conll")
class ConllImporter:
    """CoNLL/BIO: one ``token<TAB>tag`` per line and a blank line between sentences.

    A single space may stand in for the tab when a line has none. Tags are BIO: ``O``,
    ``B-type`` to begin an entity, ``I-type`` to continue it. A line starting with ``#`` and
    holding no tab is a comment (so ``#hashtag<TAB>O`` stays a token). An example's text is
    its tokens joined by single spaces; each entity becomes a character span of that text.
    """

    name: ClassVar[str] = "conll"
    extensions: ClassVar[tuple[str, ...]] = (".conll", ".bio")
    dataset_types: ClassVar[tuple[str, ...]] = ("text-entities",)

    def parse(self, text: str, dataset_type: str) -> ParsedDataset:
        errors = _Errors()
        examples: list[ParsedExample] = []
        sentence: _ConllSentence | None = None
        # split on newlines only, as for JSONL: a token may hold U+2028 and friends
        for n, raw in enumerate(text.split("\n"), start=1):
            line = raw.rstrip().lstrip(" ")  # a leading tab is an empty token
            if not line:
                if sentence is not None:
                    examples.append(sentence.example())
                sentence = None
                continue
            if line.startswith("#") and "\t" not in line:
                continue
            if sentence is None:
                sentence = _ConllSentence(n)
            fields = (
                [f.strip() for f in line.split("\t")]
                if "\t" in line
                else [f for f in line.split(" ") if f]
            )
            problem = self._read(sentence, fields)
            if problem is not None:
                errors.add(n, problem)
        if sentence is not None:
            examples.append(sentence.example())
        errors.raise_if_any("the file has bad lines")
        if not examples:
            raise ImportValidationError(
                "the file holds no examples; write one `token<TAB>tag` per line, with a blank "
                "line between sentences",
                errors=[],
            )
        return ParsedDataset(examples=examples)

    @staticmethod
    def _read(sentence: _ConllSentence, fields: list[str]) -> str | None:
        """Add one token line to ``sentence``; what is wrong with it, or None."""
        token, tag = fields[0], fields[1] if len(fields) > 1 else ""
        read = _conll_tag(tag) if tag else ""
        if len(fields) > 2:
            read = (
                f"expected `token<TAB>tag`, found {len(fields)} columns; keep only the token "
                "and its BIO tag"
            )
        elif not tag:
            read = (
                f"no tag after the token {token!r}; write `token<TAB>tag`, with O for a token "
                "outside any entity"
            )
        elif not token:
            read = f"no token before the tag {tag!r}"
        elif isinstance(read, str) and token.startswith("#"):
            read += " (a line starting with # is a comment only when it holds no tab)"
        if isinstance(read, str):
            sentence.previous = ""  # unknown: do not blame the next I- tag for this line
            return read
        entity, begins = read
        previous, sentence.previous = sentence.previous, tag
        if entity is not None and not begins and previous:  # after a bad tag, say nothing
            continuing = sentence.open is not None and sentence.open["entity"] == entity
            if not continuing:
                before = (
                    "it is the first token of the sentence"
                    if previous == "none"
                    else f"the previous tag is {previous}"
                )
                sentence.add(token, entity, begins=True)
                return (
                    f"{tag} does not continue a B-{entity} or I-{entity}: {before}; "
                    f"write B-{entity} to begin the entity"
                )
        sentence.add(token, entity, begins)
        return None


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
            brace = m.group("brace")
            check_json_depth(brace, _document_limits().max_depth, what="an annotation")
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


_QUANTIFIER = re.compile(r"(?P<op>[*+?]|\{(?P<lo>\d*)(?P<comma>,)?(?P<hi>\d*)\})(?P<mode>[?+]?)")
_INLINE_FLAGS = re.compile(r"\?[aiLmsux-]*(?P<end>[:)])")


@dataclass
class _RegexPiece:
    """One atom of a regex with its quantifier: a character, a class, an escape or a group."""

    text: str  # as written, quantifier included
    alternatives: list[list[_RegexPiece]] | None  # a group's branches
    repeats: bool  # *, + or {n,} that gives characters back (not possessive)
    optional: bool  # may match nothing: ?, *, {0,...}
    atomic: bool  # (?>...): never backtracked into
    zero_width: bool  # a lookaround


def _class_end(pattern: str, i: int) -> int:
    """The index after the ``]`` closing a character class whose ``[`` is just before ``i``."""
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _scan_regex(pattern: str, i: int = 0) -> tuple[list[list[_RegexPiece]], int]:
    """The branches of ``pattern`` from ``i`` up to the closing parenthesis (or the end).

    Only for patterns that ``re.compile`` accepted; it never raises on odd input.
    """
    branches: list[list[_RegexPiece]] = [[]]
    while i < len(pattern):
        start, char = i, pattern[i]
        if char == ")":
            return branches, i + 1
        if char == "|":
            branches.append([])
            i += 1
            continue
        alternatives: list[list[_RegexPiece]] | None = None
        atomic = zero_width = False
        if char == "\\":
            i += 2
        elif char == "[":
            i = _class_end(pattern, i + 1)
        elif char != "(":
            i += 1
        elif pattern.startswith("(?#", i):  # a comment
            i = _after(pattern, ")", i)
            continue
        elif pattern.startswith("(?P=", i):  # a back reference
            i = _after(pattern, ")", i)
        else:
            i += 1
            if pattern.startswith(("?:", "?>", "?=", "?!"), i):
                atomic, zero_width = pattern[i + 1] == ">", pattern[i + 1] in "=!"
                i += 2
            elif pattern.startswith(("?<=", "?<!"), i):
                zero_width, i = True, i + 3
            elif pattern.startswith("?P<", i):
                i = _after(pattern, ">", i)
            elif pattern.startswith("?(", i):  # a conditional: (?(name)yes|no)
                i = _after(pattern, ")", i)
            elif (flags := _INLINE_FLAGS.match(pattern, i)) is not None:
                i = flags.end()
                if flags.group("end") == ")":  # (?i) for the whole pattern
                    continue
            alternatives, i = _scan_regex(pattern, i)
        repeats = optional = False
        quantifier = _QUANTIFIER.match(pattern, i)
        if quantifier is not None and quantifier.group("op") != "{}":
            op, lo = quantifier.group("op"), quantifier.group("lo") or "0"
            unbounded = op in "*+" or (
                quantifier.group("comma") is not None and not quantifier.group("hi")
            )
            repeats = unbounded and quantifier.group("mode") != "+"
            optional = op in "?*" or (op.startswith("{") and int(lo) == 0)
            i = quantifier.end()
        branches[-1].append(
            _RegexPiece(pattern[start:i], alternatives, repeats, optional, atomic, zero_width)
        )
    return branches, i


def _after(pattern: str, char: str, i: int) -> int:
    found = pattern.find(char, i)
    return len(pattern) if found < 0 else found + 1


def _ends_in_repetition(branch: list[_RegexPiece]) -> bool:
    """Whether the last piece that must match (looking past optional ones) can repeat."""
    for piece in reversed(branch):
        if piece.zero_width:
            continue
        if piece.repeats:
            return True
        if (
            piece.alternatives is not None
            and not piece.atomic
            and any(_ends_in_repetition(b) for b in piece.alternatives)
        ):
            return True
        if not piece.optional:
            return False
    return False


def _nested_repetition(branches: list[list[_RegexPiece]]) -> tuple[str, str] | None:
    """(group, why) of the first repeated group that can split its text many ways, if any."""
    for branch in branches:
        for piece in branch:
            if piece.alternatives is None:
                continue
            if piece.repeats and not piece.atomic:
                if any(_ends_in_repetition(b) for b in piece.alternatives):
                    return piece.text, "repeats a group that itself ends in a repetition"
                bodies = ["".join(p.text for p in b) for b in piece.alternatives]
                if len(set(bodies)) < len(bodies):
                    return piece.text, "repeats a choice between identical alternatives"
            found = _nested_repetition(piece.alternatives)
            if found is not None:
                return found
    return None


def regex_problem(pattern: str) -> str | None:
    """Why a Rasa ``regex:`` example is unusable, or None.

    It must compile with Python's ``re`` and must not nest repetition (``(a+)+``, ``(.*)*``,
    ``(a|a)*``), which can backtrack for exponential time on a short input. The check is
    static and simple: a repeated group whose body ends in a repetition, or repeats identical
    alternatives.
    """
    if not pattern:
        return "empty regex; write a pattern or remove the line"
    try:
        re.compile(pattern)
    except re.error as e:
        where = f" at position {e.pos}" if e.pos is not None else ""
        return f"invalid regex {pattern!r}: {e.msg}{where}; fix it (Python `re` syntax)"
    found = _nested_repetition(_scan_regex(pattern)[0])
    if found is not None:
        group, why = found
        return (
            f"regex {pattern!r}: {group!r} {why}, which may take exponential time; "
            "rewrite without nested repetition (e.g. `(a+)+` as `a+`)"
        )
    return None


class _Synonyms:
    """Synonym texts seen so far and their canonical values; flags a text mapped two ways."""

    def __init__(self, errors: _Errors) -> None:
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
            root = compose_yaml(text, what="the Rasa NLU file", limits=_document_limits())
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
            extensions = sorted({e for _, c in importers.items() for e in c.extensions})
            raise InvalidInput(
                f"cannot tell the format of {filename!r} from its extension; name the file "
                f"{', '.join('*' + e for e in extensions)}, or pass format= one of "
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
    max_image_pixels: int = 40_000_000


@dataclass
class Validated:
    examples: list[ParsedExample]
    duplicates: int
    first_duplicate_line: int | None
    extras: dict[str, Any]


def _align_spans(
    spans: list[dict[str, Any]], raw: str, line: int, errors: _Errors
) -> list[dict[str, Any]] | None:
    """``spans`` over ``raw`` checked and moved onto ``raw.strip()``; None if any is wrong.

    A span reaching into the whitespace that stripping removes is an error, not clipped.
    """
    problems = _span_problems(spans, raw)
    lead = len(raw) - len(raw.lstrip())
    end = lead + len(raw.strip())
    if not problems:
        problems = [
            f"entity {_describe_span((s['start'], s['end'], s['entity']), raw)} reaches into "
            "the whitespace around the text, which is stripped; put the span on the words only"
            for s in spans
            if s["start"] < lead or s["end"] > end
        ]
    for problem in problems:
        errors.add(line, problem)
    if problems:
        return None
    return [{**s, "start": s["start"] - lead, "end": s["end"] - lead} for s in spans]


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
        annotations = ex.annotations
        if annotations is not None:
            annotations = _align_spans(annotations, ex.text or "", ex.line, errors)
            if annotations is None:
                continue
        key = (text, label)
        if key in seen:
            duplicates += 1
            first_dup = first_dup or ex.line
            continue
        seen.add(key)
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
