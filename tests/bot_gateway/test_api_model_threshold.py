"""Moving a trained intent model's out-of-scope threshold (``PATCH /v1/models/{id}``): parse
through an alias answers with the new threshold at once, the loaded model stays loaded, the
change is recorded on the model and in the audit log; the refusals."""

from __future__ import annotations

from typing import Any

from bot_gateway.serving.cache import ModelRef
from core.evaluation import OUT_OF_SCOPE, curve_point
from tests.bot_gateway.conftest import Api
from tests.support.data import intent_csv, intent_rows

TEXT = "where is my parcel?"


def patch(api: Api, model_id: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return api.client.patch(f"/v1/models/{model_id}", json=body, headers=headers or api.a)


def parse(api: Api, model: str) -> dict[str, Any]:
    r = api.client.post(f"/v1/models/{model}/parse", json={"text": TEXT}, headers=api.a)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_new_threshold_is_served_through_the_alias_at_once(
    api: Api, trained: dict[str, Any]
) -> None:
    model_id = trained["id"]
    calibrated = trained["metrics"]["out_of_scope"]
    r = api.client.put("/v1/aliases/oos-live", json={"model_id": model_id}, headers=api.a)
    assert r.status_code == 200, r.text
    before = parse(api, "oos-live")
    assert before["out_of_scope"] is False and before["intent"]["name"] == "track_order"
    confidence = before["intent"]["confidence"]
    gateway = api.client.app.state.gateway  # type: ignore[attr-defined]
    ref = ModelRef(model_id, trained["backend"], "", trained["artifact_sha256"])
    loaded = gateway.cache.peek(ref)
    assert loaded is not None

    # just above the text's confidence: turned away; just below: answered
    above = round(min(1.0, confidence + 0.001), 6)
    r = patch(api, model_id, {"out_of_scope_threshold": above})
    assert r.status_code == 200, r.text
    oos = r.json()["metrics"]["out_of_scope"]
    assert oos["threshold"] == above and oos["method"] == "manual"
    assert oos["calibrated_threshold"] == calibrated["threshold"]
    assert oos["calibrated_method"] == calibrated["method"]
    keys = api.client.get("/v1/keys", headers=api.a).json()
    assert oos["set_by"] == f"key:{keys[0]['id']}" and oos["set_at"]
    read = curve_point(calibrated["curve"], above)
    assert oos["in_scope_accuracy"] == read["in_scope_accuracy"]
    assert oos["in_scope_flagged"] == read["in_scope_flagged"]
    assert oos["out_of_scope_recall"] is None  # trained without out_of_scope examples
    flagged = parse(api, "oos-live")
    assert flagged["out_of_scope"] is True and flagged["intent"]["name"] == "out_of_scope"
    assert gateway.cache.peek(ref) is loaded  # the same loaded model: no reload, no gap

    below = round(max(0.0, confidence - 0.001), 6)
    assert patch(api, model_id, {"out_of_scope_threshold": below}).status_code == 200
    assert parse(api, "oos-live")["out_of_scope"] is False
    stored = api.client.get(f"/v1/models/{model_id}", headers=api.a).json()
    assert stored["metrics"]["out_of_scope"]["threshold"] == below  # recorded on the model

    # null: the calibrated threshold and method again
    r = patch(api, model_id, {"out_of_scope_threshold": None})
    assert r.status_code == 200, r.text
    restored = r.json()["metrics"]["out_of_scope"]
    assert restored["threshold"] == calibrated["threshold"]
    assert restored["method"] == calibrated["method"]
    assert restored["in_scope_accuracy"] == calibrated["in_scope_accuracy"]

    api.client.app.state.gateway.audit.flush()  # type: ignore[attr-defined]
    log = api.client.get("/v1/audit", params={"target_id": model_id}, headers=api.a).json()
    patches = [e for e in log["entries"] if e["action"] == "PATCH /v1/models/{model_id}"]
    assert [e["status"] for e in patches] == [200, 200, 200]


def test_refusals(api: Api, trained: dict[str, Any]) -> None:
    model_id = trained["id"]
    for body in (
        {"out_of_scope_threshold": 1.5},
        {"out_of_scope_threshold": -0.1},
        {"out_of_scope_threshold": "high"},
        {"out_of_scope_threshold": True},  # not 1.0: that would turn every message away
        {},
        {"out_of_scope_threshold": 0.5, "name": "x"},
    ):
        r = patch(api, model_id, body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["message"]
    # another tenant's model, or none: not found
    r = patch(api, model_id, {"out_of_scope_threshold": 0.5}, headers=api.b)
    assert r.status_code == 404
    assert patch(api, "mdl_nothing", {"out_of_scope_threshold": 0.5}).status_code == 404
    # a key without the train scope
    key = api.client.post("/v1/keys", json={"scopes": ["predict"]}, headers=api.a).json()
    predict_only = {"Authorization": f"Bearer {key['api_key']}"}
    r = patch(api, model_id, {"out_of_scope_threshold": 0.5}, headers=predict_only)
    assert r.status_code == 403 and "train" in r.json()["message"]
    after = api.client.get(f"/v1/models/{model_id}", headers=api.a).json()
    assert after["metrics"]["out_of_scope"]["threshold"] != 0.5  # nothing of that changed it


def test_only_succeeded_intent_models(api: Api) -> None:
    from tests.support.entity_data import entity_jsonl

    ds = api.upload(intent_csv()).json()
    queued = api.client.post("/v1/models", json={"dataset_id": ds["id"]}, headers=api.a).json()
    api.client.post(f"/v1/models/{queued['id']}/cancel", headers=api.a)
    r = patch(api, queued["id"], {"out_of_scope_threshold": 0.5})
    assert r.status_code == 409 and "succeeded" in r.json()["message"]
    ents = api.upload(entity_jsonl(), filename="ents.jsonl", type="text-entities").json()
    entity_model = api.train(ents["id"], backend="spacy-ner", params={"epochs": 2})
    assert entity_model["status"] == "succeeded", entity_model["failure_message"]
    r = patch(api, entity_model["id"], {"out_of_scope_threshold": 0.5})
    assert r.status_code == 422 and "only intent models" in r.json()["message"]


def test_the_out_of_scope_share_param(api: Api) -> None:
    from parley.demo import DEMO_DATA

    plain = api.upload(intent_csv()).json()
    for share, words in ((0.3, "has none"), (1.5, "out_of_scope_share"), (0, "greater than 0")):
        body = {"dataset_id": plain["id"], "params": {"out_of_scope_share": share}}
        r = api.client.post("/v1/models", json=body, headers=api.a)
        assert r.status_code == 422 and words in r.json()["message"], (share, r.text)
    # two out_of_scope examples: the held-out split (train_split 0.8) gets none of them
    two = intent_rows() + [("what is the weather", OUT_OF_SCOPE), ("tell a joke", OUT_OF_SCOPE)]
    few = api.upload(intent_csv(two)).json()
    body = {"dataset_id": few["id"], "params": {"out_of_scope_share": 0.3}}
    r = api.client.post("/v1/models", json=body, headers=api.a)
    assert r.status_code == 422 and "add 1 more" in r.json()["message"], r.text
    demo = api.upload(DEMO_DATA.read_bytes(), name="demo").json()
    # a fixed threshold is not chosen with the share: refused, not reweighted in silence
    params = {"out_of_scope_share": 0.3, "out_of_scope_threshold": 0.5}
    r = api.client.post(
        "/v1/models", json={"dataset_id": demo["id"], "params": params}, headers=api.a
    )
    assert r.status_code == 422 and "leave one of them out" in r.json()["message"], r.text
    model = api.train(demo["id"], params={"out_of_scope_share": 0.5})
    oos = model["metrics"]["out_of_scope"]
    assert oos["out_of_scope_share"] == 0.5 and oos["num_out_of_scope"] >= 4
    default = api.train(demo["id"])["metrics"]["out_of_scope"]
    assert default["out_of_scope_share"] < 0.2  # the held-out split's own share
    # a prior of one in two off topic never turns away fewer messages than the split's own
    assert oos["threshold"] >= default["threshold"]


def test_a_model_trained_before_curves_were_stored(api: Api, trained: dict[str, Any]) -> None:
    from core.db import session_scope
    from core.tables import Model

    gateway = api.client.app.state.gateway  # type: ignore[attr-defined]
    old = {"threshold": 0.3, "method": "in_scope_quantile_0.05", "in_scope_accuracy": 0.95}
    with session_scope(gateway.engine) as session:
        record = session.get(Model, trained["id"])
        assert record is not None
        record.metrics = {**(record.metrics or {}), "out_of_scope": old}
    r = patch(api, trained["id"], {"out_of_scope_threshold": 0.6})
    assert r.status_code == 200, r.text
    oos = r.json()["metrics"]["out_of_scope"]
    assert oos["threshold"] == 0.6 and oos["calibrated_threshold"] == 0.3
    assert oos["in_scope_accuracy"] is None  # the old number was measured at 0.3, not 0.6
    restored = patch(api, trained["id"], {"out_of_scope_threshold": None}).json()
    assert restored["metrics"]["out_of_scope"]["threshold"] == 0.3
    assert restored["metrics"]["out_of_scope"]["method"] == "in_scope_quantile_0.05"
    assert restored["metrics"]["out_of_scope"]["in_scope_accuracy"] == 0.95  # as trained


def test_a_model_without_a_held_out_split(api: Api) -> None:
    rows = [("hello there", "greet"), ("hi friend", "greet")]
    rows += [("where is my order", "track"), ("track my parcel", "track")]
    ds = api.upload(intent_csv(rows)).json()
    model = api.train(ds["id"], params={"epochs": 2})
    assert model["status"] == "succeeded" and model["metrics"] is None  # nothing held out
    r = patch(api, model["id"], {"out_of_scope_threshold": 0.4})
    assert r.status_code == 200, r.text
    oos = r.json()["metrics"]["out_of_scope"]
    assert oos["threshold"] == 0.4 and oos["method"] == "manual"
    assert oos["calibrated_threshold"] is None and oos["calibrated_method"] == "none"
    assert oos["in_scope_accuracy"] is None  # no held-out split to measure it on
    restored = patch(api, model["id"], {"out_of_scope_threshold": None}).json()
    assert restored["metrics"]["out_of_scope"]["threshold"] is None
    assert restored["metrics"]["out_of_scope"]["method"] == "none"
