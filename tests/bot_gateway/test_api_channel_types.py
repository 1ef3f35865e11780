"""``GET /v1/channel-types``: every registered channel type (and the built-in web chat and
REST channels) with a config schema that accepts a valid config and refuses an empty one,
secrets ``writeOnly`` (exactly the ``SecretStr`` fields), the webhook path the gateway
answers, and setup steps that say where the webhook URL goes."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from bot_gateway.services.delivery import webhook_url
from connectors.base import WEBHOOK_PATH
from connectors.registry import builtin_connectors, connectors
from tests.bot_gateway.conftest import Api, running_api
from tests.connectors.kits import KITS

for _name in connectors.names():
    importlib.import_module(f"tests.connectors.{_name}_kit")


@pytest.fixture(scope="module", params=[pytest.param("sqlite", id="sqlite")])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("types"), warm_encoder=False) as api:
        yield api


@pytest.fixture(scope="module")
def types(api: Api) -> dict[str, dict[str, Any]]:
    r = api.client.get("/v1/channel-types", headers=api.a)
    assert r.status_code == 200, r.text
    return {t["type"]: t for t in r.json()["channel_types"]}


def test_every_type_is_listed_once_builtins_marked(types: dict[str, dict[str, Any]]) -> None:
    assert set(types) == set(connectors.names()) | set(builtin_connectors.names())
    assert {t for t, v in types.items() if v["builtin"]} == {"webchat", "rest"}
    for spec in types.values():
        assert spec["title"] and spec["setup_steps"], spec["type"]
        assert spec["docs_url"] is None or spec["docs_url"].startswith("https://")
        assert set(spec["capabilities"]) >= {"buttons", "images", "inbound_images"}
    assert types["slack"]["title"] == "Slack" and types["slack"]["capabilities"]["buttons"]
    assert not types["twilio"]["capabilities"]["buttons"]  # SMS: buttons become numbered text


@pytest.mark.parametrize("kind", sorted(KITS))
def test_the_schema_builds_a_form_that_takes_a_valid_config(
    types: dict[str, dict[str, Any]], kind: str
) -> None:
    spec, kit = types[kind], KITS[kind]
    schema = spec["config_schema"]
    jsonschema.validate(kit.config(), schema)  # a valid config passes
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({}, schema)  # the required fields are required
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**kit.config(), "colour": "red"}, schema)  # nothing else
    write_only = {name for name, p in schema["properties"].items() if p.get("writeOnly")}
    assert write_only == set(kit.secret_fields)
    # the provider is told the channel's webhook URL: the path the gateway answers
    assert spec["webhook_path"] == WEBHOOK_PATH
    assert webhook_url("https://bots.example", "ch_1") == "https://bots.example" + (
        WEBHOOK_PATH.format(channel_id="ch_1")
    )
    assert any("{webhook_url}" in step for step in spec["setup_steps"])


def test_builtin_channels_name_their_routes(api: Api, types: dict[str, dict[str, Any]]) -> None:
    assert types["rest"]["webhook_path"] == "/v1/bots/{bot_id}/webhooks/rest"
    assert types["webchat"]["webhook_path"] == "/v1/bots/{bot_id}/ws"
    assert types["webchat"]["config_schema"]["properties"]["allowed_origins"]["type"] == "array"
    # the REST path is a real route: an unknown bot answers 404, not "no route"
    r = api.client.post(
        "/v1/bots/bot_nope/webhooks/rest", json={"sender": "a", "message": "hi"}, headers=api.a
    )
    assert r.status_code == 404 and "no route" not in r.json()["message"]


def test_channel_types_need_a_key(api: Api) -> None:
    assert api.client.get("/v1/channel-types").status_code == 401
