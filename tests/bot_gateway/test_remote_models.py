"""Remote models (``POST /v1/models/remote``) against a real Open Inference Protocol server:
MLServer from PyPI (``.venv-mlserver``, ``scripts/install-mlserver``) on 127.0.0.1, serving
two scikit-learn models that this module trains with the server's own scikit-learn — a text
pipeline (TF-IDF + logistic regression) for intents and a logistic regression on 8x8 RGB
pixels for images. Parley's answers must equal ``predict_proba`` computed by scikit-learn for
the same inputs. Faults (timeout, non-2xx, garbage) come from a small loopback V2 server of
our own; the MLServer is stopped and started again for the "server down" case.

Skipped when ``.venv-mlserver`` is missing on a laptop; a failure in CI (``CI`` set).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.bot_gateway.conftest import Api, running_api
from tests.support import mlserver
from tests.support.http_server import loopback_server
from tests.support.postgres import free_port

INTENTS = {
    "greet": ["hi", "hello", "hello there", "good morning", "hey", "hiya friend"],
    "track_order": [
        "where is my order",
        "track my parcel",
        "has my order shipped",
        "when will my package arrive",
        "order status please",
        "where is my parcel",
    ],
    "refund": [
        "i want my money back",
        "refund please",
        "give me a refund",
        "return this and refund me",
        "money back now",
        "can i get a refund",
    ],
}
LABELS = sorted(INTENTS)  # scikit-learn's classes_ order
PROBES = ["hello", "where is my parcel", "refund my money", "good morning, where is my order"]
COLOURS = ["blue", "green", "red"]  # classes_ order of the image model

TRAIN = """
import json, os
import joblib, numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

spec = json.load(open("spec.json"))
texts = [t for label, ts in spec["intents"].items() for t in ts]
labels = [label for label, ts in spec["intents"].items() for _ in ts]
text_model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
text_model.fit(texts, labels)
pixels, colours = np.load("pixels.npy"), json.load(open("colours.json"))
image_model = make_pipeline(
    FunctionTransformer(np.reshape, kw_args={"shape": (-1, 8 * 8 * 3)}),
    LogisticRegression(max_iter=1000),
)
image_model.fit(pixels, colours)
probe_pixels = np.load("probe_pixels.npy")
for name, model in (("intents", text_model), ("colours", image_model)):
    os.makedirs(name, exist_ok=True)
    joblib.dump(model, f"{name}/model.joblib")
print(json.dumps({
    "text_classes": text_model.classes_.tolist(),
    "image_classes": image_model.classes_.tolist(),
    "texts": text_model.predict_proba(spec["probes"]).tolist(),
    "images": image_model.predict_proba(probe_pixels).tolist(),
}))
"""


def settings(name: str, inputs: list[Any], outputs: list[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
        "inputs": inputs,
        "outputs": outputs,
    }


def coloured(rng: np.random.Generator, channel: int) -> np.ndarray:
    """An 8x8 RGB image whose ``channel`` is bright, with noise."""
    image = rng.integers(0, 90, size=(8, 8, 3))
    image[..., channel] = rng.integers(160, 256, size=(8, 8))
    return image.astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running MLServer with ``intents`` and ``colours``, and scikit-learn's own answers."""
    if not mlserver.installed():
        reason = ".venv-mlserver is missing; scripts/install-mlserver installs MLServer"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("mlserver")
    rng = np.random.default_rng(7)
    channel = {"red": 0, "green": 1, "blue": 2}
    colours = [c for c in COLOURS for _ in range(10)]
    np.save(folder / "pixels.npy", np.stack([coloured(rng, channel[c]) for c in colours]))
    probe = np.stack([coloured(rng, channel[c]) for c in ("red", "blue", "green")])
    probe[2, ..., 0] = 200  # green and red both bright: an undecided image
    np.save(folder / "probe_pixels.npy", probe)
    (folder / "colours.json").write_text(json.dumps(colours))
    (folder / "spec.json").write_text(json.dumps({"intents": INTENTS, "probes": PROBES}))
    expected = json.loads(mlserver.run_python(TRAIN, cwd=folder))
    assert expected["text_classes"] == LABELS and expected["image_classes"] == COLOURS
    proba = {"name": "predict_proba", "datatype": "FP64"}
    (folder / "intents" / "model-settings.json").write_text(
        json.dumps(
            settings(
                "intents",
                [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                [{**proba, "shape": [-1, len(LABELS)]}],
            )
        )
    )
    (folder / "colours" / "model-settings.json").write_text(  # labels in the metadata
        json.dumps(
            settings(
                "colours",
                [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 8, 8, 3]}],
                [{**proba, "shape": [-1, 3], "parameters": {"labels": COLOURS}}],
            )
        )
    )
    with mlserver.MLServer(folder) as server:
        yield {"server": server, "expected": expected, "probe": probe}


class FakeV2(BaseHTTPRequestHandler):
    """A V2 server of our own for the faults MLServer does not make: model ``slow`` sleeps,
    ``broken`` answers 500, ``garbage`` answers JSON that is no V2 answer, ``fine`` answers
    two scores per text (0.25, 0.75). It records the headers of every infer call."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        name = self.path.split("/")[3]
        if self.path.endswith("/ready"):
            self._send(200, {})
            return
        self._send(
            200,
            {
                "name": name,
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 2]}],
            },
        )

    def do_POST(self) -> None:
        name = self.path.split("/")[3]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        SEEN.append(dict(self.headers))
        count = body["inputs"][0]["shape"][0]
        if name == "slow":
            time.sleep(3)
        if name == "broken":
            self._send(500, {"error": "model exploded"})
        elif name == "garbage":
            self._send(200, {"outputs": [{"name": "scores", "data": "nope"}]})
        else:
            data = [0.25, 0.75] * count
            self._send(
                200,
                {
                    "outputs": [
                        {"name": "scores", "datatype": "FP32", "shape": [count, 2], "data": data}
                    ]
                },
            )


SEEN: list[dict[str, str]] = []  # the headers of FakeV2's infer calls


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[str, list[dict[str, str]]]]:
    with loopback_server(FakeV2) as (port, _):
        yield f"http://127.0.0.1:{port}", SEEN


@pytest.fixture(scope="module", params=[pytest.param("sqlite", id="sqlite")])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(
        request,
        tmp_path_factory.mktemp("gateway"),
        warm_encoder=False,
        outbound={"allow_hosts": ["127.0.0.1"]},
        remote_models={"timeout_s": 1.5},
    ) as api:
        yield api


def register(api: Api, **body: Any) -> Any:
    """``POST /v1/models/remote`` as tenant A (``body["headers"]`` are the model's)."""
    return api.client.post("/v1/models/remote", json=body, headers=api.a)


@pytest.fixture(scope="module")
def intents(api: Api, served: dict[str, Any]) -> dict[str, Any]:
    r = register(
        api,
        name="intents on MLServer",
        task="text-intent",
        url=served["server"].url + "/",
        model_name="intents",
        labels=LABELS,
        headers={"X-Api-Token": "s3cret-token"},
    )
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def colours(api: Api, served: dict[str, Any]) -> dict[str, Any]:
    url = served["server"].url
    r = register(api, name="colours", task="image", url=url, model_name="colours")
    assert r.status_code == 201, r.text
    return r.json()


def probabilities(predictions: list[dict[str, Any]], labels: list[str]) -> list[float]:
    by_label = {p["label"]: p["probability"] for p in predictions}
    return [by_label[label] for label in labels]


# --- registration and the model record ----------------------------------------------------------


def test_registration_reads_the_servers_metadata_and_shows_no_header_values(
    api: Api, intents: dict[str, Any], colours: dict[str, Any], served: dict[str, Any]
) -> None:
    url = served["server"].url
    assert intents["status"] == "succeeded" and intents["task"] == "intent"
    assert intents["backend"] == "remote-oip" and intents["labels"] == LABELS
    assert intents["remote"] == {
        "protocol": "v2",
        "url": url,
        "model_name": "intents",
        "headers": ["X-Api-Token"],
    }
    assert intents["params"]["input"]["datatype"] == "BYTES"
    assert intents["params"]["output"]["name"] == "predict_proba"
    assert colours["task"] == "image-classification" and colours["labels"] == COLOURS
    listed = api.client.get("/v1/models", headers=api.a)
    assert {intents["id"], colours["id"]} <= {m["id"] for m in listed.json()}
    for r in (listed, api.client.get(f"/v1/models/{intents['id']}", headers=api.a)):
        assert r.status_code == 200 and "s3cret-token" not in r.text
    one = api.client.get(f"/v1/models/{intents['id']}", headers=api.a).json()
    assert one["remote"]["headers"] == ["X-Api-Token"] and "headers" not in one["params"]


def test_another_tenant_cannot_see_or_use_a_remote_model(api: Api, intents: dict[str, Any]) -> None:
    model_id = intents["id"]
    assert api.client.get(f"/v1/models/{model_id}", headers=api.b).status_code == 404
    r = api.client.post(f"/v1/models/{model_id}/predict", json={"text": "hi"}, headers=api.b)
    assert r.status_code == 404, r.text
    assert model_id not in {m["id"] for m in api.client.get("/v1/models", headers=api.b).json()}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"task": "object-detection"}, "task 'object-detection'"),
        ({"url": "ftp://127.0.0.1:1"}, "http(s) base URL"),
        ({"url": "not a url"}, "http(s) base URL"),
        ({"url": "http://user:pw@127.0.0.1:1"}, "credentials in headers"),
        ({"headers": {"bad name": "x"}}, "is not a header name"),
        ({"headers": {"Host": "evil"}}, "Parley sets Host itself"),
        ({"headers": {"X-A": "two\r\nlines"}}, "one-line string"),
        ({"labels": ["greet", "refund"]}, "declares 3 scores per input"),
        ({"labels": ["greet", "greet", "refund"]}, "each label once"),
        ({"labels": None}, "send labels"),
        ({"model_name": "nothere"}, "has no model 'nothere'"),
        ({"task": "image"}, "an image model's input must be"),
    ],
)
def test_bad_registrations_are_422_saying_why(
    api: Api, served: dict[str, Any], change: dict[str, Any], says: str
) -> None:
    body = {
        "name": "bad",
        "task": "text-intent",
        "url": served["server"].url,
        "model_name": "intents",
        "labels": LABELS,
        **change,
    }
    r = register(api, **{k: v for k, v in body.items() if v is not None})
    assert r.status_code == 422, r.text
    assert says in r.json()["message"], r.json()


def test_a_private_address_is_refused_unless_the_operator_allows_it(
    request: pytest.FixtureRequest, tmp_path: Path, served: dict[str, Any]
) -> None:
    request.param = "sqlite"
    with running_api(request, tmp_path, warm_encoder=False) as closed:
        r = register(
            closed,
            name="x",
            task="text-intent",
            url=served["server"].url,
            model_name="intents",
            labels=LABELS,
        )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "outbound_refused"
    assert r.json()["url"] == served["server"].url
    assert "loopback address" in r.json()["message"]
    assert "PARLEY_OUTBOUND__ALLOW_HOSTS" in r.json()["message"]


def test_registering_a_server_that_is_down_is_502_naming_it(api: Api) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = register(api, name="down", task="intent", url=url, model_name="m", labels=["a"])
    assert r.status_code == 502, r.text
    assert r.json()["error"] == "remote_model_failed"
    assert f"remote model server at {url} cannot be reached" in r.json()["message"]


# --- predictions equal scikit-learn's -------------------------------------------------------------


def test_text_predictions_equal_scikit_learns(
    api: Api, intents: dict[str, Any], served: dict[str, Any]
) -> None:
    r = api.client.post(
        f"/v1/models/{intents['id']}/predict",
        json={"texts": PROBES, "num_results": 3},
        headers=api.a,
    )
    assert r.status_code == 200, r.text
    for got, want in zip(r.json()["predictions"], served["expected"]["texts"], strict=True):
        assert probabilities(got, LABELS) == pytest.approx(want, abs=1e-6)
        assert got[0]["label"] == LABELS[int(np.argmax(want))]


def test_image_predictions_equal_scikit_learns(
    api: Api, colours: dict[str, Any], served: dict[str, Any]
) -> None:
    files = [("file", (f"{i}.png", png(p), "image/png")) for i, p in enumerate(served["probe"])]
    r = api.client.post(
        f"/v1/models/{colours['id']}/predict", files=files, data={"num_results": "3"}, headers=api.a
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3
    for got, want in zip(results, served["expected"]["images"], strict=True):
        assert probabilities(got["probabilities"], COLOURS) == pytest.approx(want, abs=1e-6)
    assert [res["probabilities"][0]["label"] for res in results[:2]] == ["red", "blue"]


def test_parse_aliases_and_rasa_parse_use_the_remote_model(
    api: Api, intents: dict[str, Any], served: dict[str, Any]
) -> None:
    want = served["expected"]["texts"][1]  # "where is my parcel"
    r = api.client.put("/v1/aliases/production", json={"model_id": intents["id"]}, headers=api.a)
    assert r.status_code in (200, 201), r.text
    via_alias = api.client.post(
        "/v1/models/production/predict", json={"text": PROBES[1]}, headers=api.a
    )
    assert via_alias.status_code == 200, via_alias.text
    assert via_alias.json()["model_id"] == intents["id"]
    assert probabilities(via_alias.json()["predictions"], LABELS) == pytest.approx(want, abs=1e-6)
    for path in (f"/v1/models/{intents['id']}/parse", "/model/parse"):
        parsed = api.client.post(path, json={"text": PROBES[1]}, headers=api.a)
        assert parsed.status_code == 200, parsed.text
        body = parsed.json()
        assert body["intent"]["name"] == "track_order" and body["model_id"] == intents["id"]
        ranking = {i["name"]: i["confidence"] for i in body["intent_ranking"]}
        assert [ranking[label] for label in LABELS] == pytest.approx(want, abs=1e-6)


def test_a_bot_parses_with_the_remote_model_and_usage_is_recorded(
    api: Api, intents: dict[str, Any]
) -> None:
    bot = {
        "name": "remote-nlu",
        "nlu": {"model": intents["id"]},
        "responses": {"utter_track": [{"text": "Let me look up your order."}]},
        "flows": {"track": {"intents": ["track_order"], "steps": [{"reply": "utter_track"}]}},
    }
    created = api.client.post("/v1/bots", json=bot, headers=api.a)
    assert created.status_code == 201, created.text

    def predictions() -> float:
        report = api.client.get("/v1/usage", params={"granularity": "hour"}, headers=api.a)
        assert report.status_code == 200, report.text
        return sum(
            e["value"]
            for e in report.json()["entries"]
            if e["metric"] == "predictions" and e.get("model_id") == intents["id"]
        )

    before = predictions()
    r = api.client.post(
        f"/v1/bots/{created.json()['id']}/webhooks/rest",
        json={"sender": "ann", "message": "where is my parcel"},
        headers=api.a,
    )
    assert r.status_code == 200, r.text
    assert [m.get("text") for m in r.json()] == ["Let me look up your order."]
    assert predictions() == before + 1


def test_training_only_endpoints_are_4xx_for_a_remote_model(
    api: Api, intents: dict[str, Any]
) -> None:
    model_id = intents["id"]
    for method, path in (
        ("GET", f"/v1/models/{model_id}/plots/confusion-matrix.svg"),
        ("GET", f"/v1/models/{model_id}/plots/learning-curve.svg"),
        ("GET", f"/v1/models/{model_id}/held-out"),
        ("POST", f"/v1/models/{model_id}/cancel"),
    ):
        r = api.client.request(method, path, headers=api.a)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        if "cancel" in path:
            assert r.json()["message"].endswith("only queued or running jobs cancel")
        else:
            assert "it runs on your own model server" in r.json()["message"], r.json()


def test_an_out_of_scope_threshold_applies_to_a_remote_intent_model(
    api: Api, intents: dict[str, Any], served: dict[str, Any]
) -> None:
    model_id, top = intents["id"], max(served["expected"]["texts"][1])
    r = api.client.patch(
        f"/v1/models/{model_id}", json={"out_of_scope_threshold": 0.99}, headers=api.a
    )
    assert r.status_code == 200, r.text
    try:
        flagged = api.client.post(
            f"/v1/models/{model_id}/predict", json={"text": PROBES[1]}, headers=api.a
        ).json()
        assert flagged["out_of_scope"] is True, flagged
        assert flagged["predictions"][0] == {
            "label": "out_of_scope",
            "probability": pytest.approx(1 - top, abs=1e-6),
        }
    finally:
        r = api.client.patch(
            f"/v1/models/{model_id}", json={"out_of_scope_threshold": None}, headers=api.a
        )
        assert r.status_code == 200, r.text
    r = api.client.post(f"/v1/models/{model_id}/predict", json={"text": PROBES[1]}, headers=api.a)
    assert r.json()["out_of_scope"] is False


# --- faults --------------------------------------------------------------------------------------


def test_a_stopped_server_is_502_naming_it_and_other_models_keep_serving(
    api: Api, intents: dict[str, Any], served: dict[str, Any], fake: tuple[str, Any]
) -> None:
    url, _ = fake
    fine = register(
        api, name="fine", task="text-intent", url=url, model_name="fine", labels=["no", "yes"]
    )
    assert fine.status_code == 201, fine.text
    server = served["server"]
    server.stop()
    try:
        r = api.client.post(
            f"/v1/models/{intents['id']}/predict", json={"text": "hi"}, headers=api.a
        )
        assert r.status_code == 502, r.text
        assert r.json()["error"] == "remote_model_failed"
        assert server.url in r.json()["message"] and "cannot be reached" in r.json()["message"]
        other = api.client.post(
            f"/v1/models/{fine.json()['id']}/predict", json={"text": "hi"}, headers=api.a
        )
        assert other.status_code == 200, other.text
        assert other.json()["predictions"][0] == {"label": "yes", "probability": 0.75}
    finally:
        server.start()
    again = api.client.post(
        f"/v1/models/{intents['id']}/predict", json={"text": PROBES[0]}, headers=api.a
    )
    assert again.status_code == 200, again.text
    want = served["expected"]["texts"][0]
    assert probabilities(again.json()["predictions"], LABELS) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(
    ("model_name", "says"),
    [
        ("slow", "did not answer within 1.5 s"),
        ("broken", "answered 500: model exploded"),
        ("garbage", "not a V2 inference response"),
    ],
)
def test_a_failing_server_is_502_naming_it(
    api: Api, fake: tuple[str, Any], model_name: str, says: str
) -> None:
    url, _ = fake
    created = register(
        api, name=model_name, task="intent", url=url, model_name=model_name, labels=["a", "b"]
    )
    assert created.status_code == 201, created.text
    r = api.client.post(
        f"/v1/models/{created.json()['id']}/predict", json={"text": "hi"}, headers=api.a
    )
    assert r.status_code == 502, r.text
    assert r.json()["error"] == "remote_model_failed"
    assert url in r.json()["message"] and says in r.json()["message"], r.json()


def test_headers_are_sent_and_delete_removes_the_model(api: Api, fake: tuple[str, Any]) -> None:
    url, seen = fake
    created = register(
        api,
        name="with token",
        task="intent",
        url=url,
        model_name="fine",
        labels=["no", "yes"],
        headers={"Authorization": "Bearer abc123"},
    )
    assert created.status_code == 201, created.text
    model_id = created.json()["id"]
    seen.clear()
    r = api.client.post(f"/v1/models/{model_id}/predict", json={"text": "hi"}, headers=api.a)
    assert r.status_code == 200, r.text
    assert [h.get("Authorization") for h in seen] == ["Bearer abc123"]
    assert api.client.delete(f"/v1/models/{model_id}", headers=api.b).status_code == 404
    assert api.client.delete(f"/v1/models/{model_id}", headers=api.a).status_code == 204
    assert api.client.get(f"/v1/models/{model_id}", headers=api.a).status_code == 404
    r = api.client.post(f"/v1/models/{model_id}/predict", json={"text": "hi"}, headers=api.a)
    assert r.status_code == 404, r.text
