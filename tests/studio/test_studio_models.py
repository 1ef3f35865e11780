"""The Studio's model page, compare and Try it, in real Chromium against a real gateway.

Three models train through the public API at the start (one local worker, in turn): two tiny
intent models on the shop's support texts and a tiny detector of red squares and blue discs.
A builder opens the first intent model's page: headline metrics, a per-label table, the
confusion matrix; clicking a cell (and pressing Enter on another) lists the held-out examples
behind it. The builder moves the out-of-scope threshold and restores it, promotes the model to
``production`` (the alias API confirms), promotes the second over it and rolls back, compares
the two, tries a text on ``production`` (ranked intents, snippets with the ids), a text on
``prebuilt-entities`` (entities marked at their code-point offsets), a label on ``prebuilt-ocr``
and a picture on the detector (lines and boxes drawn inside the picture). Another tenant's
admin gets the not-found page.

Screenshots: ``var/test-artifacts/studio-{model,compare,try,try-image,try-ocr}.png``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tests.connectors.test_widget_browser import Page, expect
from tests.studio.conftest import (
    Studio,
    fits_a_tablet,
    heading_levels,
    shot,
    sign_in,
    skips_no_level,
    wait_for,
)
from tests.support.data import intent_csv, intent_rows
from tests.support.images import (
    detection_scene,
    detection_zip,
    draw_object,
    shipping_label_png,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DETECTOR_PARAMS = {
    "epochs": 6,
    "min_steps": 0,
    "min_size": 160,
    "max_size": 192,
    "refit_on_all": False,
}
# smaller than tests/bot_gateway/test_api_images.py's detector (24 scenes, 8 epochs): 16, 6


@dataclass
class Models:
    intent: dict[str, Any]  # succeeded
    other: dict[str, Any]  # a second intent model, succeeded
    detector_id: str  # trained last; wait for it with ``finished``
    watching: Page  # the detector's page, opened while it waited in the queue

    def labels(self) -> list[str]:
        return list(self.intent["metrics"]["confusion_matrix"]["labels"])


def train(studio: Studio, dataset_id: str, name: str, params: dict[str, Any]) -> str:
    r = studio.api.post(
        "/v1/models", json={"dataset_id": dataset_id, "name": name, "params": params}
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def finished(studio: Studio, model_id: str, timeout: float = 240) -> dict[str, Any]:
    model = wait_for(
        lambda: (
            (m := studio.api.get(f"/v1/models/{model_id}").json())["status"]
            in ("succeeded", "failed", "cancelled")
            and m
        ),
        timeout,
        f"model {model_id} finishing",
    )
    assert model["status"] == "succeeded", model["failure_message"]
    return dict(model)


def upload(studio: Studio, data: bytes, name: str, type_: str, filename: str) -> str:
    r = studio.api.post(
        "/v1/datasets", files={"file": (filename, data)}, data={"name": name, "type": type_}
    )
    assert r.status_code == 201, r.text
    ds = wait_for(
        lambda: (
            (d := studio.api.get(f"/v1/datasets/{r.json()['id']}").json())["status"] != "processing"
            and d
        ),
        60,
        "the dataset import",
    )
    return str(ds["id"])


def inside(box: dict[str, float], image: dict[str, float], slack: float = 1.0) -> bool:
    """``box`` (a bounding box on the page) lies within ``image``'s, to a pixel."""
    return (
        image["x"] - slack <= box["x"]
        and box["x"] + box["width"] <= image["x"] + image["width"] + slack
        and image["y"] - slack <= box["y"]
        and box["y"] + box["height"] <= image["y"] + image["height"] + slack
    )


def builder_page(studio: Studio) -> Page:
    page = studio.open_page()
    sign_in(page, studio.builder.tenant, studio.builder.username, studio.builder.password)
    return page


@pytest.fixture(scope="module")
def models(studio: Studio) -> Iterator[Models]:
    texts = upload(studio, intent_csv(), "support", "text-intent", "support.csv")
    boxes = upload(studio, detection_zip(16), "shapes", "image-detection", "shapes.zip")
    first = train(studio, texts, "support v1", {"epochs": 40})
    second = train(studio, texts, "support v2", {"epochs": 10})
    detector = train(studio, boxes, "shapes", DETECTOR_PARAMS)
    # the detector waits behind both intent models: its page shows the queue, then training
    watching = builder_page(studio)
    watching.goto(f"/studio/models/{detector}")
    expect(watching.get_by_test_id("model-progress")).to_be_visible()
    expect(watching.get_by_test_id("training-status")).to_contain_text(
        re.compile("Queued|Training")
    )
    yield Models(finished(studio, first), finished(studio, second), detector, watching)
    assert not watching.problems, watching.problems  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def page(studio: Studio) -> Iterator[Page]:
    page = builder_page(studio)
    yield page
    assert not page.problems, page.problems  # type: ignore[attr-defined]


def test_a_confusion_matrix_cell_lists_the_held_out_examples_behind_it(
    page: Page, models: Models
) -> None:
    model = models.intent
    matrix = model["metrics"]["confusion_matrix"]["matrix"]
    labels = models.labels()
    page.goto(f"/studio/models/{model['id']}")
    expect(page.get_by_role("heading", level=1)).to_have_text("support v1")
    cards = page.get_by_test_id("headline-metrics")
    expect(cards.locator('[data-metric="accuracy"] dd')).to_have_text(
        f"{model['metrics']['accuracy'] * 100:.1f}%"
    )
    per_label = page.locator("#per-label table")
    expect(per_label.locator("tbody tr")).to_have_count(len(labels))
    per_label.get_by_role("button", name="F1").click()  # sortable: by F1, ascending
    expect(per_label.locator("th", has_text="F1")).to_have_attribute("aria-sort", "ascending")

    # a cell on the diagonal, by mouse: its examples, as many as the matrix counts
    i = max(range(len(labels)), key=lambda k: matrix[k][k])
    cell = page.locator(f"#cell-{i}-{i}")
    expect(cell).to_have_attribute(
        "aria-label", f"true {labels[i]}, predicted {labels[i]}: {matrix[i][i]}"
    )
    cell.click()
    expect(page.get_by_test_id("held-out-title")).to_contain_text(
        f"True {labels[i]}, predicted {labels[i]}"
    )
    expect(page.get_by_test_id("held-out-example")).to_have_count(min(matrix[i][i], 25))
    texts = page.get_by_test_id("held-out-example").locator(".held-out-text").all_inner_texts()
    assert set(texts) <= {t for t, label in intent_rows() if label == labels[i]}, texts

    # another cell by keyboard (focus, Enter); an empty one says so
    j = (i + 1) % len(labels)
    other = page.locator(f"#cell-{i}-{j}")
    other.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("held-out-title")).to_contain_text(
        f"True {labels[i]}, predicted {labels[j]}: {matrix[i][j]} example"
    )
    if matrix[i][j] == 0:
        expect(page.get_by_test_id("held-out")).to_contain_text("No held-out examples")
    expect(page.locator("#learning-curve img")).to_have_js_property("complete", True)
    shot(page, "model")
    assert fits_a_tablet(page)
    assert skips_no_level(levels := heading_levels(page)), levels


def test_the_out_of_scope_threshold_is_moved_and_restored(
    page: Page, studio: Studio, models: Models
) -> None:
    model_id = models.intent["id"]
    page.goto(f"/studio/models/{model_id}")
    page.get_by_test_id("oos-threshold").fill("0.5")
    expect(page.get_by_test_id("oos-preview")).to_contain_text("in-scope accuracy")
    page.get_by_test_id("oos-save").click()
    expect(page.get_by_test_id("oos-facts")).to_contain_text("0.5 (set by hand)")
    oos = studio.api.get(f"/v1/models/{model_id}").json()["metrics"]["out_of_scope"]
    assert (oos["threshold"], oos["method"]) == (0.5, "manual")
    page.get_by_role("button", name="Restore the calibrated threshold").click()
    expect(page.get_by_test_id("oos-facts")).to_contain_text("calibrated")
    oos = studio.api.get(f"/v1/models/{model_id}").json()["metrics"]["out_of_scope"]
    assert oos["method"] != "manual" and oos["threshold"] == oos["calibrated_threshold"]


def test_promote_to_production_then_roll_back(page: Page, studio: Studio, models: Models) -> None:
    first, second = models.intent["id"], models.other["id"]

    def production() -> str | None:
        aliases = {a["name"]: a["model_id"] for a in studio.api.get("/v1/aliases").json()}
        return aliases.get("production")

    page.goto(f"/studio/models/{first}")
    expect(page.get_by_test_id("alias-name")).to_have_value("production")
    page.get_by_test_id("promote").click()
    expect(page.get_by_test_id("alias-result")).to_contain_text("production now serves this model")
    assert production() == first

    page.goto(f"/studio/models/{second}")
    page.get_by_test_id("promote").click()
    expect(page.get_by_test_id("alias-result")).to_contain_text(f"it served {first} before")
    assert production() == second
    page.get_by_role("button", name=f"Roll production back to {first}").click()
    expect(page.get_by_test_id("alias-result")).to_contain_text(f"production now serves {first}")
    assert production() == first


def test_compare_shows_both_models_and_their_differences(page: Page, models: Models) -> None:
    a, b = models.intent, models.other
    page.goto(f"/studio/models/compare?a={a['id']}&b={b['id']}")
    headline = page.locator("#compare-headline tbody tr", has_text="Accuracy")
    cells = headline.locator("td")
    expect(cells.nth(1)).to_have_text(f"{a['metrics']['accuracy'] * 100:.1f}%")
    expect(cells.nth(2)).to_have_text(f"{b['metrics']['accuracy'] * 100:.1f}%")
    diff = (b["metrics"]["accuracy"] - a["metrics"]["accuracy"]) * 100
    expect(cells.nth(3)).to_contain_text(f"{abs(diff):.1f} pts")
    expect(page.locator("#compare-per-label tbody tr")).to_have_count(len(models.labels()))
    shot(page, "compare")


def test_try_a_text_ranks_the_intents_and_shows_the_request(page: Page, models: Models) -> None:
    page.goto("/studio/try?model=production")
    expect(page.get_by_test_id("try-model")).to_have_value("production")
    page.get_by_test_id("try-text").fill("where is my parcel, it has not arrived")
    page.get_by_test_id("try-send").click()
    rows = page.get_by_test_id("ranked-intents").locator("li")
    expect(rows.first).to_have_attribute("data-label", "track_order")
    assert rows.count() == len(models.labels())
    widths = rows.locator(".bar-fill").evaluate_all(
        "els => els.map(e => e.getBoundingClientRect().width / e.parentElement.clientWidth)"
    )
    shares = [float(v.rstrip("%")) / 100 for v in rows.locator(".ranked-value").all_inner_texts()]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    assert all(abs(w - s) < 0.02 for w, s in zip(widths, shares, strict=True))
    curl = page.get_by_test_id("snippet-curl").locator("pre").inner_text()
    assert "/v1/models/production/predict" in curl and "$PARLEY_API_KEY" in curl
    assert "where is my parcel, it has not arrived" in curl
    python = page.get_by_test_id("snippet-python").locator("pre").inner_text()
    assert "httpx.post(" in python and "PARLEY_API_KEY" in python
    javascript = page.get_by_test_id("snippet-javascript").locator("pre").inner_text()
    assert "fetch(" in javascript and "/v1/models/production/predict" in javascript
    shot(page, "try")
    assert fits_a_tablet(page)
    assert skips_no_level(levels := heading_levels(page)), levels


def test_try_prebuilt_entities_marks_them_in_the_text(page: Page) -> None:
    text = "😀 Jo in Berlin: write to jo@example.com"  # an emoji: 1 code point, 2 UTF-16 units
    page.goto("/studio/try?model=prebuilt-entities")
    page.get_by_test_id("try-text").fill(text)
    page.get_by_test_id("try-send").click()
    marks = page.get_by_test_id("entities-text").locator("mark")
    expect(marks.first).to_be_visible()
    found = dict(
        marks.evaluate_all("els => els.map(e => [e.dataset.entity, e.firstChild.textContent])")
    )
    assert found.get("email") == "jo@example.com" and found.get("GPE") == "Berlin", found
    assert (
        page.get_by_test_id("entities-text").evaluate(
            "p => Array.from(p.childNodes).map(n => n.firstChild && n.nodeName === 'MARK'"
            " ? n.firstChild.textContent : n.textContent).join('')"
        )
        == text
    )  # the text around the marks is kept whole


def test_try_ocr_draws_the_lines_it_read(page: Page) -> None:
    label = shipping_label_png("PX-100234")
    page.goto("/studio/try?model=prebuilt-ocr")
    page.get_by_test_id("try-file").set_input_files(
        files=[{"name": "label.png", "mimeType": "image/png", "buffer": label}]
    )
    page.get_by_test_id("try-send").click()
    expect(page.get_by_test_id("ocr-lines")).to_contain_text("PX-100234", timeout=60_000)
    image = page.get_by_test_id("try-image").bounding_box()
    boxes = page.get_by_test_id("ocr-box")
    lines = page.get_by_test_id("ocr-lines").locator("li")
    assert image is not None and boxes.count() == lines.count()
    for i in range(boxes.count()):
        box = boxes.nth(i).bounding_box()
        assert box is not None and inside(box, image), (box, image)
    assert "/v1/ocr" in page.get_by_test_id("snippet-curl").locator("pre").inner_text()
    shot(page, "try-ocr")


def test_try_an_image_draws_the_detectors_boxes_on_it(
    page: Page, studio: Studio, models: Models
) -> None:
    detector = finished(studio, models.detector_id)
    # the page opened while it was queued turned into the model's page, without a reload
    expect(models.watching.get_by_test_id("model-status")).to_have_text("succeeded")
    expect(models.watching.locator('[data-metric="map50"] dd')).to_have_text(
        f"{detector['metrics']['map50'] * 100:.1f}%"
    )
    scene, _ = detection_scene(np.random.default_rng(999), 0)
    draw_object("square", 70, 40, 60, scene)
    big = scene.resize((scene.width * 2, scene.height * 2))  # shown scaled: boxes must follow
    png = io.BytesIO()
    big.save(png, format="PNG")
    page.goto(f"/studio/try?model={detector['id']}")
    page.get_by_test_id("try-file").set_input_files(
        files=[{"name": "scene.png", "mimeType": "image/png", "buffer": png.getvalue()}]
    )
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/predict" in r.url
    ) as answered:
        page.get_by_test_id("try-send").click()
    found = answered.value.json()
    boxes = page.get_by_test_id("detection-box")
    expect(boxes.first).to_be_visible()
    image = page.get_by_test_id("try-image").bounding_box()
    assert image is not None and image["width"] > 0
    assert boxes.count() == len(found["probabilities"])
    size = found["image"]
    # each box is drawn where the server found it, scaled with the picture (the detector is a
    # small model trained in seconds: how well it fits is the model page's business, not Try it's)
    for i, detection in enumerate(found["probabilities"]):
        box = boxes.nth(i).bounding_box()
        assert box is not None and inside(box, image), (box, image)
        expect(boxes.nth(i)).to_have_attribute("data-label", detection["label"])
        want = detection["box"]
        scale = image["width"] / size["width"]
        assert abs(box["x"] - image["x"] - want["x_min"] * scale) < 2, (box, want)
        assert abs(box["width"] - (want["x_max"] - want["x_min"]) * scale) < 2, (box, want)
    # the first box is the square, roughly where it was drawn (70 px of 192 from the left)
    first = boxes.first
    expect(first).to_have_attribute("data-label", "square")
    square = first.bounding_box()
    assert square is not None
    assert abs((square["x"] - image["x"]) / image["width"] - 70 / 192) < 0.15
    assert "file=@scene.png" in page.get_by_test_id("snippet-curl").locator("pre").inner_text()
    shot(page, "try-image")
    expect(models.watching.locator("#ap-per-label img")).to_be_visible()


def test_another_tenant_sees_no_model(studio: Studio, models: Models) -> None:
    page = studio.open_page()
    sign_in(page, studio.rival.tenant, studio.rival.username, studio.rival.password)
    page.goto(f"/studio/models/{models.intent['id']}")
    expect(page.get_by_test_id("not-found")).to_be_visible()
    page.goto(f"/studio/models/compare?a={models.intent['id']}&b={models.other['id']}")
    expect(page.get_by_test_id("not-found")).to_be_visible()
