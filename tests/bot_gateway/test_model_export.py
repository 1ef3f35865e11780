"""Model exports through the real API (``GET /v1/models/{id}/export?format=onnx``): a trained
embedding-head intent model and lite0 image models (single and multi-label) exported, unzipped
and run with ONNX Runtime alone (``tokenizers`` for the tokenizer, PIL and numpy for the image
preprocessing written here from ``preprocessing.json``), against the server's predictions;
the README's own snippet run too; the 4xx cases, another tenant's 404, the cache, the build
limit's 429, eviction, and ``parley models export``."""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from tokenizers import Tokenizer
from typer.testing import CliRunner

from bot_gateway.services.exports import ModelExports
from core.db import session_scope
from core.ids import new_id
from core.tables import Model
from tests.bot_gateway.conftest import Api, running_api
from tests.conftest import make_settings
from tests.support.data import intent_csv
from tests.support.images import encode, folder_zip, shape_image, zip_bytes

TEXTS = [
    "where is my parcel",
    "hi there",
    "I want my money back",
    "what's the weather on mars",
    "the quick brown fox jumps over the lazy dog",
]
EXPECTED_FILES = {"model.onnx", "labels.json", "preprocessing.json", "README.md", "model_card.md"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    class SQLite:  # one database kind: exports do not depend on it
        param = "sqlite"

    limits = {"max_upload_bytes": 5_000_000, "max_image_pixels": 2_000_000}
    tmp = tmp_path_factory.mktemp("exports")
    with running_api(SQLite, tmp, limits=limits) as api:  # type: ignore[arg-type]
        yield api


@pytest.fixture(scope="module")
def intent(api: Api) -> dict[str, Any]:
    dataset = api.upload(intent_csv(), name="intents").json()
    model = api.train(dataset["id"], name="Shop intents", params={"epochs": 40})
    assert model["status"] == "succeeded", model["failure_message"]
    return model


@pytest.fixture(scope="module")
def shapes(api: Api) -> dict[str, Any]:
    r = api.upload(folder_zip(6), name="shapes", type="image", filename="shapes.zip")
    assert r.status_code == 201, r.text
    model = api.train(r.json()["id"], params={"augment_views": 1})
    assert model["status"] == "succeeded", model["failure_message"]
    assert model["backend"] == "lite0-head"
    return model


def export(api: Api, model_id: str, headers: dict[str, str] | None = None) -> Any:
    return api.client.get(f"/v1/models/{model_id}/export", headers=headers or api.a)


def unzip(data: bytes, into: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(into)
    return into


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])


def readme_snippet(folder: Path) -> str:
    """The README's Python block, less its example call on a file that is not there."""
    readme = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S)
    assert code is not None, readme
    return "\n".join(line for line in code.group(1).splitlines() if not line.startswith("print("))


def run_snippet(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(folder)
    namespace: dict[str, Any] = {}
    exec(compile(readme_snippet(folder), "README.md", "exec"), namespace)  # noqa: S102
    return namespace


# --- intent ----------------------------------------------------------------------------------


def test_an_intent_export_gives_the_servers_probabilities_with_onnxruntime_alone(
    api: Api, intent: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = export(api, intent["id"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == (
        f'attachment; filename="shop-intents-{intent["id"]}-onnx.zip"'
    )
    folder = unzip(r.content, tmp_path)
    assert {p.name for p in folder.iterdir()} == EXPECTED_FILES | {"tokenizer.json"}
    meta = json.loads((folder / "labels.json").read_text())
    prep = json.loads((folder / "preprocessing.json").read_text())
    assert sorted(meta["labels"]) == sorted(intent["labels"])
    threshold = intent["metrics"]["out_of_scope"]["threshold"]
    assert meta["out_of_scope"]["threshold"] == threshold and meta["multi_label"] is False
    assert prep["kind"] == "text" and prep["tokenizer_file"] == "tokenizer.json"
    card = (folder / "model_card.md").read_text()
    assert card.startswith("---") and intent["id"] in card

    # the tokenizer and the graph alone, one text per run, as preprocessing.json says
    tokenizer = Tokenizer.from_file(str(folder / prep["tokenizer_file"]))
    graph = session(folder)
    names = [i.name for i in graph.get_inputs()]
    assert names == prep["inputs"]
    served = api.client.post(
        f"/v1/models/{intent['id']}/predict",
        json={"texts": TEXTS, "num_results": 100},
        headers=api.a,
    ).json()
    for text, answer, flagged in zip(
        TEXTS, served["predictions"], served["out_of_scope"], strict=True
    ):
        enc = tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
        }
        row = graph.run(["probabilities"], {n: feeds[n] for n in names})[0][0]
        assert row.shape == (len(meta["labels"]),)
        server = [p for p in answer if p["label"] != "out_of_scope"]  # the flag, when under
        assert len(server) == len(meta["labels"])
        for p in server:
            assert abs(row[meta["labels"].index(p["label"])] - p["probability"]) < 1e-4, text
        assert flagged == bool(threshold is not None and row.max() < threshold), text

    # the README's snippet, run as written, answers as the server does
    snippet = run_snippet(folder, monkeypatch)
    for text, answer in zip(TEXTS, served["predictions"], strict=True):
        label, probability = snippet["predict"](text)
        assert label == answer[0]["label"], text
        assert abs(probability - answer[0]["probability"]) < 1e-4, text


def test_a_second_export_comes_from_the_cache_with_the_same_bytes(
    api: Api, intent: dict[str, Any]
) -> None:
    exports = api.client.app.state.gateway.exports  # type: ignore[attr-defined]
    first = export(api, intent["id"])
    assert first.status_code == 200
    builds = exports.builds
    started = time.monotonic()
    second = export(api, intent["id"])
    assert second.status_code == 200 and second.content == first.content
    assert exports.builds == builds and time.monotonic() - started < 1.0


def test_a_moved_threshold_makes_a_new_export(api: Api, intent: dict[str, Any]) -> None:
    r = api.client.patch(
        f"/v1/models/{intent['id']}", json={"out_of_scope_threshold": 0.42}, headers=api.a
    )
    assert r.status_code == 200, r.text
    try:
        body = export(api, intent["id"]).content
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            meta = json.loads(z.read("labels.json"))
            readme = z.read("README.md").decode()
        assert meta["out_of_scope"]["threshold"] == 0.42 and "under 0.42" in readme
    finally:
        api.client.patch(
            f"/v1/models/{intent['id']}", json={"out_of_scope_threshold": None}, headers=api.a
        )


# --- images ----------------------------------------------------------------------------------


def prepare(path: Path, prep: dict[str, Any]) -> np.ndarray:
    """An RGB image file as the graph's input, from preprocessing.json's numbers alone."""
    image = Image.open(path).convert("RGB")
    size, shorter = prep["size"], prep["resize_shorter_side"]
    w, h = image.size
    nw, nh = max(size, round(w * shorter / min(w, h))), max(size, round(h * shorter / min(w, h)))
    image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    x = (np.asarray(image, dtype=np.float32) - prep["mean"]) / prep["std"]
    return x.transpose(2, 0, 1)


def check_image_export(
    api: Api, model: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    r = export(api, model["id"])
    assert r.status_code == 200, r.text
    folder = unzip(r.content, tmp_path / "export")
    assert {p.name for p in folder.iterdir()} == EXPECTED_FILES
    meta = json.loads((folder / "labels.json").read_text())
    prep = json.loads((folder / "preprocessing.json").read_text())
    assert prep["kind"] == "image" and "out_of_scope" not in meta
    images = []
    for i, kind in enumerate(("circle", "square", "triangle", "circle")):
        path = tmp_path / f"{i}.png"
        shape_image(kind, 7000 + i, size=(150 + 40 * i, 110 + 7 * i)).save(path)
        images.append(path)
    rows = session(folder).run(
        ["probabilities"], {prep["input"]: np.stack([prepare(p, prep) for p in images])}
    )[0]
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in images]
    served = api.client.post(
        f"/v1/models/{model['id']}/predict",
        files=files,
        data={"num_results": "100"},
        headers=api.a,
    ).json()["results"]
    snippet = run_snippet(folder, monkeypatch)
    for path, row, result in zip(images, rows, served, strict=True):
        assert len(result["probabilities"]) == len(meta["labels"])
        for p in result["probabilities"]:
            assert abs(row[meta["labels"].index(p["label"])] - p["probability"]) < 1e-4
        assert np.abs(snippet["probabilities"]([path])[0] - row).max() < 1e-5
        if meta["multi_label"]:
            assert snippet["predict"](path) == result["labels"]
        else:
            assert snippet["predict"](path)[0] == result["probabilities"][0]["label"]
    return meta


@pytest.mark.slow
def test_an_image_export_gives_the_servers_probabilities(
    api: Api, shapes: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = check_image_export(api, shapes, tmp_path, monkeypatch)
    assert sorted(meta["labels"]) == ["circle", "square", "triangle"]
    assert meta["multi_label"] is False and meta["thresholds"] is None


@pytest.mark.slow
def test_a_multi_label_export_carries_its_thresholds(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, rows = {}, ["file,labels"]
    for i in range(6):
        for combo in (("circle",), ("square",), ("circle", "square")):
            kind = combo[0] if len(combo) == 1 else ("circle" if i % 2 else "square")
            img = shape_image(kind, 100 * i + len(combo))
            if len(combo) == 2:
                other = shape_image("square" if kind == "circle" else "circle", 50 * i + 3)
                img.paste(other.resize((70, 50)), (0, 0))
            name = f"{'-'.join(combo)}_{i}.png"
            files[name] = encode(img, "PNG")
            rows.append(f"{name},{'|'.join(combo)}")
    files["labels.csv"] = "\n".join(rows).encode()
    r = api.upload(zip_bytes(files), name="multi", type="image-multi-label", filename="m.zip")
    assert r.status_code == 201, r.text
    model = api.train(r.json()["id"], params={"augment_views": 1})
    assert model["status"] == "succeeded", model["failure_message"]
    meta = check_image_export(api, model, tmp_path, monkeypatch)
    # the thresholds the server applies (its ``labels`` answers matched them above)
    assert meta["multi_label"] is True and len(meta["thresholds"]) == 2
    assert all(0.05 <= t <= 0.95 for t in meta["thresholds"])


# --- refusals --------------------------------------------------------------------------------


def add_model(api: Api, **fields: Any) -> str:
    """A model row of tenant A written straight into the database (no training)."""
    gateway = api.client.app.state.gateway  # type: ignore[attr-defined]
    model_id = new_id("model")
    with session_scope(gateway.engine) as s:
        s.add(
            Model(
                id=model_id,
                tenant_id=api.a_tenant,
                dataset_id=new_id("dataset"),
                name="row",
                params={},
                **fields,
            )
        )
    return model_id


def test_models_that_cannot_export_get_a_clear_4xx(api: Api, intent: dict[str, Any]) -> None:
    r = export(api, intent["id"], headers=api.b)  # another tenant's model
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert export(api, "mdl_doesnotexist").status_code == 404
    r = api.client.get(f"/v1/models/{intent['id']}/export?format=tflite", headers=api.a)
    assert r.status_code == 422
    r = export(api, "prebuilt-entities")
    assert r.status_code == 422 and "built-in" in r.json()["message"]
    cases = [
        (dict(backend="encoder-ner", task="entities", status="succeeded"), 422, "entities"),
        (
            dict(backend="faster-rcnn-lite0", task="object-detection", status="succeeded"),
            422,
            "object-detection",
        ),
        (dict(backend="remote-oip", task="intent", status="succeeded"), 422, "model server"),
        (dict(backend="embedding-head", task="intent", status="training"), 409, "training"),
        (dict(backend="lite0-head", task="image-classification", status="failed"), 409, "fail"),
    ]
    for fields, status, words in cases:
        r = export(api, add_model(api, **fields))
        assert r.status_code == status, (fields, r.text)
        assert words in r.json()["message"], r.json()
        assert r.json()["error"] == ("not_ready" if status == 409 else "invalid_input")


def test_builds_past_the_limit_get_429_with_retry_after(api: Api, intent: dict[str, Any]) -> None:
    exports: ModelExports = api.client.app.state.gateway.exports  # type: ignore[attr-defined]
    for cached in exports.root.glob(f"{intent['id']}-*.zip"):
        cached.unlink()
    assert exports._slots.acquire(blocking=False)  # another build holds the only slot
    try:
        r = export(api, intent["id"])
        assert r.status_code == 429 and r.json()["error"] == "too_many_requests"
        assert int(r.headers["retry-after"]) > 0
    finally:
        exports._slots.release()
    assert export(api, intent["id"]).status_code == 200


def test_the_least_recently_sent_exports_are_evicted(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, "sqlite://", cache_path=tmp_path / "cache", serving={"export_cache_bytes": 2500}
    )
    exports = ModelExports(settings, store=None)  # type: ignore[arg-type]
    exports.root.mkdir(parents=True)
    paths = [exports.root / f"m{i}.zip" for i in range(4)]
    for i, p in enumerate(paths):
        p.write_bytes(b"x" * 1000)
        t = time.time() - 100 + i
        os.utime(p, (t, t))
    os.utime(paths[0])  # m0 was just sent again: now the most recent
    stale, fresh = exports.root / ".build-dead", exports.root / ".build-running"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    exports._evict(keep=paths[3])
    assert sorted(p.name for p in exports.root.glob("*.zip")) == ["m0.zip", "m3.zip"]
    assert not stale.exists() and fresh.exists()  # a dead process's build folder goes


def test_the_file_name_is_ascii_whatever_the_models_name() -> None:
    from bot_gateway.services.exports import _slug

    assert _slug("Café 東京 intents / v2") == "caf-intents-v2"
    assert _slug("東京") == ""  # then the file is named by the model id alone


def test_cli_models_export_writes_the_zip(
    api: Api, intent: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parley import cli

    monkeypatch.setattr(cli, "_client", api.python_client)
    out = tmp_path / "model.zip"
    result = CliRunner().invoke(cli.app, ["models", "export", intent["id"], "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == export(api, intent["id"]).content
    with zipfile.ZipFile(out) as z:
        assert set(z.namelist()) >= EXPECTED_FILES
    result = CliRunner().invoke(
        cli.app, ["models", "export", "prebuilt-entities", "-o", str(tmp_path / "x.zip")]
    )
    assert result.exit_code == 1 and "built-in" in result.output
    assert not (tmp_path / "x.zip").exists()
