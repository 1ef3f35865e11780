"""The OpenAPI document says what the API does (issue 12, finding 9): error answers, hand-read
bodies, one readable operationId per operation; ``Allow`` on 405; ``415`` for a body of a
content type the operation does not read."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.bot_gateway.conftest import Api

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture(scope="module")
def schema(api: Api) -> dict[str, Any]:
    r = api.client.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
    ]


def test_one_readable_operation_id_per_operation(schema: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert all(re.fullmatch(r"[a-z][A-Za-z]*", i) for i in ids), ids
    by_route = {(m, p): op["operationId"] for m, p, op in operations(schema)}
    assert by_route[("POST", "/v1/bots")] == "createBot"
    assert by_route[("POST", "/v1/models/{model_id}/predict")] == "predict"
    # one endpoint serving two methods: one id each
    assert by_route[("GET", "/webhooks/{channel_id}")] == "webhookGet"
    assert by_route[("POST", "/webhooks/{channel_id}")] == "webhookPost"


def test_errors_are_documented_as_problems(schema: dict[str, Any]) -> None:
    assert set(schema["components"]["schemas"]["Problem"]["required"]) == {"error", "message"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for method, path, op in operations(schema):
        responses = op["responses"]
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == PROBLEM_REF, (
                    method,
                    path,
                    status,
                )
        if path != "/v1/health" and path != "/v1/agent/logout":
            assert {"401", "403", "429"} <= set(responses), (method, path, sorted(responses))
        if "requestBody" in op:
            assert {"413", "422"} <= set(responses), (method, path)
        if "{" in path:
            assert {"404", "422"} <= set(responses), (method, path)
    health = schema["paths"]["/v1/health"]["get"]["responses"]
    assert set(health) == {"200"}  # public, takes nothing: no error to document
    assert "415" in schema["paths"]["/v1/keys"]["post"]["responses"]
    assert "409" in schema["paths"]["/v1/bots"]["post"]["responses"]
    assert "Retry-After" in schema["paths"]["/v1/keys"]["get"]["responses"]["429"]["headers"]


@pytest.mark.parametrize(
    ("method", "path", "kinds"),
    [
        ("POST", "/v1/bots", {"application/json", "application/yaml", "text/yaml", "text/plain"}),
        ("PUT", "/v1/bots/{bot_id}", {"application/yaml", "multipart/form-data"}),
        ("POST", "/v1/bots/import/rasa", {"multipart/form-data"}),
        ("POST", "/v1/bots/{bot_id}/test", {"multipart/form-data"}),
        ("POST", "/v1/datasets", {"application/json", "multipart/form-data"}),
        ("POST", "/v1/datasets/{dataset_id}/examples", {"multipart/form-data"}),
        ("POST", "/v1/bots/{bot_id}/uploads", {"multipart/form-data"}),
        ("POST", "/v1/models/{model_id}/predict", {"multipart/form-data"}),
        ("POST", "/v1/ocr", {"application/json", "multipart/form-data"}),
    ],
)
def test_bodies_read_by_hand_are_documented(
    schema: dict[str, Any], method: str, path: str, kinds: set[str]
) -> None:
    content = schema["paths"][path][method.lower()]["requestBody"]["content"]
    assert kinds <= set(content), sorted(content)
    if "multipart/form-data" in content:
        form = content["multipart/form-data"]["schema"]
        assert any(
            p.get("format") == "binary" or p.get("items", {}).get("format") == "binary"
            for p in form["properties"].values()
        )
    if "application/json" in content and path.startswith("/v1/bots"):
        assert content["application/json"]["schema"] == {
            "$ref": "#/components/schemas/BotDefinition"
        }
        assert "BotDefinition" in schema["components"]["schemas"]


def test_a_body_of_a_content_type_the_route_does_not_read_is_415(api: Api) -> None:
    r = api.client.post(
        "/v1/keys",
        content='{"scopes": ["predict"]}',
        headers={**api.a, "Content-Type": "text/plain"},
    )
    assert r.status_code == 415, r.text
    body = r.json()
    assert body["error"] == "unsupported_media_type"
    assert body["accepted"] == ["application/json"]
    assert "text/plain" in body["message"]
    # before authentication, as the body cap
    r = api.client.post(
        "/v1/agent/login",
        content="tenant=a&username=b&password=c",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415, r.text
    # what the route documents it reads, it reads
    r = api.client.post(
        "/v1/keys",
        content='{"scopes": ["predict"]}',
        headers={**api.a, "Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201, r.text
    r = api.client.post("/v1/keys", json={"scopes": ["predict"]}, headers=api.a)
    assert r.status_code == 201, r.text
    yaml_bot = "name: plain-yaml\nresponses:\n  utter_hi:\n    - text: Hi!\n"
    r = api.client.post(
        "/v1/bots", content=yaml_bot, headers={**api.a, "Content-Type": "text/plain"}
    )
    assert r.status_code == 201, r.text
    r = api.client.post(
        "/v1/bots",
        content=yaml_bot.replace("plain-yaml", "x"),
        headers={**api.a, "Content-Type": "image/png"},
    )
    assert r.status_code == 415, r.text


def test_405_says_which_methods_are_allowed(api: Api) -> None:
    r = api.client.delete("/v1/keys", headers=api.a)
    assert r.status_code == 405, r.text
    assert r.headers["Allow"] == "GET, POST"
    assert r.json()["error"] == "method_not_allowed"
    r = api.client.put("/v1/health")
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET"
    r = api.client.post("/v1/bots/b_nope", headers=api.a)
    assert r.status_code == 405
    assert r.headers["Allow"] == "DELETE, GET, PATCH, PUT"
