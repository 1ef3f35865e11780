"""Issue 12, findings 1 and 3 through the real gateway (SQLite and PostgreSQL): a YAML alias bomb
is refused and nothing stored; deeply nested JSON or YAML on every route that reads a document
answers 422 naming the limit (never 500); integers past 2^31 in offsets, cursors and ids answer
422 naming the parameter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from bot_gateway.api import conversations, datasets
from bot_gateway.conversations.engine import parse_payload
from bot_gateway.json_depth import is_json
from tests.bot_gateway.conftest import Api, running_api
from tests.conftest import DB_KINDS
from tests.support.images import encode, shape_image, zip_bytes
from tests.support.rasa_bots import moodbot

pytestmark = pytest.mark.slow

DEEP = 5_000  # levels: past the recursion limit of json.loads, pydantic and PyYAML's composer
DEEP_JSON = "[" * DEEP + "]" * DEEP
DEEP_YAML = "[" * DEEP
HUGE = 2**63  # past SQLite's and PostgreSQL's integers
BOT = """\
name: plain
allowed_origins: [http://shop.example]
responses:
  utter_hi:
    - text: Hi
"""


def billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, level in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{level}: &{level} [{', '.join([f'*{prev}'] * 9)}]")
    return "name: bomb\n" + "\n".join(lines) + "\ndescription: *i\n"


@pytest.fixture(scope="module", params=DB_KINDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("documents"), warm_encoder=False) as api:
        yield api


@pytest.fixture(scope="module")
def bot(api: Api) -> dict[str, Any]:
    r = api.client.post(
        "/v1/bots", content=BOT, headers={**api.a, "Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dataset(api: Api) -> dict[str, Any]:
    r = api.upload(b"text,label\nhi,greet\nbye,bye\n", name="small")
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def refused(r: Any, limit: str, status: int = 422) -> dict[str, Any]:
    """A problem answer naming ``limit`` (the setting), not a 500."""
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == "limit_exceeded", body
    assert body["limit"] == limit, body
    assert f"PARLEY_LIMITS__{limit.upper()}" in body["message"], body
    return body


def bot_count(api: Api) -> int:
    r = api.client.get("/v1/bots", headers=api.a)
    assert r.status_code == 200, r.text
    return len(r.json())


# --- finding 1: the YAML alias bomb ----------------------------------------------------------


def test_the_alias_bomb_is_refused_and_nothing_is_stored(api: Api) -> None:
    before = bot_count(api)
    bomb = billion_laughs()
    assert len(bomb) < 800
    for content_type in ("application/yaml", "text/plain"):
        r = api.client.post(
            "/v1/bots", content=bomb, headers={**api.a, "Content-Type": content_type}
        )
        body = refused(r, "max_document_nodes")
        assert body["document"] == "the bot definition"
    r = api.client.post("/v1/bots", files={"file": ("bot.yml", bomb)}, headers=api.a)
    refused(r, "max_document_nodes")
    assert bot_count(api) == before
    # a definition with a few aliases is still a bot, stored expanded
    friendly = "name: friendly\nresponses:\n  utter_hi: &hi\n    - text: Hi!\n  utter_hey: *hi\n"
    r = api.client.post(
        "/v1/bots", content=friendly, headers={**api.a, "Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    responses = r.json()["definition"]["responses"]
    assert responses["utter_hey"] == responses["utter_hi"] == [{"text": "Hi!"}]
    assert bot_count(api) == before + 1


def test_a_long_text_repeated_by_aliases_is_refused(api: Api, bot: dict[str, Any]) -> None:
    text = f"name: big\nx: &x {'y' * 30_000}\nresponses:\n  a: [{', '.join(['*x'] * 60)}]\n"
    r = api.client.put(
        f"/v1/bots/{bot['id']}", content=text, headers={**api.a, "Content-Type": "text/yaml"}
    )
    refused(r, "max_json_bytes")
    r = api.client.get(f"/v1/bots/{bot['id']}/versions", headers=api.a)
    assert [v["version"] for v in r.json()] == [1]


def test_the_alias_bomb_in_a_rasa_project_and_a_stories_file(api: Api, bot: dict[str, Any]) -> None:
    project = moodbot()
    files = {"domain": ("domain.yml", billion_laughs()), "nlu": ("nlu.yml", project["nlu"])}
    r = api.client.post("/v1/bots/import/rasa", data={"name": "x"}, files=files, headers=api.a)
    assert refused(r, "max_document_nodes")["document"] == "domain.yml"
    nlu_bomb = "version: '3.1'\n" + billion_laughs().replace("name: bomb\n", "")
    files = {"domain": ("domain.yml", project["domain"]), "nlu": ("nlu.yml", nlu_bomb)}
    r = api.client.post("/v1/bots/import/rasa", data={"name": "x"}, files=files, headers=api.a)
    refused(r, "max_document_nodes")


# --- finding 3: deep nesting on every route that reads a document ----------------------------


def test_deep_json_bodies_are_refused_before_parsing(
    api: Api, bot: dict[str, Any], dataset: dict[str, Any]
) -> None:
    json_headers = {**api.a, "Content-Type": "application/json"}
    routes = [
        ("POST", f"/v1/datasets/{dataset['id']}/examples"),
        ("POST", "/v1/bots"),
        ("PUT", f"/v1/bots/{bot['id']}"),
        ("POST", "/v1/datasets"),
        ("POST", "/v1/keys"),  # FastAPI's own body parsing
        ("POST", "/v1/tenants"),  # before authentication
    ]
    for method, path in routes:
        r = api.client.request(method, path, content=DEEP_JSON, headers=json_headers)
        body = refused(r, "max_document_depth")
        assert body["document"] == "the JSON body", (path, body)
    deep_object = ('{"a":' * DEEP + "1" + "}" * DEEP).encode()
    r = api.client.post(
        "/v1/bots", content=deep_object, headers={**api.a, "Content-Type": "application/ld+json"}
    )
    refused(r, "max_document_depth")


def test_json_bodies_within_the_limit_still_reach_the_routes(
    api: Api, dataset: dict[str, Any]
) -> None:
    examples = [
        {"text": "hello [[[there]]] {{", "label": "greet"},
        {"text": "ciao", "label": "bye"},
    ]
    r = api.client.post(f"/v1/datasets/{dataset['id']}/examples", json=examples, headers=api.a)
    assert r.status_code == 201, r.text
    assert r.json()["added"] == 2
    custom = {"card": [[[["ok", {"a": "[[[["}]]]]}
    nested = json.dumps({"name": "nested", "responses": {"utter_x": [{"custom": custom}]}})
    r = api.client.post(
        "/v1/bots", content=nested, headers={**api.a, "Content-Type": "application/json"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["definition"]["responses"]["utter_x"] == [{"custom": custom}]


def test_deep_yaml_bot_definitions_are_refused(api: Api, bot: dict[str, Any]) -> None:
    yaml_headers = {**api.a, "Content-Type": "application/yaml"}
    before = bot_count(api)
    r = api.client.post("/v1/bots", content=DEEP_YAML, headers=yaml_headers)
    assert refused(r, "max_document_depth")["document"] == "the bot definition"
    r = api.client.post("/v1/bots", files={"file": ("bot.json", DEEP_JSON)}, headers=api.a)
    refused(r, "max_document_depth")
    r = api.client.put(f"/v1/bots/{bot['id']}", content=DEEP_YAML, headers=yaml_headers)
    refused(r, "max_document_depth")
    # block style: one level per line
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(40)) + "  " * 40 + "v\n"
    r = api.client.post("/v1/bots", content="name: b\n" + block, headers=yaml_headers)
    refused(r, "max_document_depth")
    assert bot_count(api) == before


def test_deep_dataset_files_are_refused(api: Api, dataset: dict[str, Any]) -> None:
    for filename, data in [
        ("deep.json", DEEP_JSON),
        ("deep.jsonl", '{"text": "hi", "label": "greet"}\n' + DEEP_JSON + "\n"),
        ("nlu.yml", "version: '3.1'\nnlu: " + DEEP_YAML),
        ("nlu.yml", 'nlu:\n- intent: greet\n  examples: |\n    - [x]{"v": ' + DEEP_JSON + "}"),
    ]:
        r = api.upload(data.encode(), filename=filename, name="deep")
        assert r.status_code == 422, (filename, r.text)
        assert "nested more than 32 levels" in r.json()["message"], (filename, r.text)
        r = api.client.post(
            f"/v1/datasets/{dataset['id']}/examples",
            files={"file": (filename, data)},
            headers=api.a,
        )
        assert r.status_code == 422, (filename, r.text)
        assert "nested more than 32 levels" in r.json()["message"], (filename, r.text)
    names = [d["name"] for d in api.client.get("/v1/datasets", headers=api.a).json()]
    assert "deep" not in names


def test_deep_rasa_projects_and_stories_are_refused(api: Api, bot: dict[str, Any]) -> None:
    project = moodbot()
    for field in ("domain", "nlu", "rules", "stories", "endpoints"):
        files = {"domain": ("domain.yml", project["domain"]), "nlu": ("nlu.yml", project["nlu"])}
        files[field] = (f"{field}.yml", DEEP_YAML)
        r = api.client.post(
            "/v1/bots/import/rasa", data={"name": "deep"}, files=files, headers=api.a
        )
        assert refused(r, "max_document_depth")["document"] in (f"{field}.yml", "the Rasa NLU file")
    stories = "stories:\n- story: s\n  steps:\n  - user: " + DEEP_YAML
    r = api.client.post(
        f"/v1/bots/{bot['id']}/test", files={"stories": ("stories.yml", stories)}, headers=api.a
    )
    assert refused(r, "max_document_depth")["document"] == "the stories file"


def test_a_deep_web_chat_frame_is_answered_and_the_socket_lives(
    api: Api, bot: dict[str, Any]
) -> None:
    url = f"/v1/bots/{bot['id']}/ws?key={bot['widget_key']}&session=session-deep-01"
    with api.client.websocket_connect(url, headers={"origin": "http://shop.example"}) as ws:
        welcome = ws.receive_json()
        assert welcome["type"] == "welcome", welcome
        ws.send_text('{"type": "message", "text": ' + "[" * 10_000 + "}")
        reply = ws.receive_json()
        assert reply["error"] == "invalid_frame", reply
        assert "levels deep" in reply["message"]
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_a_deep_button_payload_is_ordinary_text_not_a_crash() -> None:
    assert parse_payload('/choose{"size": ["s"]}').entities[0].value == "s"  # type: ignore[union-attr]
    assert parse_payload('/choose{"size": ' + "[" * 3000 + "]" * 3000 + "}") is None


def test_image_example_labels_that_nest_too_deep_are_refused(api: Api) -> None:
    image = encode(shape_image("circle", 1))
    labels = b"file,labels\na.jpg,circle\nb.jpg,circle|square\n"
    archive = zip_bytes({"a.jpg": image, "b.jpg": image, "labels.csv": labels})
    r = api.upload(archive, name="pics", type="image-multi-label", filename="pics.zip")
    assert r.status_code == 201, r.text
    r = api.client.post(
        f"/v1/datasets/{r.json()['id']}/examples",
        files={"file": ("c.jpg", image)},
        data={"labels": DEEP_JSON},
        headers=api.a,
    )
    assert refused(r, "max_document_depth")["document"] == "`labels`"


# --- finding 3: integers past 2^63 -----------------------------------------------------------


def test_huge_offsets_cursors_and_ids_answer_422_naming_the_parameter(
    api: Api, dataset: dict[str, Any]
) -> None:
    examples = f"/v1/datasets/{dataset['id']}/examples"
    cases = {
        f"/v1/conversations?offset={HUGE}": "query.offset",
        f"/v1/conversations?offset={2**31}": "query.offset",
        f"{examples}?offset={HUGE}": "query.offset",
        f"{examples}?offset=99999999999999999999": "query.offset",
        f"/v1/conversations/conv_x?after={HUGE}": "query.after",
        f"{examples}/99999999999999999999/image": "path.example_id",
        f"{examples}/{2**31}/image": "path.example_id",
        f"{examples}/-1/image": "path.example_id",
    }
    for path, field in cases.items():
        r = api.client.get(path, headers=api.a)
        assert r.status_code == 422, (path, r.text)
        body = r.json()
        assert body["error"] == "invalid_request", body
        assert body["message"].startswith(f"{field}: "), (path, body)
        assert [d["field"] for d in body["details"]] == [field]
    # the largest value taken is answered normally on both databases
    most = 2**31 - 1
    r = api.client.get(f"{examples}?offset={most}", headers=api.a)
    assert r.status_code == 200, r.text
    assert r.json()["examples"] == []
    r = api.client.get(f"/v1/conversations?offset={most}", headers=api.a)
    assert r.status_code == 200, r.text
    assert api.client.get(f"{examples}/{most}/image", headers=api.a).status_code == 404


def test_the_openapi_document_states_the_bounds() -> None:
    app = FastAPI()
    app.include_router(conversations.router, prefix="/v1")
    app.include_router(datasets.router, prefix="/v1")
    paths = app.openapi()["paths"]
    offset = next(
        p for p in paths["/v1/conversations"]["get"]["parameters"] if p["name"] == "offset"
    )
    assert offset["schema"]["maximum"] == 2**31 - 1
    assert offset["schema"]["minimum"] == 0
    image = paths["/v1/datasets/{dataset_id}/examples/{example_id}/image"]["get"]
    example_id = next(p for p in image["parameters"] if p["name"] == "example_id")
    assert example_id["schema"]["maximum"] == 2**31 - 1


def test_what_counts_as_a_json_body() -> None:
    assert is_json("application/json")
    assert is_json("Application/JSON; charset=utf-8")
    assert is_json("application/problem+json")
    assert not is_json("application/yaml")
    assert not is_json("text/plain")
    assert not is_json("multipart/form-data; boundary=x")
    assert not is_json("")
    assert yaml.safe_load(BOT)["name"] == "plain"
