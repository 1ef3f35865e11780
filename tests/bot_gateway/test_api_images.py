"""Image datasets, image models and image predictions through the real API: upload a zip, train
a head on EfficientNet-Lite0 features, predict from multipart files and base64, the pre-built
ImageNet classifier, multi-label models, examples with their images, and bad input."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.bot_gateway.conftest import Api, running_api
from tests.conftest import DB_KINDS
from tests.support.images import encode, folder_zip, shape_image, zip_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=DB_KINDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    limits = {"max_upload_bytes": 5_000_000, "max_image_pixels": 2_000_000}
    tmp = tmp_path_factory.mktemp("images")
    with running_api(request, tmp, warm_encoder=False, limits=limits) as api:
        yield api


@pytest.fixture(scope="module")
def shapes(api: Api) -> dict[str, Any]:
    """Tenant A's ``image`` dataset (3 shapes x 8) and the lite0-head model trained on it."""
    r = api.upload(folder_zip(8), name="shapes", type="image", filename="shapes.zip")
    assert r.status_code == 201, r.text
    dataset = r.json()
    model = api.train(dataset["id"], params={"augment_views": 2})
    assert model["status"] == "succeeded", model["failure_message"]
    return {"dataset": dataset, "model": model}


def counts(dataset: dict[str, Any]) -> dict[str, int]:
    return {x["name"]: x["num_examples"] for x in dataset["labels"]}


def predict_files(api: Api, model: str, *images: bytes, headers: Any = None, **form: str) -> Any:
    files = [("file", (f"img{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    return api.client.post(
        f"/v1/models/{model}/predict", files=files, data=form, headers=headers or api.a
    )


def test_an_image_dataset_trains_a_classifier_that_predicts(
    api: Api, shapes: dict[str, Any]
) -> None:
    dataset, model = shapes["dataset"], shapes["model"]
    assert dataset["status"] == "ready" and dataset["num_examples"] == 24
    assert counts(dataset) == {"circle": 8, "square": 8, "triangle": 8}
    assert model["backend"] == "lite0-head" and model["task"] == "image-classification"
    metrics = model["metrics"]
    assert metrics["accuracy"] >= 0.8 and "confusion_matrix" in metrics
    curve = api.client.get(f"/v1/models/{model['id']}/learning-curve", headers=api.a).json()
    assert len(curve["points"]) == 60 and curve["points"][-1]["validation_accuracy"] >= 0.8
    # unseen images, one per request and several in one request
    for kind in ("circle", "square", "triangle"):
        r = predict_files(api, model["id"], encode(shape_image(kind, 9000)))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["probabilities"][0]["label"] == kind
        assert body["image"] == {"width": 160, "height": 120, "sha256": body["image"]["sha256"]}
    batch = predict_files(
        api, model["id"], *(encode(shape_image(k, 9100)) for k in ("triangle", "circle"))
    ).json()
    assert [res["probabilities"][0]["label"] for res in batch["results"]] == [
        "triangle",
        "circle",
    ]
    b64 = base64.b64encode(encode(shape_image("square", 9200), "PNG")).decode()
    r = api.client.post(
        f"/v1/models/{model['id']}/predict",
        json={"image": f"data:image/png;base64,{b64}", "num_results": 2},
        headers=api.a,
    )
    assert r.status_code == 200, r.text
    assert r.json()["probabilities"][0]["label"] == "square"
    assert len(r.json()["probabilities"]) == 2


def test_examples_show_their_images_and_feedback_is_kept_apart(
    api: Api, shapes: dict[str, Any]
) -> None:
    dataset_id = shapes["dataset"]["id"]
    page = api.client.get(f"/v1/datasets/{dataset_id}/examples?limit=2", headers=api.a).json()
    first = page["examples"][0]
    assert first["label"] == "circle" and first["file"].startswith("circle/")
    assert (first["width"], first["height"], first["source"]) == (160, 120, "import")
    image = api.client.get(first["image_url"], headers=api.a)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content[:2] == b"\xff\xd8"
    assert api.client.get(first["image_url"], headers=api.b).status_code == 404
    wrong = encode(shape_image("circle", 777))
    r = api.client.post(
        f"/v1/datasets/{dataset_id}/examples",
        files={"file": ("wrong.jpg", wrong, "image/jpeg")},
        data={"label": "circle", "source": "feedback"},
        headers=api.a,
    )
    assert r.status_code == 201, r.text
    assert r.json()["added"] == 1 and r.json()["dataset"]["num_examples"] == 25
    again = api.client.post(
        f"/v1/datasets/{dataset_id}/examples",
        files={"file": ("wrong.jpg", wrong, "image/jpeg")},
        data={"label": "circle", "source": "feedback"},
        headers=api.a,
    )
    assert again.json()["duplicates"] == 1
    listed = api.client.get(f"/v1/datasets/{dataset_id}/examples?offset=24", headers=api.a).json()[
        "examples"
    ]
    assert [e["source"] for e in listed] == ["feedback"]
    plain = api.train(dataset_id, params={"augment_views": 0, "refit_on_all": False})
    with_fb = api.train(
        dataset_id, params={"augment_views": 0, "refit_on_all": False, "with_feedback": True}
    )
    total = lambda m: m["metrics"]["num_evaluated"] + m["metrics"]["train_examples"]  # noqa: E731
    assert (total(plain), total(with_fb)) == (24, 25)
    bad = api.client.post(
        f"/v1/datasets/{dataset_id}/examples",
        files={"file": ("x.jpg", b"not an image", "image/jpeg")},
        data={"label": "circle"},
        headers=api.a,
    )
    assert bad.status_code == 422 and "x.jpg" in bad.json()["message"]


def test_prebuilt_image_answers_without_training(api: Api) -> None:
    r = predict_files(api, "prebuilt-image", encode(shape_image("circle", 5)), headers=api.b)
    assert r.status_code == 200, r.text
    probabilities = r.json()["probabilities"]
    assert len(probabilities) == 5
    assert probabilities[0]["probability"] >= probabilities[-1]["probability"]
    names = {
        b["name"] for b in api.client.get("/v1/backends", headers=api.a).json()["builtin_models"]
    }
    assert "prebuilt-image" in names


def test_a_multi_label_dataset_trains_per_label_thresholds(api: Api) -> None:
    files, rows = {}, ["file,labels"]
    for i in range(10):
        for combo in (("circle",), ("square",), ("circle", "square")):
            kind = combo[0] if len(combo) == 1 else ("circle" if i % 2 else "square")
            name = f"{'-'.join(combo)}_{i}.jpg"
            img = shape_image(kind, 100 * i + len(combo))
            if len(combo) == 2:  # both shapes: paste the other one in a corner
                other = shape_image("square" if kind == "circle" else "circle", 50 * i + 3)
                img.paste(other.resize((70, 50)), (0, 0))
            files[name] = encode(img)
            rows.append(f"{name},{'|'.join(combo)}")
    files["labels.csv"] = "\n".join(rows).encode()
    r = api.upload(zip_bytes(files), name="multi", type="image-multi-label", filename="m.zip")
    assert r.status_code == 201, r.text
    assert counts(r.json()) == {"circle": 20, "square": 20}
    model = api.train(r.json()["id"], params={"augment_views": 1})
    assert model["status"] == "succeeded", model["failure_message"]
    assert model["backend"] == "lite0-multi-label"
    metrics = model["metrics"]
    assert metrics["map"] > 0.7 and set(metrics["per_label"]) == {"circle", "square"}
    assert all(0.05 <= v["threshold"] <= 0.95 for v in metrics["per_label"].values())
    body = predict_files(api, model["id"], encode(shape_image("circle", 4242))).json()
    assert "circle" in body["labels"]


def test_bad_image_requests_get_clear_errors(api: Api, shapes: dict[str, Any]) -> None:
    model_id = shapes["model"]["id"]
    r = predict_files(api, model_id, b"GIF89a but not really")
    assert r.status_code == 422 and "img0.jpg" in r.json()["message"]
    r = api.client.post(
        f"/v1/models/{model_id}/predict", json={"images": ["@@@notbase64"]}, headers=api.a
    )
    assert r.status_code == 422 and "images[0]" in r.json()["message"]
    r = api.client.post(f"/v1/models/{model_id}/predict", json={"text": "hi"}, headers=api.a)
    assert r.status_code == 422 and "send images" in r.json()["message"]
    r = api.client.post(
        f"/v1/models/{model_id}/predict", json={"url": "http://127.0.0.1/x.jpg"}, headers=api.a
    )
    assert r.status_code == 403 and "by URL is off" in r.json()["message"]
    huge = encode(shape_image("circle", 1).resize((2000, 1500)), "PNG")
    r = predict_files(api, model_id, huge)
    assert r.status_code == 422 and "over the limit" in r.json()["message"]
    assert (
        predict_files(api, model_id, encode(shape_image("circle", 1)), headers=api.b).status_code
        == 404
    )
    r = predict_files(api, model_id, *[encode(shape_image("circle", i)) for i in range(17)])
    assert r.status_code == 422 and "at most 16" in r.json()["message"]
    evil = zip_bytes({"../../escape/a.jpg": encode(shape_image("circle", 1))})
    r = api.upload(evil, name="evil", type="image", filename="evil.zip")
    assert r.status_code == 422 and "'..'" in r.json()["message"]
    listed = api.client.get("/v1/datasets", headers=api.a).json()
    assert "evil" not in [d["name"] for d in listed]
    r = api.client.post(
        "/v1/models/prebuilt-image/predict",
        files={"file": ("a.jpg", encode(shape_image("circle", 1)), "image/jpeg")},
        data={"engine": "tesseract"},
        headers=api.a,
    )
    assert r.status_code == 422 and "prebuilt-ocr" in r.json()["message"]
    assert json.loads(api.client.get("/v1/health").text)["status"] == "ok"


def test_the_python_client_sends_image_files(api: Api, shapes: dict[str, Any], tmp_path) -> None:

    paths = []
    for kind in ("square", "circle"):
        path = tmp_path / f"{kind}.png"
        shape_image(kind, 31337).save(path)
        paths.append(path)

    with api.python_client() as client:
        one = client.predict_images(shapes["model"]["id"], paths[0], num_results=1)
        assert [p["label"] for p in one["probabilities"]] == ["square"]
        both = client.predict_images(shapes["model"]["id"], paths)
        assert [r["probabilities"][0]["label"] for r in both["results"]] == ["square", "circle"]


def test_ocr_reads_a_label_through_the_shortcut_and_the_model_route(api: Api) -> None:
    from tests.vision.test_ocr import render

    lines = ["Order ORD-2026-48213", "Contact: ana@example.com", "Phone +44 20 7946 0958"]
    image, _ = render([(20, 20 + 50 * i, text) for i, text in enumerate(lines)])
    label = encode(image, "PNG")
    r = api.client.post(
        "/v1/ocr",
        files={"file": ("label.png", label, "image/png")},
        data={"task": "contact"},
        headers=api.b,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == "prebuilt-ocr" and body["engine"] == "auto"  # the default
    assert "ORD-2026-48213" in body["text"] and len(body["lines"]) == 3
    assert {line["engine"] for line in body["lines"]} <= {"rapidocr", "tesseract"}
    assert body["lines"][0]["box"]["x_min"] < body["lines"][0]["box"]["x_max"]
    emails = [e for e in body["entities"] if e["entity"] == "email"]
    assert emails and body["text"][emails[0]["start"] : emails[0]["end"]] == "ana@example.com"
    r = api.client.post(
        "/v1/models/prebuilt-ocr/predict",
        json={"image": base64.b64encode(label).decode(), "engine": "tesseract"},
        headers=api.a,
    )
    assert r.status_code == 200, r.text
    assert r.json()["engine"] == "tesseract" and "48213" in r.json()["text"]
    assert {line["engine"] for line in r.json()["lines"]} == {"tesseract"}
    r = api.client.post(
        "/v1/ocr",
        files={"file": ("l.png", label, "image/png")},
        data={"engine": "easyocr"},
        headers=api.a,
    )
    assert r.status_code == 422, r.text
    assert "known: auto, rapidocr, tesseract" in r.json()["message"]


def test_a_detection_dataset_trains_a_detector_that_finds_boxes(api: Api) -> None:
    import numpy as np

    from tests.support.images import detection_scene, detection_zip, draw_object

    r = api.upload(detection_zip(24), name="boxes", type="image-detection", filename="d.zip")
    assert r.status_code == 201, r.text
    dataset = r.json()
    assert dataset["num_examples"] == 24 and set(counts(dataset)) == {"square", "disc"}
    model = api.train(
        dataset["id"],
        params={
            "epochs": 8,
            "min_steps": 0,
            "min_size": 160,
            "max_size": 192,
            "refit_on_all": False,
        },
    )
    assert model["status"] == "succeeded", model["failure_message"]
    assert model["backend"] == "faster-rcnn-lite0" and model["task"] == "object-detection"
    metrics = model["metrics"]
    assert {"map50", "map", "per_label"} <= set(metrics) and metrics["train_examples"] > 0
    curve = api.client.get(f"/v1/models/{model['id']}/learning-curve", headers=api.a).json()
    assert curve["points"] and all(p["validation_map50"] is not None for p in curve["points"])
    image, _ = detection_scene(np.random.default_rng(999), 0)
    truth = draw_object("square", 70, 40, 60, image)
    big = image.resize((image.width * 2, image.height * 2))  # boxes come back in input pixels
    r = predict_files(api, model["id"], encode(big, "PNG"), min_score="0.3")
    assert r.status_code == 200, r.text
    found = r.json()["probabilities"]
    assert found and found[0]["label"] == "square"
    box = found[0]["box"]
    assert (
        abs(box["x_min"] - 2 * truth["x_min"]) < 20 and abs(box["y_max"] - 2 * truth["y_max"]) < 20
    )
