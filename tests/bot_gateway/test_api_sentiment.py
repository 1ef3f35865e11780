"""``POST /v1/models/prebuilt-sentiment/predict`` through the real gateway (VADER's real
lexicon): a label and a score per text, in the predict envelope of every text model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bot_gateway.conftest import Api, running_api

PREDICT = "/v1/models/prebuilt-sentiment/predict"


@pytest.fixture(scope="module", params=["sqlite"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("gateway"), warm_encoder=False) as api:
        yield api


def test_one_text_gets_a_label_a_score_and_the_three_probabilities(api: Api) -> None:
    r = api.client.post(PREDICT, json={"text": "This is terrible, I hate it."}, headers=api.a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == "prebuilt-sentiment"
    assert body["label"] == "negative" and 0.8 < body["score"] <= 1.0
    predictions = body["predictions"]
    assert [p["label"] for p in predictions][0] == "negative"
    assert {p["label"] for p in predictions} == {"negative", "neutral", "positive"}
    assert predictions[0]["probability"] == body["score"]
    assert sum(p["probability"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
    assert "out_of_scope" not in body and "entities" not in body


def test_a_batch_gets_one_label_and_score_per_text(api: Api) -> None:
    texts = ["I love it, thanks so much!", "The parcel arrives on Tuesday.", "Awful, just awful."]
    r = api.client.post(PREDICT, json={"texts": texts, "num_results": 1}, headers=api.b)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == ["positive", "neutral", "negative"]
    assert len(body["score"]) == 3 and all(0.5 <= s <= 1.0 for s in body["score"])
    assert [row[0]["label"] for row in body["predictions"]] == body["label"]
    assert all(len(row) == 1 for row in body["predictions"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": ""}, "empty text"),
        ({"text": "   "}, "empty text"),
        ({"texts": ["fine", " \n"]}, "texts[1] is empty"),
        ({"texts": []}, '"texts" is empty'),
        ({}, 'send either "text"'),
    ],
)
def test_empty_input_is_refused(api: Api, body: dict[str, object], message: str) -> None:
    r = api.client.post(PREDICT, json=body, headers=api.a)
    assert r.status_code == 422, r.text
    assert message in r.json()["message"]


def test_it_is_listed_and_described_like_the_other_built_in_models(api: Api) -> None:
    info = api.client.get("/v1/models/prebuilt-sentiment", headers=api.a).json()
    assert info["status"] == "succeeded" and info["task"] == "sentiment"
    assert info["backend"].startswith("vadersentiment")
    listed = api.client.get("/v1/backends", headers=api.a).json()["builtin_models"]
    assert {"prebuilt-entities", "prebuilt-sentiment"} <= {b["name"] for b in listed}
    # like prebuilt-entities, a built-in name is not an alias a tenant can move
    r = api.client.put("/v1/aliases/prebuilt-sentiment", json={"model_id": "mdl_x"}, headers=api.a)
    assert r.status_code == 422
    assert api.client.post(PREDICT, json={"text": "hi"}).status_code == 401
    parse = api.client.post(
        "/v1/models/prebuilt-sentiment/parse", json={"text": "I hate it"}, headers=api.a
    )
    assert parse.status_code == 422 and "not an intent model" in parse.json()["message"]


def sentiment_predictions(api: Api) -> float:
    r = api.client.get("/v1/usage", headers=api.a)
    assert r.status_code == 200, r.text
    return sum(
        e["value"]
        for e in r.json()["entries"]
        if e["model_id"] == "prebuilt-sentiment" and e["metric"] == "predictions"
    )


def test_usage_counts_sentiment_predictions(api: Api) -> None:
    before = sentiment_predictions(api)
    r = api.client.post(PREDICT, json={"texts": ["good", "bad"]}, headers=api.a)
    assert r.status_code == 200, r.text
    assert sentiment_predictions(api) == before + 2
