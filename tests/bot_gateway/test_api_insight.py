"""Model insight over HTTP with a real worker: every chart a tiny trained model has, as valid
SVG and PNG; the confusion matrix's clickable cell ids; the held-out examples behind each
cell; which charts a model does not have (422, naming those it has), unknown kinds and
models (404), models not succeeded or trained before held-out examples were kept (409); a
dataset's label distribution; ``parley models plot`` writing a PNG."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.bot_gateway.conftest import Api, running_api
from tests.conftest import DB_KINDS
from tests.support.data import intent_csv, intent_rows
from tests.support.images import encode, folder_zip, shape_image, zip_bytes

pytestmark = pytest.mark.slow

SVG_NS = "{http://www.w3.org/2000/svg}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INTENT_KINDS = ("confusion-matrix", "learning-curve", "out-of-scope", "per-label")


@pytest.fixture(scope="module", params=DB_KINDS[:1])
def where(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, Path]]:
    tmp = tmp_path_factory.mktemp("insight")
    limits = {"max_upload_bytes": 5_000_000}
    with running_api(request, tmp, limits=limits) as api:
        yield api, tmp


@pytest.fixture(scope="module")
def api(where: tuple[Api, Path]) -> Api:
    return where[0]


@pytest.fixture(scope="module")
def intent(api: Api) -> dict[str, Any]:
    dataset = api.upload(intent_csv(), name="intents").json()
    model = api.train(dataset["id"], params={"epochs": 30})
    assert model["status"] == "succeeded", model["failure_message"]
    return model


@pytest.fixture(scope="module")
def shapes(api: Api) -> dict[str, Any]:
    r = api.upload(folder_zip(6), name="shapes", type="image", filename="shapes.zip")
    assert r.status_code == 201, r.text
    model = api.train(r.json()["id"], params={"augment_views": 1})
    assert model["status"] == "succeeded", model["failure_message"]
    return model


def chart(api: Api, model_id: str, name: str, **params: Any) -> httpx.Response:
    return api.client.get(f"/v1/models/{model_id}/plots/{name}", params=params, headers=api.a)


def svg(response: httpx.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.headers["cache-control"] == "private"
    root = ET.fromstring(response.content)  # well-formed XML, or this raises
    assert root.tag == f"{SVG_NS}svg"
    return root


def ids(root: ET.Element) -> set[str]:
    return {el.attrib["id"] for el in root.iter() if "id" in el.attrib}


def test_every_chart_of_an_intent_model_is_drawn_as_svg_and_png(
    api: Api, intent: dict[str, Any]
) -> None:
    for kind in INTENT_KINDS:
        root = svg(chart(api, intent["id"], f"{kind}.svg"))
        assert len(list(root.iter(f"{SVG_NS}path"))) > 3, kind  # something was drawn
        png = chart(api, intent["id"], f"{kind}.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png", kind
        assert Image.open(io.BytesIO(png.content)).size[0] > 300, kind
    text = "".join(svg(chart(api, intent["id"], "per-label.svg")).itertext())
    assert all(label in text for label in intent["metrics"]["per_label"])
    oos = "".join(svg(chart(api, intent["id"], "out-of-scope.svg")).itertext())
    assert f"threshold {intent['metrics']['out_of_scope']['threshold']:.3f}" in oos


def test_confusion_matrix_cells_carry_ids_in_the_metrics_order(
    api: Api, intent: dict[str, Any]
) -> None:
    matrix = intent["metrics"]["confusion_matrix"]
    root = svg(chart(api, intent["id"], "confusion-matrix.svg"))
    n = len(matrix["labels"])
    cells = {f"cell-{i}-{j}" for i in range(n) for j in range(n)}
    assert cells <= ids(root)
    text = list(root.itertext())
    assert all(label in text for label in matrix["labels"])  # tick names
    # counts are written in the cells: the diagonal's non-zero counts among the texts
    assert all(str(matrix["matrix"][i][i]) in text for i in range(n) if matrix["matrix"][i][i])
    # past max_labels, the most confused labels stay, with their own indices
    m = matrix["matrix"]
    errors = [sum(m[i]) + sum(row[i] for row in m) - 2 * m[i][i] for i in range(n)]
    top = sorted(sorted(range(n), key=lambda i: (-errors[i], i))[:2])
    two = ids(svg(chart(api, intent["id"], "confusion-matrix.svg", max_labels=2)))
    assert {c for c in two if c.startswith("cell-")} == {f"cell-{i}-{j}" for i in top for j in top}


def test_held_out_examples_behind_each_cell_add_up_to_its_count(
    api: Api, intent: dict[str, Any]
) -> None:
    matrix = intent["metrics"]["confusion_matrix"]
    texts = dict((text, label) for text, label in intent_rows())
    everything = api.client.get(f"/v1/models/{intent['id']}/held-out", headers=api.a).json()
    assert (
        everything["total"] == sum(map(sum, matrix["matrix"])) == intent["metrics"]["num_evaluated"]
    )
    for i, label in enumerate(matrix["labels"]):
        for j, predicted in enumerate(matrix["labels"]):
            r = api.client.get(
                f"/v1/models/{intent['id']}/held-out",
                params={"label": label, "predicted": predicted, "limit": 1000},
                headers=api.a,
            )
            assert r.status_code == 200, r.text
            page = r.json()
            assert page["total"] == matrix["matrix"][i][j] == len(page["examples"])
            for ex in page["examples"]:
                assert ex["label"] == label and ex["predicted"] == predicted
                assert texts[ex["text"]] == label and 0 < ex["confidence"] <= 1
                assert ex["image_url"] is None
    first = api.client.get(
        f"/v1/models/{intent['id']}/held-out", params={"offset": 1, "limit": 2}, headers=api.a
    ).json()
    assert first["offset"] == 1 and first["limit"] == 2
    assert [e["example_id"] for e in first["examples"]] == [
        e["example_id"] for e in everything["examples"][1:3]
    ]


def test_charts_a_model_does_not_have_and_models_that_are_not_there(
    api: Api, intent: dict[str, Any]
) -> None:
    r = chart(api, intent["id"], "ap-per-label.svg")
    assert r.status_code == 422
    assert "confusion-matrix, learning-curve, out-of-scope, per-label" in r.json()["message"]
    r = chart(api, intent["id"], "roc.svg")
    assert r.status_code == 404 and "confusion-matrix" in r.json()["message"]
    assert chart(api, intent["id"], "per-label.jpg").status_code == 422
    assert chart(api, "mdl_doesnotexist", "per-label.svg").status_code == 404
    # another tenant sees none of it
    other = api.client.get(f"/v1/models/{intent['id']}/plots/per-label.svg", headers=api.b)
    assert other.status_code == 404
    assert api.client.get(f"/v1/models/{intent['id']}/held-out", headers=api.b).status_code == 404
    # a model that did not succeed has no charts yet
    r = api.client.post(
        "/v1/models", json={"dataset_id": intent["dataset_id"]}, headers=api.a
    ).json()
    api.client.post(f"/v1/models/{r['id']}/cancel", headers=api.a)
    assert api.wait_model(r["id"])["status"] == "cancelled"
    r = chart(api, r["id"], "confusion-matrix.svg")
    assert r.status_code == 409 and "cancelled" in r.json()["message"]


def test_a_model_trained_before_held_out_examples_were_kept_asks_for_a_retrain(
    where: tuple[Api, Path],
) -> None:
    api, tmp = where
    dataset = api.upload(intent_csv(), name="older").json()
    model = api.train(dataset["id"], params={"epochs": 5})
    (stored,) = tmp.rglob(f"{model['id']}/*/held_out.json")
    stored.unlink()  # what a model trained before this release has
    r = api.client.get(f"/v1/models/{model['id']}/held-out", headers=api.a)
    assert r.status_code == 409 and "retrain to see held-out examples" in r.json()["message"]
    svg(chart(api, model["id"], "confusion-matrix.svg"))  # its charts are still there


def test_a_dataset_label_distribution_chart(api: Api) -> None:
    dataset = api.upload(intent_csv(), name="distribution").json()
    r = api.client.get(f"/v1/datasets/{dataset['id']}/plots/labels.svg", headers=api.a)
    text = "".join(svg(r).itertext())
    for count in dataset["labels"]:
        assert count["name"] in text and str(count["num_examples"]) in text
    png = api.client.get(f"/v1/datasets/{dataset['id']}/plots/labels.png", headers=api.a)
    assert png.status_code == 200 and png.content.startswith(PNG_MAGIC)
    r = api.client.get(f"/v1/datasets/{dataset['id']}/plots/labels.svg", headers=api.b)
    assert r.status_code == 404
    added = api.client.post(  # the chart (cached by its counts) follows the dataset
        f"/v1/datasets/{dataset['id']}/examples",
        json=[{"text": "a brand new kind of question", "label": "brand_new_label"}],
        headers=api.a,
    )
    assert added.status_code == 201, added.text
    r = api.client.get(f"/v1/datasets/{dataset['id']}/plots/labels.svg", headers=api.a)
    assert "brand_new_label" in "".join(svg(r).itertext())


def test_an_image_classifier_has_its_charts_and_held_out_images(
    api: Api, shapes: dict[str, Any]
) -> None:
    for kind in ("confusion-matrix", "learning-curve", "per-label"):
        svg(chart(api, shapes["id"], f"{kind}.svg"))
    r = chart(api, shapes["id"], "out-of-scope.svg")
    assert r.status_code == 422 and "out-of-scope" not in r.json()["message"].split(": ")[-1]
    page = api.client.get(f"/v1/models/{shapes['id']}/held-out", headers=api.a).json()
    assert page["total"] == shapes["metrics"]["num_evaluated"] > 0
    example = page["examples"][0]
    image = api.client.get(example["image_url"], headers=api.a)
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).width > 0


def test_a_multi_label_classifier_charts_average_precision_and_keeps_no_cells(api: Api) -> None:
    files, rows = {}, ["file,labels"]
    for i in range(6):
        for kind in ("circle", "square"):
            files[f"{kind}_{i}.jpg"] = encode(shape_image(kind, 10 * i + len(kind)))
            rows.append(f"{kind}_{i}.jpg,{kind}")
    files["labels.csv"] = "\n".join(rows).encode()
    r = api.upload(zip_bytes(files), name="multi", type="image-multi-label", filename="m.zip")
    assert r.status_code == 201, r.text
    model = api.train(r.json()["id"], params={"augment_views": 1})
    assert model["status"] == "succeeded", model["failure_message"]
    text = "".join(svg(chart(api, model["id"], "ap-per-label.svg")).itertext())
    assert "circle" in text and "square" in text
    svg(chart(api, model["id"], "per-label.svg"))
    r = chart(api, model["id"], "confusion-matrix.svg")
    assert r.status_code == 422 and "ap-per-label" in r.json()["message"]
    r = api.client.get(f"/v1/models/{model['id']}/held-out", headers=api.a)
    assert r.status_code == 422 and "single-label classifiers" in r.json()["message"]


def test_cli_models_plot_writes_a_png(
    api: Api, intent: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parley import cli

    monkeypatch.setattr(cli, "_client", api.python_client)
    out = tmp_path / "cm.png"
    result = CliRunner().invoke(
        cli.app, ["models", "plot", intent["id"], "--kind", "confusion-matrix", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert Image.open(out).size[0] > 300
    result = CliRunner().invoke(
        cli.app,
        ["models", "plot", intent["id"], "--kind", "ap-per-label", "-o", str(tmp_path / "x.svg")],
    )
    assert result.exit_code == 1 and "per-label" in result.output
    assert not (tmp_path / "x.svg").exists()
    result = CliRunner().invoke(
        cli.app,
        ["models", "plot", intent["id"], "--kind", "per-label", "-o", str(tmp_path / "x.gif")],
    )
    assert result.exit_code == 1 and "svg or png" in result.output


def test_moving_the_threshold_redraws_the_out_of_scope_chart(
    api: Api, intent: dict[str, Any]
) -> None:
    before = "".join(svg(chart(api, intent["id"], "out-of-scope.svg")).itertext())
    r = api.client.patch(
        f"/v1/models/{intent['id']}", json={"out_of_scope_threshold": 0.123}, headers=api.a
    )
    assert r.status_code == 200, r.text
    try:
        after = "".join(svg(chart(api, intent["id"], "out-of-scope.svg")).itertext())
        assert "threshold 0.123" in after and "threshold 0.123" not in before
        calibrated = intent["metrics"]["out_of_scope"]["threshold"]
        assert f"calibrated {calibrated:.3f}" in after
    finally:
        api.client.patch(
            f"/v1/models/{intent['id']}", json={"out_of_scope_threshold": None}, headers=api.a
        )
