"""Bounded documents: every YAML or JSON document a tenant sends is read within limits.

- ``load_yaml`` / ``compose_yaml`` / ``read_yaml_document`` parse YAML with ``BoundedLoader``:
  a safe loader that refuses a document over ``max_bytes`` before reading it, and while
  composing counts alias uses (``max_yaml_aliases``), values after alias expansion
  (``max_document_nodes``), text after alias expansion (``max_bytes``) and nesting depth
  (``max_document_depth``), so an alias bomb or a deeply nested document is refused before it
  is built, never expanded and never a ``RecursionError``.
- ``check_json_depth`` scans raw JSON bytes (aware of strings) and refuses a document nested
  deeper than the limit *before* ``json.loads`` or pydantic recurse into it; ``load_json``
  does that, parses, and checks the result.
- ``check_document`` bounds any parsed value (size, depth, values) and refuses what JSON
  cannot store (bytes, dates, sets, NaN) before it is stored.

Errors: ``PayloadTooLarge`` (413) for raw bytes over the limit; ``LimitExceeded`` (422) for
the other limits; ``InvalidInput`` (422) for values JSON cannot hold. Each names the document
(``details["document"]``) and the setting (``details["limit"]``). YAML syntax errors stay
``yaml.YAMLError`` so each caller reports them in its own shape (file, line).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import yaml

from core.errors import InvalidInput, LimitExceeded, PayloadTooLarge
from core.settings import LimitSettings, get_settings

__all__ = [
    "BoundedLoader",
    "DocumentLimits",
    "YamlDocument",
    "check_document",
    "check_json_depth",
    "compose_yaml",
    "document_limits",
    "load_json",
    "load_yaml",
    "read_yaml_document",
]


@dataclass(frozen=True)
class DocumentLimits:
    """How large, deep and wide one document may be; ``bytes_setting`` names the setting
    behind ``max_bytes`` in messages (bot definitions: max_json_bytes; files: max_upload_bytes)."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 32
    max_nodes: int = 200_000
    max_aliases: int = 100
    bytes_setting: str = "max_json_bytes"


def document_limits(
    limits: LimitSettings | None = None, *, bytes_setting: str = "max_json_bytes"
) -> DocumentLimits:
    """The document limits of ``limits`` (the process settings when not given); the size
    limit is the setting named by ``bytes_setting`` (``max_json_bytes`` or ``max_upload_bytes``)."""
    limits = limits or get_settings().limits
    return DocumentLimits(
        max_bytes=int(getattr(limits, bytes_setting)),
        max_depth=limits.max_document_depth,
        max_nodes=limits.max_document_nodes,
        max_aliases=limits.max_yaml_aliases,
        bytes_setting=bytes_setting,
    )


def _env(setting: str) -> str:
    return f"PARLEY_LIMITS__{setting.upper()}"


def _too_deep(what: str, max_depth: int, at: str = "") -> LimitExceeded:
    where = f" at {at}" if at else ""
    return LimitExceeded(
        f"{what} is nested more than {max_depth} levels deep{where} "
        f"({_env('max_document_depth')}); flatten it",
        limit="max_document_depth",
        document=what,
    )


def _too_many_nodes(what: str, max_nodes: int) -> LimitExceeded:
    return LimitExceeded(
        f"{what} holds more than {max_nodes} values, aliases counted each time they are used "
        f"({_env('max_document_nodes')}); split it or drop the aliases",
        limit="max_document_nodes",
        document=what,
    )


def _expands_too_far(what: str, limits: DocumentLimits) -> LimitExceeded:
    return LimitExceeded(
        f"{what} expands to more than {limits.max_bytes} bytes of text, aliases counted each "
        f"time they are used ({_env(limits.bytes_setting)}); write it without aliases",
        limit=limits.bytes_setting,
        document=what,
    )


def _check_size(size: int, what: str, limits: DocumentLimits) -> None:
    if size > limits.max_bytes:
        raise PayloadTooLarge(
            f"{what} is {size} bytes, over the limit of {limits.max_bytes} "
            f"({_env(limits.bytes_setting)}); send a smaller document",
            limit=limits.bytes_setting,
            document=what,
        )


# --- YAML -----------------------------------------------------------------------------------


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses, while composing, a document whose alias uses, values
    or text after expansion, or nesting depth pass ``limits``. Subclass it to change resolvers
    (as the Rasa import does) and pass the subclass to the functions below."""

    def __init__(self, stream: str, *, limits: DocumentLimits, what: str) -> None:
        super().__init__(stream)
        self.limits = limits
        self.what = what
        self._depth = 0
        self._nodes = 0
        self._chars = 0
        self._aliases = 0
        self._open: list[str | None] = []  # anchors of the collections being composed
        self._measured: dict[int, tuple[int, int, int]] = {}  # id(node) -> nodes, height, chars

    # ``anchor`` below is the anchor's name (str | None); it is typed Any because types-PyYAML
    # declares it as a dict of nodes.

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._use_alias(self.peek_event())
        else:
            self._count(nodes=1)
        return super().compose_node(parent, index)

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        node = super().compose_scalar_node(anchor)
        self._count(chars=len(node.value))
        return node

    def compose_sequence_node(self, anchor: Any) -> yaml.SequenceNode:
        self._enter(anchor)
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self._leave()

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        self._enter(anchor)
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self._leave()

    def _enter(self, anchor: str | None) -> None:
        self._depth += 1
        if self._depth > self.limits.max_depth:
            raise _too_deep(self.what, self.limits.max_depth, self._line())
        self._open.append(anchor)

    def _leave(self) -> None:
        self._depth -= 1
        self._open.pop()

    def _line(self) -> str:
        mark = self.peek_event().start_mark if self.check_event() else None
        return f"line {mark.line + 1}" if mark is not None else ""

    def _count(self, *, nodes: int = 0, chars: int = 0) -> None:
        self._nodes += nodes
        self._chars += chars
        if self._nodes > self.limits.max_nodes:
            raise _too_many_nodes(self.what, self.limits.max_nodes)
        if self._chars > self.limits.max_bytes:
            raise _expands_too_far(self.what, self.limits)

    def _use_alias(self, event: yaml.AliasEvent) -> None:
        self._aliases += 1
        if self._aliases > self.limits.max_aliases:
            raise LimitExceeded(
                f"{self.what} uses YAML aliases (*name) more than {self.limits.max_aliases} "
                f"times ({_env('max_yaml_aliases')}); write the repeated parts out",
                limit="max_yaml_aliases",
                document=self.what,
            )
        mark = event.start_mark  # the parser always sets it; the stubs allow None
        line = mark.line + 1 if mark is not None else "?"
        if event.anchor in self._open:
            raise InvalidInput(
                f"{self.what} has an alias *{event.anchor} inside its own anchor (line "
                f"{line}): a document cannot contain itself",
                document=self.what,
            )
        target = self.anchors.get(event.anchor)
        if target is None:
            return  # the composer reports the undefined alias with its line
        nodes, height, chars = self._measure(target)
        if self._depth + height > self.limits.max_depth:
            at = f"line {line}, alias *{event.anchor}"
            raise _too_deep(self.what, self.limits.max_depth, at)
        self._count(nodes=nodes, chars=chars)

    def _measure(self, root: yaml.Node) -> tuple[int, int, int]:
        """Values, collection height and text of a finished node with its aliases expanded
        (each shared node measured once)."""
        measured = self._measured
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            if id(node) in measured:
                continue
            children = _children(node)
            if not children_done:
                stack.append((node, True))
                stack.extend((c, False) for c in children if id(c) not in measured)
                continue
            nodes, height = 1, 0
            chars = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            for child in children:
                n, h, c = measured[id(child)]
                nodes, height, chars = nodes + n, max(height, h), chars + c
            if not isinstance(node, yaml.ScalarNode):
                height += 1
            measured[id(node)] = (nodes, height, chars)
        return measured[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


@dataclass(frozen=True)
class YamlDocument:
    """A YAML document's node tree (for lines) and its plain data."""

    root: yaml.Node | None
    data: Any


def _loader(
    text: str, what: str, limits: DocumentLimits | None, loader: type[BoundedLoader]
) -> BoundedLoader:
    limits = limits or document_limits()
    _check_size(len(text.encode("utf-8", "surrogatepass")), what, limits)
    return loader(text, limits=limits, what=what)


def compose_yaml(
    text: str,
    *,
    what: str,
    limits: DocumentLimits | None = None,
    loader: type[BoundedLoader] = BoundedLoader,
) -> yaml.Node | None:
    """The node tree of one YAML document, within ``limits`` (the settings' when not given).
    Bad syntax raises ``yaml.YAMLError``."""
    bounded = _loader(text, what, limits, loader)
    try:
        return bounded.get_single_node()
    finally:
        bounded.dispose()


def read_yaml_document(
    text: str,
    *,
    what: str,
    limits: DocumentLimits | None = None,
    loader: type[BoundedLoader] = BoundedLoader,
) -> YamlDocument:
    """One YAML document as nodes and plain data, within ``limits``; the data is checked by
    ``check_document`` too. Bad syntax raises ``yaml.YAMLError``."""
    bounded = _loader(text, what, limits, loader)
    try:
        root = bounded.get_single_node()
        try:
            data = bounded.construct_document(root) if root is not None else None
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise InvalidInput(f"{what} holds a value that cannot be read: {e}") from e
    finally:
        bounded.dispose()
    check_document(data, what=what, limits=bounded.limits)
    return YamlDocument(root, data)


def load_yaml(
    text: str,
    *,
    what: str,
    limits: DocumentLimits | None = None,
    loader: type[BoundedLoader] = BoundedLoader,
) -> Any:
    """One YAML (or JSON) document as plain data, within ``limits``."""
    return read_yaml_document(text, what=what, limits=limits, loader=loader).data


# --- JSON -----------------------------------------------------------------------------------

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEP = [0] * 256
for _open in b"[{":
    _STEP[_open] = 1
for _close in b"]}":
    _STEP[_close] = -1


def check_json_depth(raw: bytes | str, max_depth: int, *, what: str = "the JSON document") -> None:
    """Refuse JSON nested deeper than ``max_depth`` arrays/objects, reading only the bytes
    (brackets inside strings do not count), so nothing recurses into it. Malformed JSON is left
    for the parser to report."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    encoding = json.detect_encoding(raw)
    if encoding not in ("utf-8", "utf-8-sig"):  # UTF-16/32: scan it as UTF-8
        raw = raw.decode(encoding, "replace").encode("utf-8")
    outside = _JSON_STRING.sub(b"", raw)
    quote = outside.find(b'"')
    if quote >= 0:  # an unterminated string: the parser stops there
        outside = outside[:quote]
    brackets = outside.translate(None, _NOT_BRACKETS)
    if len(brackets) <= max_depth:
        return
    if max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > max_depth:
        raise _too_deep(what, max_depth)


def load_json(raw: bytes | str, *, what: str, limits: DocumentLimits | None = None) -> Any:
    """A JSON document within ``limits`` (size, depth before parsing, values after).
    Malformed JSON raises ``json.JSONDecodeError`` for the caller to report."""
    limits = limits or document_limits()
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    _check_size(len(data), what, limits)
    check_json_depth(data, limits.max_depth, what=what)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise InvalidInput(f"{what} holds a value that cannot be read: {e}") from e
    check_document(value, what=what, limits=limits)
    return value


# --- any parsed value ------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))


def check_document(obj: Any, *, what: str, limits: DocumentLimits | None = None) -> None:
    """Refuse a parsed JSON/YAML value that is too large (text), too deep, has too many values
    (shared parts counted each time they appear), or holds what JSON cannot store (bytes,
    dates, sets, NaN); the message names the path of the first offending value."""
    limits = limits or document_limits()
    nodes = size = 0
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(obj, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise _too_many_nodes(what, limits.max_nodes)
        if isinstance(value, dict):
            if depth + 1 > limits.max_depth:
                raise _too_deep(what, limits.max_depth, _show(path))
            for key, item in value.items():
                if not isinstance(key, _SCALARS):
                    raise _not_json(what, path, key, "a key")
                size += len(key) if isinstance(key, str) else 8
                if isinstance(key, str) and "\x00" in key:
                    raise _nul(what, path)
                nodes += 1
                stack.append((item, depth + 1, (*path, str(key))))
        elif isinstance(value, list | tuple):
            if depth + 1 > limits.max_depth:
                raise _too_deep(what, limits.max_depth, _show(path))
            stack.extend((item, depth + 1, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, str):
            size += len(value)
            if "\x00" in value:
                raise _nul(what, path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _not_json(what, path, value, "a value")
        elif isinstance(value, _SCALARS):
            size += 8
        else:
            raise _not_json(what, path, value, "a value")
        if size > limits.max_bytes:
            raise _expands_too_far(what, limits)


def _show(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top)"


def _nul(what: str, path: tuple[str | int, ...]) -> InvalidInput:
    return InvalidInput(
        f"{what} has a NUL character (\\u0000) at {_show(path)}; no text in Parley may hold "
        "one (databases cannot store it): remove it",
        document=what,
        field=_show(path),
    )


_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.I)


def check_json_nul(raw: bytes, *, what: str = "the JSON document") -> None:
    """Refuse JSON whose text holds an escaped NUL character (``\\u0000``), before parsing."""
    found = _ESCAPED_NUL.search(raw)
    if found is not None:
        raise InvalidInput(
            f"{what} has a NUL character (\\u0000) at byte {found.end() - 6}; no text in "
            "Parley may hold one (databases cannot store it): remove it",
            document=what,
        )


def _not_json(what: str, path: tuple[str | int, ...], value: Any, role: str) -> InvalidInput:
    kind = type(value).__name__
    shown = "NaN or infinity" if isinstance(value, float) else f"of type {kind}"
    return InvalidInput(
        f"{what} has {role} {shown} at {_show(path)}, which JSON cannot hold; write it as "
        "text (quote it in YAML) or as a number",
        document=what,
        field=_show(path),
    )
