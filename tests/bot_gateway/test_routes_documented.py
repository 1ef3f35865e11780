"""Every JSON route says what it answers (a pydantic ``response_model``), so ``/docs`` and
``/openapi.json`` show it; routes that answer something else (files, HTML, text, 204) say so
with their ``response_class``. The agents' console routes are in the document."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from bot_gateway.app import create_app
from tests.conftest import make_settings

NOT_JSON_BY_DESIGN = {
    ("GET", "/webhooks/{channel_id}"): "a provider's verification handshake (plain text)",
    ("POST", "/webhooks/{channel_id}"): "each provider's own acknowledgement",
}
"""JSON routes allowed without a response model, and why. Keep this list short."""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    tmp = tmp_path_factory.mktemp("routes")
    settings = make_settings(tmp, f"sqlite:///{tmp / 'parley.db'}")
    return create_app(settings, warm_encoder=False)  # no lifespan: routes and schema only


def routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) of every HTTP route, through included routers."""
    for entry in app.routes:
        if isinstance(entry, APIRoute):
            yield entry.path_format, entry
        contexts = getattr(entry, "effective_route_contexts", None)
        for context in contexts() if contexts is not None else ():
            if isinstance(context.original_route, APIRoute):
                yield context.path or context.original_route.path_format, context.original_route


def is_model(annotation: Any) -> bool:
    """A pydantic model, or a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) is list and len(args) == 1 and is_model(args[0])


def response_class(route: APIRoute) -> type:
    found = route.response_class
    return getattr(found, "value", found)  # FastAPI wraps the default in a placeholder


def test_every_json_route_declares_a_response_model(app: FastAPI) -> None:
    undocumented = []
    for path, route in routes(app):
        json_answer = issubclass(response_class(route), JSONResponse)
        for method in sorted(route.methods):
            documented = not json_answer or is_model(route.response_model)
            if not documented and (method, path) not in NOT_JSON_BY_DESIGN:
                undocumented.append(f"{method} {path} ({route.name}): {route.response_model}")
    assert not undocumented, (
        "these routes answer JSON without a pydantic response_model (add one in "
        "bot_gateway/schemas.py, or a response_class for non-JSON answers):\n"
        + "\n".join(undocumented)
    )


def test_the_allowed_exceptions_exist(app: FastAPI) -> None:
    """An exception for a route that is gone, or now documented, is stale."""
    present = {(method, path): route for path, route in routes(app) for method in route.methods}
    for key in NOT_JSON_BY_DESIGN:
        assert key in present, f"{key} is no route any more: remove it from NOT_JSON_BY_DESIGN"
        assert not is_model(present[key].response_model), f"{key} is documented now: remove it"


def test_a_route_without_a_model_is_caught() -> None:
    """The walk sees routes of included routers (the check above can fail)."""
    from fastapi import APIRouter

    router = APIRouter(prefix="/things")

    @router.get("")
    def things() -> dict[str, Any]:
        return {}

    app = FastAPI()
    app.include_router(router, prefix="/v1")
    found = {path: route for path, route in routes(app)}
    assert "/v1/things" in found
    assert not is_model(found["/v1/things"].response_model)  # dict[str, Any] is no model


AGENT_OPERATIONS = [
    ("post", "/v1/agent/login", "AgentSessionPublic"),
    ("get", "/v1/agent/me", "AgentSessionPublic"),
    ("get", "/v1/agent/inbox", "AgentInbox"),
    ("get", "/v1/agent/conversations/{conversation_id}", "AgentConversation"),
    ("post", "/v1/agent/conversations/{conversation_id}/claim", "AgentInboxItem"),
    ("post", "/v1/agent/conversations/{conversation_id}/messages", "AgentMessageSent"),
    ("post", "/v1/agent/conversations/{conversation_id}/notes", "AgentNoteAdded"),
    ("post", "/v1/agent/conversations/{conversation_id}/handback", "AgentInboxItem"),
    ("post", "/v1/agent/conversations/{conversation_id}/close", "AgentInboxItem"),
    ("post", "/v1/agent/conversations/{conversation_id}/assign", "AgentInboxItem"),
]


def _success_schema(operation: dict[str, Any]) -> dict[str, Any]:
    answer = operation["responses"]["200"]["content"]["application/json"]
    return dict(answer["schema"])


@pytest.mark.parametrize(("method", "path", "model"), AGENT_OPERATIONS)
def test_agents_routes_are_in_the_openapi_document(
    app: FastAPI, method: str, path: str, model: str
) -> None:
    schema = app.openapi()
    operation = schema["paths"][path][method]
    assert _success_schema(operation) == {"$ref": f"#/components/schemas/{model}"}
    assert model in schema["components"]["schemas"]


def test_agents_schemas_name_their_fields(app: FastAPI) -> None:
    components = app.openapi()["components"]["schemas"]
    assert set(components["AgentInbox"]["properties"]) == {"waiting", "mine", "others"}
    turn = components["AgentTurn"]["properties"]
    assert {"id", "timestamp", "from", "text", "attachments", "agent_name"} <= set(turn)
    listed = _success_schema(app.openapi()["paths"]["/v1/agent/agents"]["get"])
    assert listed["type"] == "array"
    assert listed["items"] == {"$ref": "#/components/schemas/AgentLoad"}


def test_the_document_is_served(app: FastAPI, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(app)  # not entered: no lifespan, /openapi.json needs none
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert "/v1/agent/inbox" in r.json()["paths"]
