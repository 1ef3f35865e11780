"""The committed OpenAPI snapshot (``docs/openapi.json``) and how the live API differs from it.

The snapshot is the API clients were promised. ``tests/bot_gateway/test_api_snapshot.py``
fails when the document the gateway serves differs from it, and lists each difference,
marked *breaking* or *additive* under the compatibility policy in the README:

- **breaking** (never within ``/v1``): an operation removed; a parameter, request field or
  media type a client could send removed; a new required parameter or request field; a field,
  status code or media type of an answer removed; a type changed; an enum value removed;
- **additive** (allowed within ``/v1``): a new operation, an optional parameter or request
  field, a new answer field or status code, a new enum value, descriptions and examples.

Update it with ``parley openapi --write`` and say what changed for clients in
``CHANGELOG.md``.

A schema is judged by where it is used: reachable from a request (parameters, request
bodies) its new required fields are breaking; reachable from an answer, its removed fields are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SNAPSHOT", "Change", "compare", "current_document", "dumps", "load_snapshot"]

SNAPSHOT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
REF = "#/components/schemas/"

Doc = dict[str, Any]


@dataclass(frozen=True, order=True)
class Change:
    """One difference between the snapshot and the live document."""

    breaking: bool
    where: str  # "POST /v1/models/remote", "schema ModelPublic"
    what: str  # "added", "field 'remote' added to the answer", ...

    def __str__(self) -> str:
        return f"{'BREAKING' if self.breaking else 'additive'}: {self.where}: {self.what}"


def current_document() -> Doc:
    """The OpenAPI document of a gateway with the default settings (nothing is started)."""
    from bot_gateway.app import create_app
    from core.settings import Settings

    app = create_app(Settings(_env_file=None), warm_encoder=False)
    return json.loads(json.dumps(app.openapi()))  # plain JSON types, as the file holds


def dumps(doc: Doc) -> str:
    """The snapshot's text: sorted keys, two-space indent, a final newline (stable diffs)."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def load_snapshot(path: Path = SNAPSHOT) -> Doc:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def compare(old: Doc, new: Doc) -> list[Change]:
    """Every difference a client could notice, breaking first."""
    changes = list(_operations(old, new))
    old_use, new_use = _usage(old), _usage(new)
    old_schemas = old.get("components", {}).get("schemas", {})
    new_schemas = new.get("components", {}).get("schemas", {})
    for name in sorted(old_schemas.keys() - new_schemas.keys()):
        changes.append(Change(bool(old_use.get(name)), f"schema {name}", "removed"))
    for name in sorted(new_schemas.keys() - old_schemas.keys()):
        changes.append(Change(False, f"schema {name}", "added"))
    for name in sorted(old_schemas.keys() & new_schemas.keys()):
        uses = old_use.get(name, set()) | new_use.get(name, set())
        changes += _schema(f"schema {name}", old_schemas[name], new_schemas[name], uses)
    return sorted(changes, key=lambda c: (not c.breaking, c.where, c.what))


def _ops(doc: Doc) -> dict[str, Doc]:
    return {
        f"{method.upper()} {path}": op
        for path, item in doc.get("paths", {}).items()
        for method, op in item.items()
        if method in METHODS
    }


def _operations(old: Doc, new: Doc) -> Iterator[Change]:
    before, after = _ops(old), _ops(new)
    for key in sorted(before.keys() - after.keys()):
        yield Change(True, key, "operation removed")
    for key in sorted(after.keys() - before.keys()):
        yield Change(False, key, "operation added")
    for key in sorted(before.keys() & after.keys()):
        yield from _operation(key, before[key], after[key])


def _params(op: Doc) -> dict[tuple[str, str], Doc]:
    return {(p.get("in", ""), p.get("name", "")): p for p in op.get("parameters", [])}


def _operation(key: str, old: Doc, new: Doc) -> Iterator[Change]:
    if old.get("operationId") != new.get("operationId"):
        yield Change(True, key, f"operationId {old.get('operationId')} -> {new.get('operationId')}")
    before, after = _params(old), _params(new)
    for where, name in sorted(before.keys() - after.keys()):
        yield Change(True, key, f"{where} parameter {name!r} removed")
    for where, name in sorted(after.keys() - before.keys()):
        required = bool(after[(where, name)].get("required"))
        yield Change(required, key, f"{where} parameter {name!r} added{_req(required)}")
    for pk in sorted(before.keys() & after.keys()):
        was, now = before[pk].get("required", False), after[pk].get("required", False)
        if now and not was:
            yield Change(True, key, f"{pk[0]} parameter {pk[1]!r} became required")
        yield from _schema(
            f"{key} {pk[0]} parameter {pk[1]!r}",
            before[pk].get("schema", {}),
            after[pk].get("schema", {}),
            {"request"},
        )
    yield from _request_body(key, old.get("requestBody"), new.get("requestBody"))
    old_res, new_res = old.get("responses", {}), new.get("responses", {})
    for status in sorted(old_res.keys() - new_res.keys()):
        yield Change(int(status) < 400, key, f"answer {status} removed")
    for status in sorted(new_res.keys() - old_res.keys()):
        yield Change(False, key, f"answer {status} added")
    for status in sorted(old_res.keys() & new_res.keys()):
        yield from _content(
            f"{key} answer {status}",
            old_res[status].get("content", {}),
            new_res[status].get("content", {}),
            "response",
        )


def _request_body(key: str, old: Doc | None, new: Doc | None) -> Iterator[Change]:
    if old is None and new is None:
        return
    if old is None:
        required = bool((new or {}).get("required"))
        yield Change(required, key, f"request body added{_req(required)}")
        return
    if new is None:
        yield Change(True, key, "request body removed")
        return
    if new.get("required") and not old.get("required"):
        yield Change(True, key, "request body became required")
    yield from _content(f"{key} request", old.get("content", {}), new.get("content", {}), "request")


def _content(where: str, old: Doc, new: Doc, use: str) -> Iterator[Change]:
    for media in sorted(old.keys() - new.keys()):
        yield Change(True, where, f"media type {media} removed")
    for media in sorted(new.keys() - old.keys()):
        yield Change(False, where, f"media type {media} added")
    for media in sorted(old.keys() & new.keys()):
        yield from _schema(
            f"{where} {media}", old[media].get("schema", {}), new[media].get("schema", {}), {use}
        )


def _req(required: bool) -> str:
    return " (required)" if required else ""


def _schema(where: str, old: Doc, new: Doc, uses: set[str]) -> list[Change]:
    """What changed in one schema (not following ``$ref``s: each named schema is compared
    once, by name)."""
    request, response = "request" in uses, "response" in uses
    out: list[Change] = []
    if old.get("$ref") != new.get("$ref"):
        out.append(Change(True, where, f"schema {_name(old)} -> {_name(new)}"))
        return out
    if _types(old) != _types(new):
        out.append(Change(True, where, f"type {_types(old)} -> {_types(new)}"))
    old_enum, new_enum = old.get("enum"), new.get("enum")
    if old_enum is not None or new_enum is not None:
        gone = [v for v in old_enum or [] if v not in (new_enum or [])]
        added = [v for v in new_enum or [] if v not in (old_enum or [])]
        if new_enum is not None and old_enum is None:
            out.append(Change(True, where, f"values restricted to {new_enum}"))
        elif gone:
            out.append(Change(True, where, f"enum values {gone} removed"))
        if added and old_enum is not None:
            out.append(Change(False, where, f"enum values {added} added"))
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
    for field in sorted(old_props.keys() - new_props.keys()):
        out.append(Change(True, where, f"field {field!r} removed"))
    for field in sorted(new_props.keys() - old_props.keys()):
        required = field in new_req
        out.append(Change(required and request, where, f"field {field!r} added{_req(required)}"))
    for field in sorted(old_props.keys() & new_props.keys()):
        if field in new_req and field not in old_req and request:
            out.append(Change(True, where, f"field {field!r} became required"))
        if field in old_req and field not in new_req and response:
            out.append(Change(True, where, f"field {field!r} may now be missing in answers"))
        out += _schema(f"{where}.{field}", old_props[field], new_props[field], uses)
    for combiner in ("anyOf", "oneOf", "allOf"):
        if old.get(combiner) != new.get(combiner):
            old_alts = [_name(s) for s in old.get(combiner, [])]
            new_alts = [_name(s) for s in new.get(combiner, [])]
            gone = [a for a in old_alts if a not in new_alts]
            if gone and request:
                out.append(Change(True, where, f"{combiner} alternatives {gone} removed"))
            added = [a for a in new_alts if a not in old_alts]
            if added and response and old_alts:
                out.append(Change(True, where, f"{combiner} alternatives {added} added"))
            if not gone and not added and old_alts != new_alts:
                out.append(Change(False, where, f"{combiner} alternatives reordered"))
    for part in ("items", "additionalProperties"):
        if isinstance(old.get(part), dict) and isinstance(new.get(part), dict):
            out += _schema(f"{where}[{part}]", old[part], new[part], uses)
    return out


def _name(schema: Doc) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.removeprefix(REF)
    return str(schema.get("type", schema.get("const", "?")))


def _types(schema: Doc) -> str | None:
    kind = schema.get("type")
    return None if kind is None else str(kind)


def _usage(doc: Doc) -> dict[str, set[str]]:
    """Per named schema, whether requests (``request``) or answers (``response``) reach it."""
    schemas = doc.get("components", {}).get("schemas", {})
    uses: dict[str, set[str]] = {}

    def walk(node: Any, use: str) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(REF):
                name = ref.removeprefix(REF)
                if use not in uses.setdefault(name, set()):
                    uses[name].add(use)
                    walk(schemas.get(name, {}), use)
            for value in node.values():
                walk(value, use)
        elif isinstance(node, list):
            for value in node:
                walk(value, use)

    for op in _ops(doc).values():
        walk(op.get("parameters", []), "request")
        walk(op.get("requestBody", {}), "request")
        walk(op.get("responses", {}), "response")
    return uses
