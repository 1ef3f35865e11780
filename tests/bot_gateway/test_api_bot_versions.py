"""A bot's versions one at a time and as a diff, and a definition checked without saving it
(``POST /v1/bots/validate``): problems at their paths, the paths ``PUT``'s 422 gives too;
another tenant's bot is not found. Bots without flows need no NLU, so nothing trains here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.bot_gateway.conftest import Api, running_api


@pytest.fixture(scope="module", params=[pytest.param("sqlite", id="sqlite")])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("versions"), warm_encoder=False) as api:
        yield api


def greeter(text: str = "Hello!") -> dict[str, Any]:
    return {"name": "greeter", "responses": {"utter_hi": [{"text": text}]}}


BROKEN = {
    "name": "broken",
    "nlu": {"model": "no-such-alias"},
    "slots": {"order_id": {"type": "text"}},
    "responses": {"utter_ok": [{"text": "ok"}]},
    "flows": {
        "order": {
            "steps": [
                {"ask": "order_id"},
                {"reply": "utter_ok"},
                {"if": [{"slot": "order_number", "equals": 1, "then": []}]},
            ]
        }
    },
}


@pytest.fixture(scope="module")
def bot(api: Api) -> dict[str, Any]:
    """Tenant A's bot with two versions (the second says "Hi there!")."""
    r = api.client.post("/v1/bots", json=greeter(), headers=api.a)
    assert r.status_code == 201, r.text
    bot_id = r.json()["id"]
    r = api.client.put(f"/v1/bots/{bot_id}", json=greeter("Hi there!"), headers=api.a)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    return dict(r.json())


def test_one_version_and_the_diff_of_two(api: Api, bot: dict[str, Any]) -> None:
    bot_id = bot["id"]
    r = api.client.get(f"/v1/bots/{bot_id}/versions/1", headers=api.a)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["definition"] == greeter()
    r = api.client.get(f"/v1/bots/{bot_id}/diff", params={"from": 1, "to": 2}, headers=api.a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["from"], body["to"]) == (1, 2)
    lines = body["diff"].splitlines()
    assert lines[:2] == ["--- version 1", "+++ version 2"]
    assert "-  - text: Hello!" in lines and "+  - text: Hi there!" in lines
    assert "   utter_hi:" in lines  # context, unchanged
    same = api.client.get(f"/v1/bots/{bot_id}/diff?from=2&to=2", headers=api.a).json()
    assert same["diff"] == ""
    back = api.client.get(f"/v1/bots/{bot_id}/diff?from=2&to=1", headers=api.a).json()
    assert "+  - text: Hello!" in back["diff"].splitlines()
    latest = api.client.get(f"/v1/bots/{bot_id}/diff", headers=api.a).json()  # the last change
    assert (latest["from"], latest["to"]) == (1, 2) and latest["diff"] == body["diff"]
    first = api.client.get(f"/v1/bots/{bot_id}/diff?to=1", headers=api.a).json()
    assert (first["from"], first["to"], first["diff"]) == (1, 1, "")


def test_missing_versions_bad_numbers_and_other_tenants(api: Api, bot: dict[str, Any]) -> None:
    bot_id = bot["id"]
    r = api.client.get(f"/v1/bots/{bot_id}/versions/7", headers=api.a)
    assert r.status_code == 404 and "versions are 1 to 2" in r.json()["message"]
    r = api.client.get(f"/v1/bots/{bot_id}/diff?from=1&to=9", headers=api.a)
    assert r.status_code == 404
    for bad in ("/versions/one", "/diff?from=x&to=2", "/diff?from=-1&to=2"):
        r = api.client.get(f"/v1/bots/{bot_id}{bad}", headers=api.a)
        assert r.status_code == 422, (bad, r.text)
    for path in ("/versions/1", "/diff?from=1&to=2", "/diff"):
        assert api.client.get(f"/v1/bots/{bot_id}{path}", headers=api.b).status_code == 404
    assert api.client.get("/v1/bots/bot_nope/versions/1", headers=api.a).status_code == 404


def test_validate_reports_every_problem_at_its_path(api: Api) -> None:
    r = api.client.post("/v1/bots/validate", json={"definition": BROKEN}, headers=api.a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is False
    assert {
        "path": "flows.order.steps[2].if[0].slot",
        "message": 'unknown slot "order_number"',
    } in (body["errors"])
    # once the definition is whole, the tenant's references: no such model or alias here
    flows = {"hi": {"steps": [{"reply": "utter_hi"}]}}
    elsewhere = {**greeter(), "nlu": {"model": "no-such-alias"}, "flows": flows}
    r = api.client.post("/v1/bots/validate", json={"definition": elsewhere}, headers=api.a)
    assert [e["path"] for e in r.json()["errors"]] == ["nlu.model"]
    # a missing key of a step and an unknown field: pydantic's problems at their paths
    wrong = {**greeter(), "flows": {"f": {"steps": [{"if": []}]}}, "colour": "red"}
    errors = api.client.post("/v1/bots/validate", json={"definition": wrong}, headers=api.a).json()[
        "errors"
    ]
    paths = {e["path"] for e in errors}
    assert "flows.f.steps[0].if" in paths and "colour" in paths
    # nothing was saved
    assert [b["name"] for b in api.client.get("/v1/bots", headers=api.a).json()] in (
        [],
        ["greeter"],
    )


def test_validate_takes_yaml_text_and_says_valid(api: Api) -> None:
    text = yaml.safe_dump(greeter())
    r = api.client.post("/v1/bots/validate", json={"definition": text}, headers=api.a)
    assert r.json() == {"valid": True, "errors": []}
    r = api.client.post("/v1/bots/validate", json={"definition": "name: [oops"}, headers=api.a)
    [problem] = r.json()["errors"]
    assert problem["path"] == "(top)" and "invalid YAML" in problem["message"]
    assert "line 1" in problem["message"]
    r = api.client.post("/v1/bots/validate", json={"definition": "- a list"}, headers=api.a)
    assert r.json()["errors"][0]["path"] == "(top)"
    for body in ({}, {"definition": 3}, {"definition": {}, "extra": 1}):
        r = api.client.post("/v1/bots/validate", json=body, headers=api.a)
        assert r.status_code == 422, (body, r.text)


def test_put_422_carries_the_same_paths(api: Api, bot: dict[str, Any]) -> None:
    checked = api.client.post("/v1/bots/validate", json={"definition": BROKEN}, headers=api.a)
    r = api.client.put(f"/v1/bots/{bot['id']}", json=BROKEN, headers=api.a)
    assert r.status_code == 422 and r.json()["error"] == "invalid_bot"
    details = r.json()["details"]
    assert [(d["field"], d["message"]) for d in details] == [
        (e["path"], e["message"]) for e in checked.json()["errors"]
    ]
    assert 'flows.order.steps[2].if[0].slot: unknown slot "order_number"' in r.json()["errors"]
    # the bot is unchanged
    assert api.client.get(f"/v1/bots/{bot['id']}", headers=api.a).json()["version"] == 2
