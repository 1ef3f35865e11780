"""A bot is refused at save time (422 naming the path) when it names a model, alias or dataset
its tenant does not have, a model of the wrong task, or an action URL on a private IP address;
another tenant's ids read as unknown. Through the real gateway: JSON, YAML and multipart
bodies, updates and a Rasa import."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.bot_gateway.conftest import Api, running_api
from tests.support.data import intent_csv
from tests.support.rasa_bots import order_bot

pytestmark = pytest.mark.slow

ALIAS = "support-nlu"


@pytest.fixture(scope="module", params=[pytest.param("sqlite", id="sqlite")])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("refs")) as api:
        yield api


@pytest.fixture(scope="module")
def model_id(api: Api) -> str:
    """Tenant A's intent model, with alias ``support-nlu``."""
    dataset = api.upload(intent_csv(), name="intents").json()
    model = api.train(dataset["id"], params={"epochs": 20})
    assert model["status"] == "succeeded", model["failure_message"]
    r = api.client.put(f"/v1/aliases/{ALIAS}", json={"model_id": model["id"]}, headers=api.a)
    assert r.status_code == 200, r.text
    return str(model["id"])


def definition(nlu_model: str, vision_model: str = "prebuilt-ocr", **extra: Any) -> dict[str, Any]:
    """A bot that parses with ``nlu_model`` and reads photos with ``vision_model``."""
    label = {"name": "label", "model": vision_model, "slots": [{"slot": "order", "regex": "PX-1"}]}
    return {
        "name": "refs",
        "nlu": {"model": nlu_model},
        "slots": {"order": {"type": "text"}},
        "responses": {"utter_hi": [{"text": "Hi!"}]},
        "flows": {"hi": {"intents": ["greet"], "steps": [{"reply": "utter_hi"}]}},
        "vision": [label],
        **extra,
    }


def post(api: Api, data: dict[str, Any], form: str = "json", headers: Any = None) -> Any:
    headers = headers or api.a
    if form == "json":
        return api.client.post("/v1/bots", json=data, headers=headers)
    text = yaml.safe_dump(data)
    if form == "yaml":
        yaml_headers = {**headers, "content-type": "application/yaml"}
        return api.client.post("/v1/bots", content=text, headers=yaml_headers)
    return api.client.post("/v1/bots", files={"file": ("bot.yaml", text)}, headers=headers)


def refused(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_bot", body
    return list(body["errors"])


def bot_names(api: Api, headers: Any) -> list[str]:
    return [b["name"] for b in api.client.get("/v1/bots", headers=headers).json()]


@pytest.mark.parametrize("form", ["json", "yaml", "multipart"])
def test_a_bot_naming_models_its_tenant_does_not_have_is_refused(
    api: Api, model_id: str, form: str
) -> None:
    errors = refused(post(api, definition("mdl_0000nothere", "damage-classifier"), form))
    assert errors == [
        'nlu.model: no model "mdl_0000nothere" (or alias) in this tenant',
        'vision[0].model: no model "damage-classifier" (or alias) in this tenant',
    ]
    assert "refs" not in bot_names(api, api.a)  # nothing was stored


def test_another_tenants_model_and_alias_read_as_unknown(api: Api, model_id: str) -> None:
    for name in (model_id, ALIAS):
        errors = refused(post(api, definition(name), headers=api.b))
        assert errors == [f'nlu.model: no model "{name}" (or alias) in this tenant']
    assert "refs" not in bot_names(api, api.b)


def test_the_tenants_own_models_aliases_and_built_ins_are_accepted(api: Api, model_id: str) -> None:
    for name in (model_id, ALIAS):
        r = post(api, {**definition(name), "name": f"refs {name}"})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "ready"


def test_a_model_of_the_wrong_task_is_refused_with_what_fits(api: Api, model_id: str) -> None:
    errors = refused(post(api, definition("prebuilt-ocr", vision_model=ALIAS)))
    assert errors == [
        'nlu.model: model "prebuilt-ocr" is an ocr model; the bot\'s NLU needs an intent model '
        "(train one on a text-intent dataset)",
        f'vision[0].model: model "{ALIAS}" is an intent model; a vision step runs an image '
        "model (classification, detection) or prebuilt-ocr",
    ]
    entities = {"model": ALIAS, "entities_model": "prebuilt-image"}
    errors = refused(post(api, {**definition(ALIAS), "nlu": entities}))
    assert errors == [
        'nlu.entities_model: model "prebuilt-image" is an image-classification model; give '
        "prebuilt-entities or a model trained on a text-entities dataset"
    ]


def test_an_update_to_a_missing_model_is_refused_and_keeps_the_version(
    api: Api, model_id: str
) -> None:
    r = post(api, {**definition(model_id), "name": "kept"})
    assert r.status_code == 201, r.text
    bot = r.json()
    r = api.client.put(f"/v1/bots/{bot['id']}", json=definition("gone-alias"), headers=api.a)
    assert refused(r) == ['nlu.model: no model "gone-alias" (or alias) in this tenant']
    after = api.client.get(f"/v1/bots/{bot['id']}", headers=api.a).json()
    assert after["version"] == bot["version"] and after["name"] == "kept"


def test_a_dataset_of_another_tenant_is_unknown(api: Api) -> None:
    dataset = api.upload(intent_csv(), name="b's intents", headers=api.b).json()
    data = {**definition("x"), "nlu": {"dataset": dataset["id"]}}
    assert refused(post(api, data)) == [f'nlu.dataset: no dataset "{dataset["id"]}" in this tenant']


def test_action_urls_on_private_ip_addresses_are_refused_at_save_time(
    api: Api, model_id: str
) -> None:
    actions = {
        "lookup": {"url": "http://10.0.0.5/orders/{order}"},
        "metadata": {"url": "http://169.254.169.254/latest/meta-data"},
        "named": {"url": "https://orders.example/{order}"},  # a name: checked when called
    }
    data = definition(model_id, actions=actions, action_server={"url": "http://[::1]:5055/"})
    errors = refused(post(api, data))
    assert [e.split(";")[0] for e in errors] == [
        "actions.lookup.url: 10.0.0.5 is a private address",
        "actions.metadata.url: 169.254.169.254 is a link-local address",
        "action_server.url: ::1 is a loopback address",
    ]
    assert all("PARLEY_OUTBOUND__ALLOW_HOSTS" in e for e in errors)
    # a Rasa project whose action endpoint is on a private address
    project = order_bot()
    files = {k: (f"{k}.yml", v) for k, v in project.items() if k != "name" and v is not None}
    files["endpoints"] = ("endpoints.yml", "action_endpoint: {url: 'http://192.168.1.20:5055/'}")
    r = api.client.post("/v1/bots/import/rasa", data={"name": "m"}, files=files, headers=api.a)
    assert [e.split(";")[0] for e in refused(r)] == [
        "action_server.url: 192.168.1.20 is a private address"
    ]
