"""The OpenAPI document, completed once from what FastAPI generates (``install_openapi``).

FastAPI documents what it can see: the success answer, and request bodies it parses itself.
This module adds, once, when ``/openapi.json`` is first built:

- the error answers every operation can give, each a problem ``{"error", "message"}``
  (``Problem``): ``401``/``403``/``429`` where a caller is authenticated (a key, the operator
  token, an agent's session, a widget key, a provider's signature), ``404`` where an id is
  looked up, ``409`` on writes, ``413``/``415`` where a body is read, ``400`` where FastAPI
  parses it (bytes that are not JSON), ``422`` where a parameter or body is validated
  (replacing FastAPI's ``HTTPValidationError``, which Parley never sends);
- the request bodies of the routes that read them by hand (``READ_BY_HAND``): bot definitions
  as JSON, YAML or a multipart file, dataset files, Rasa projects, story tests, chat uploads,
  agents' images, provider webhooks;
- one readable, stable ``operationId`` per operation: the endpoint's name in camelCase
  (``create_bot`` -> ``createBot``), with the method appended where one name serves several
  operations (``webhookGet``, ``webhookPost``).

The content types an operation documents are also the ones it accepts: ``BodyLimits``
(``bot_gateway.body_limits``) answers ``415`` to others.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import compile_path

from bot_gateway.conversations.definition import BotDefinition
from bot_gateway.deps import current_agent, current_user, get_principal, require_operator
from bot_gateway.schemas import AgentMessage, DatasetCreate, ExampleIn

__all__ = [
    "PROBLEM",
    "READ_BY_HAND",
    "REMOTE_FAILED",
    "documented_methods",
    "documented_operation",
    "install_openapi",
    "operation_ids",
]

PROBLEM = "Problem"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": PROBLEM,
    "type": "object",
    "description": "An error: a stable `error` code and a `message` saying what to do next; "
    "some errors add details (`limit`, `quota`, `retry_after`, `details`, ...).",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "additionalProperties": True,
}

REMOTE_FAILED: dict[int | str, dict[str, Any]] = {
    502: {
        "description": "A remote model's server cannot be reached, timed out or failed "
        "(`remote_model_failed`; the message names the model and the server)",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{PROBLEM}"}}},
    }
}
"""The extra answer of the routes that call a model on a tenant's own server
(``POST /v1/models/remote``, predict, parse): pass as a route's ``responses``."""

ERRORS: dict[int, str] = {
    400: "The body could not be parsed (JSON that is not UTF-8 or not JSON)",
    401: "Not authenticated: a missing, wrong or revoked key, token or session",
    403: "Forbidden: the key lacks a scope, or a quota is full",
    404: "Not found (another tenant's ids are not found either)",
    409: "Conflict with the current state (a name in use, a model not ready)",
    413: "The request body is over its limit (`limit` names the setting)",
    415: "The body's content type is not one this operation reads",
    422: "Invalid input: the message names the field",
    429: "Too many requests (rate limit, quota or failed logins); see `Retry-After`",
}

AUTHENTICATORS = frozenset({get_principal, require_operator, current_agent, current_user})
"""Dependencies that authenticate a caller."""

AUTHENTICATED_BY_HAND = frozenset(
    {
        "login",  # agent's password; lockout 429
        "logout",  # the session's CSRF token (403)
        "studio_login",  # a user's password; lockout 429
        "studio_logout",  # the session's CSRF token (403)
        "accept_invite",  # the invite link's token (401, counted per address)
        "rest_webhook",  # widget or API key (bot_gateway.services.chat_access.authorize_request)
        "upload_image",
        "get_upload",
        "rasa_parse",  # Bearer or ?token=
        "webhook",  # a provider's signature (connectors verify)
    }
)
"""Endpoints that authenticate the caller themselves, without a dependency."""

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")

_BINARY = {"type": "string", "format": "binary"}


def _form(required: list[str], **fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": {"type": "object", "required": required, "properties": fields},
    }


def _text(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "description": description}}


_EXAMPLES = {"type": "array", "items": {"$ref": "#/components/schemas/ExampleIn"}}
_BOT_DEFINITION = {
    "application/json": {"schema": {"$ref": "#/components/schemas/BotDefinition"}},
    **{kind: _text("the bot definition as YAML") for kind in YAML_TYPES},
    "multipart/form-data": _form(["file"], file=_BINARY),
}

READ_BY_HAND: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/bots"): _BOT_DEFINITION,
    ("PUT", "/v1/bots/{bot_id}"): _BOT_DEFINITION,
    ("POST", "/v1/bots/import/rasa"): {
        "multipart/form-data": _form(
            ["name", "domain", "nlu"],
            name={"type": "string"},
            domain=_BINARY,
            nlu=_BINARY,
            rules=_BINARY,
            stories=_BINARY,
            endpoints=_BINARY,
        )
    },
    ("POST", "/v1/bots/{bot_id}/test"): {
        "multipart/form-data": _form(
            ["stories"], stories=_BINARY, files={"type": "array", "items": _BINARY}
        )
    },
    ("POST", "/v1/datasets"): {
        "application/json": {"schema": {"$ref": "#/components/schemas/DatasetCreate"}},
        "multipart/form-data": _form(
            ["name", "type", "file"],
            name={"type": "string"},
            type={"type": "string", "description": "e.g. text-intent, image"},
            file=_BINARY,
            format={"type": "string", "description": "csv, tsv, json, jsonl, rasa, zip"},
        ),
    },
    ("POST", "/v1/datasets/{dataset_id}/examples"): {
        "application/json": {
            "schema": {
                "anyOf": [
                    _EXAMPLES,
                    {
                        "type": "object",
                        "required": ["examples"],
                        "properties": {"examples": _EXAMPLES},
                    },
                ]
            }
        },
        "multipart/form-data": _form(["file"], file=_BINARY, format={"type": "string"}),
    },
    ("POST", "/v1/bots/{bot_id}/uploads"): {"multipart/form-data": _form(["file"], file=_BINARY)},
    ("POST", "/v1/agent/conversations/{conversation_id}/messages"): {
        "application/json": {"schema": {"$ref": "#/components/schemas/AgentMessage"}},
        "multipart/form-data": _form([], text={"type": "string"}, file=_BINARY),
    },
    ("POST", "/webhooks/{channel_id}"): {
        "*/*": {"schema": {"description": "the provider's payload, as the provider sends it"}}
    },
}
"""Request bodies of the routes that read them by hand (``(method, path)`` -> content)."""

MODELS: tuple[type[BaseModel], ...] = (BotDefinition, DatasetCreate, ExampleIn, AgentMessage)
"""Models named by ``READ_BY_HAND`` (added to ``components/schemas``)."""


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document (built once, then cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():  # one route, two methods: ids are made unique below
                warnings.filterwarnings("ignore", message="Duplicate Operation ID")
                schema = generate()
            app.openapi_schema = complete(app, schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def documented_operation(app: FastAPI, method: str, path: str) -> dict[str, Any] | None:
    """The operation that answers ``method`` at the request ``path`` (its most literal
    template), or None when no documented operation does."""
    for regex, operations in _templates(app):
        if method.lower() in operations and regex.match(path):
            return dict(operations[method.lower()])
    return None


def documented_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the documented operations answer at ``path`` (an ``Allow`` header)."""
    found: set[str] = set()
    for regex, operations in _templates(app):
        if regex.match(path):
            found |= {method.upper() for method in operations}
    return sorted(found)


def _templates(app: FastAPI) -> list[tuple[re.Pattern[str], dict[str, Any]]]:
    table = getattr(app.state, "openapi_templates", None)
    if table is None:
        paths: dict[str, Any] = app.openapi().get("paths", {})
        table = [
            (compile_path(template)[0], operations)
            for template, operations in sorted(paths.items(), key=lambda p: p[0].count("{"))
        ]
        app.state.openapi_templates = table
    return list(table)


def complete(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with error answers, hand-read bodies and readable operation ids."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[PROBLEM] = PROBLEM_SCHEMA
    _add_models(components)
    ids = operation_ids(app)
    for path, route, method in _operations(app):
        operation = schema["paths"][path][method.lower()]
        operation["operationId"] = ids[(path, method)]
        body = READ_BY_HAND.get((method, path))
        if body is not None:
            operation["requestBody"] = {"required": True, "content": body}
        responses = operation.setdefault("responses", {})
        for status in _errors(path, route, method, operation):
            responses[str(status)] = _error_response(status)
    for unused in ("HTTPValidationError", "ValidationError"):  # Parley answers 422 as a Problem
        if f'"#/components/schemas/{unused}"' not in json.dumps(schema):
            components.pop(unused, None)
    return schema


def operation_ids(app: FastAPI) -> dict[tuple[str, str], str]:
    """``(path, method)`` -> a unique, readable operationId (see the module docstring)."""
    named: dict[tuple[str, str], str] = {}
    for path, route, method in _operations(app):
        named[(path, method)] = route.operation_id or _camel(route.name)
    counts: dict[str, int] = {}
    for name in named.values():
        counts[name] = counts.get(name, 0) + 1
    ids = {key: name + key[1].title() if counts[name] > 1 else name for key, name in named.items()}
    taken: dict[str, tuple[str, str]] = {}
    for key, name in ids.items():
        if name in taken:  # the same name and method on two paths: tell them apart by path
            ids[key] = name + "".join(
                part.title() for part in re.findall(r"[a-z]+", key[0].lower()) if part != "v1"
            )
        taken[ids[key]] = key
    if len(set(ids.values())) != len(ids):
        raise RuntimeError(f"operation ids are not unique: {sorted(ids.values())}")
    return ids


# --- helpers ------------------------------------------------------------------------------------


def _operations(app: FastAPI) -> Iterator[tuple[str, APIRoute, str]]:
    """(full path, route, method) of every documented operation, through included routers
    (FastAPI keeps them as entries of their own rather than copying their routes)."""
    for entry in app.routes:
        contexts = getattr(entry, "effective_route_contexts", None)
        found = (
            [(entry.path_format, entry, entry.include_in_schema)]
            if isinstance(entry, APIRoute)
            else [
                (c.path or c.original_route.path_format, c.original_route, c.include_in_schema)
                for c in (contexts() if contexts is not None else ())
                if isinstance(c.original_route, APIRoute)
            ]
        )
        for path, route, documented in found:
            if documented:
                for method in sorted(route.methods or ()):
                    yield path, route, method


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _errors(path: str, route: APIRoute, method: str, operation: dict[str, Any]) -> list[int]:
    authenticated = route.name in AUTHENTICATED_BY_HAND or _calls(route.dependant, AUTHENTICATORS)
    has_body = "requestBody" in operation
    validated = has_body or bool(operation.get("parameters"))
    statuses = []
    if authenticated:
        statuses += [401, 403, 429]
    params = operation.get("parameters", [])
    query_ids = any(p.get("in") == "query" and p["name"].endswith("_id") for p in params)
    if "{" in path or has_body or query_ids:  # an id in the path, the body or the query
        statuses.append(404)
    if authenticated and method in ("POST", "PUT", "PATCH", "DELETE"):
        statuses.append(409)
    if route.body_field is not None:  # FastAPI parses the body: 400 when it cannot
        statuses.append(400)
    if has_body:
        statuses.append(413)
        if "*/*" not in operation["requestBody"].get("content", {}):
            statuses.append(415)
    if validated:
        statuses.append(422)
    return sorted(statuses)


def _calls(dependant: Dependant, calls: frozenset[Any]) -> bool:
    return dependant.call in calls or any(_calls(d, calls) for d in dependant.dependencies)


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{PROBLEM}"}}},
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
        }
    return response


def _add_models(components: dict[str, Any]) -> None:
    """The JSON schemas of ``MODELS`` (and the models they nest) in ``components``."""
    _, defs = models_json_schema(
        [(model, "validation") for model in MODELS], ref_template="#/components/schemas/{model}"
    )
    for name, value in defs.get("$defs", {}).items():
        if components.setdefault(name, value) != value:
            raise RuntimeError(f"two different schemas are named {name}; rename one model")
