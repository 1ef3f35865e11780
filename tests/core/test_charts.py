"""core.charts on metrics made by the real metric functions (no training): a detector's AP per
label and its learning curve, an entity model's per-entity scores, a multi-label model's
average precision, a large confusion matrix cut down to its most confused labels, and a
dataset's label counts; each renders as well-formed SVG and as PNG. Which charts a model
has follows from its metrics (``bot_gateway.services.insight.available_plots``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from bot_gateway.services.insight import available_plots
from core import charts
from core.evaluation import classification_metrics, entity_metrics, multilabel_metrics
from core.plots import render
from core.tables import Model
from vision.detect.metrics import detection_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def texts(fig: Any) -> str:
    root = ET.fromstring(render(fig, "svg"))
    return " ".join(root.itertext())


def detector_metrics() -> dict[str, Any]:
    box = {"x_min": 10.0, "y_min": 10.0, "x_max": 50.0, "y_max": 50.0}
    truth = [[{"label": "square", **box}], [{"label": "disc", **box}]]
    predicted = [
        [{"label": "square", "probability": 0.9, "box": box}],
        [{"label": "square", "probability": 0.6, "box": box}],
    ]
    return detection_metrics(truth, predicted, ["disc", "square"])


def test_a_detectors_average_precision_and_learning_curve() -> None:
    metrics = detector_metrics()
    drawn = texts(charts.ap_per_label(metrics["per_label"]))
    assert "AP50" in drawn and "disc" in drawn and "square" in drawn
    assert "precision" in texts(charts.per_label(metrics["per_label"]))  # P and R, no F1
    points = [
        {"epoch": e, "train_loss": 1 / e, "validation_accuracy": None, "validation_macro_f1": None}
        | {"validation_map50": e / 10}
        for e in range(1, 6)
    ]
    drawn = texts(charts.learning_curve(points))
    assert "held-out mAP50" in drawn and "held-out accuracy" not in drawn
    model = Model(metrics=metrics, learning_curve=points)
    assert available_plots(model) == ["learning-curve", "per-label", "ap-per-label"]


def test_entity_and_multi_label_scores() -> None:
    gold = [[{"start": 0, "end": 5, "entity": "city"}], [{"start": 0, "end": 3, "entity": "day"}]]
    found = [[{"start": 0, "end": 5, "entity": "city"}], []]
    entities = entity_metrics(gold, found)
    assert "city" in texts(charts.per_label(entities["per_entity"]))
    assert available_plots(Model(metrics=entities, learning_curve=None)) == ["per-label"]
    probs = np.array([[0.9, 0.2], [0.3, 0.8], [0.7, 0.6]])
    multi = multilabel_metrics(
        [["cat"], ["dog"], ["cat", "dog"]], probs, ["cat", "dog"], [0.5, 0.5]
    )
    assert "dog" in texts(charts.ap_per_label(multi["per_label"]))
    assert available_plots(Model(metrics=multi, learning_curve=None)) == [
        "per-label",
        "ap-per-label",
    ]


def test_a_large_confusion_matrix_keeps_its_most_confused_labels() -> None:
    labels = [f"intent_{i:03d}" for i in range(120)]
    truth = [label for label in labels for _ in range(3)]
    predicted = list(truth)
    predicted[3 * 7] = labels[90]  # intent_007 taken for intent_090
    predicted[3 * 50 + 1] = labels[51]  # intent_050 taken for intent_051
    metrics = classification_metrics(truth, predicted, labels)
    fig = charts.confusion_matrix(metrics["confusion_matrix"], max_labels=4)
    root = ET.fromstring(render(fig, "svg"))
    ids = {el.attrib["id"] for el in root.iter() if el.attrib.get("id", "").startswith("cell-")}
    kept = (7, 50, 51, 90)
    assert ids == {f"cell-{i}-{j}" for i in kept for j in kept}
    assert "4 of 120 labels shown" in " ".join(root.itertext())
    png = render(charts.confusion_matrix(metrics["confusion_matrix"]), "png")
    assert png.startswith(PNG_MAGIC)


def test_label_distribution_most_frequent_first() -> None:
    fig = charts.label_distribution({"rare": 1, "common": 30, "middle": 7}, max_labels=2)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["common", "middle"]
    assert "2 of 3 labels shown" in texts(fig)
