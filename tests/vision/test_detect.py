"""The ``faster-rcnn-lite0`` detection backend and the detection metrics.

Metrics are checked on hand-made cases; the backend is trained for real (no mocks) on a tiny
set of red squares and blue discs on noisy backgrounds, once for the module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.backends import BackendContext, Box, Detection, EpochRecord, JobCancelled, backends
from core.errors import InvalidInput, ModelLoadError
from tests.support.images import detection_scene, draw_object
from vision.detect.backend import (
    META_FILE,
    WEIGHTS_FILE,
    DetectionBackend,
    DetectionConfig,
    DetectionModel,
)
from vision.detect.metrics import average_precision, detection_metrics, iou

# --- metrics --------------------------------------------------------------------------------


def truth(label: str, x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {"label": label, "x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1}


def found(label: str, p: float, x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    box = {"x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1}
    return {"label": label, "probability": p, "box": box}


def test_iou_of_hand_made_boxes() -> None:
    a = np.array([[0, 0, 10, 10]])
    assert iou(a, np.array([[0, 0, 10, 10]]))[0, 0] == pytest.approx(1.0)
    assert iou(a, np.array([[0, 0, 10, 4]]))[0, 0] == pytest.approx(0.4)
    assert iou(a, np.array([[10, 0, 20, 10]]))[0, 0] == 0.0  # touching, no overlap
    assert iou(a, np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(50 / 150)


def test_perfect_detections_score_one() -> None:
    t = [[truth("cat", 0, 0, 10, 10), truth("dog", 20, 20, 40, 40)], [truth("cat", 5, 5, 9, 9)]]
    p = [
        [found("cat", 0.9, 0, 0, 10, 10), found("dog", 0.8, 20, 20, 40, 40)],
        [found("cat", 0.7, 5, 5, 9, 9)],
    ]
    m = detection_metrics(t, p, ["cat", "dog"])
    assert (m["map50"], m["map"], m["precision"], m["recall"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["per_label"]["cat"]["support"] == 2 and m["true_positives"] == 3


def test_a_missed_box_halves_recall_and_ap() -> None:
    t = [[truth("cat", 0, 0, 10, 10)], [truth("cat", 0, 0, 10, 10)]]
    p = [[found("cat", 0.9, 0, 0, 10, 10)], []]
    m = detection_metrics(t, p, ["cat"])
    assert m["recall"] == 0.5 and m["precision"] == 1.0
    assert m["map50"] == pytest.approx(0.5)
    assert m["false_negatives"] == 1


def test_a_false_positive_lowers_precision_and_ap_when_ranked_first() -> None:
    t = [[truth("cat", 0, 0, 10, 10)]]
    p = [[found("cat", 0.9, 50, 50, 60, 60), found("cat", 0.8, 0, 0, 10, 10)]]
    m = detection_metrics(t, p, ["cat"])
    assert m["precision"] == 0.5 and m["recall"] == 1.0
    assert m["map50"] == pytest.approx(0.5)  # precision 1/2 at recall 1
    ranked_last = [[found("cat", 0.9, 0, 0, 10, 10), found("cat", 0.3, 50, 50, 60, 60)]]
    m = detection_metrics(t, ranked_last, ["cat"])
    assert m["map50"] == 1.0 and m["precision"] == 1.0  # 0.3 is below the confident cut


def test_a_wrong_label_is_a_false_positive_and_a_miss() -> None:
    t = [[truth("cat", 0, 0, 10, 10)]]
    p = [[found("dog", 0.9, 0, 0, 10, 10)]]
    m = detection_metrics(t, p, ["cat", "dog"])
    assert m["per_label"]["cat"]["ap50"] == 0.0 and m["per_label"]["cat"]["false_negatives"] == 1
    assert m["per_label"]["dog"]["false_positives"] == 1
    assert m["per_label"]["dog"]["ap50"] is None  # no true dog: not in the mean
    assert m["map50"] == 0.0 and m["precision"] == 0.0 and m["recall"] == 0.0


def test_a_box_shifted_to_iou_04_is_a_miss_at_05() -> None:
    shift = 30 / 7  # (10 - s) / (10 + s) = 0.4
    t = [[truth("cat", 0, 0, 10, 10)]]
    p = [[found("cat", 0.9, shift, 0, 10 + shift, 10)]]
    assert iou(np.array([[0, 0, 10, 10]]), np.array([[shift, 0, 10 + shift, 10]]))[
        0, 0
    ] == pytest.approx(0.4)
    m = detection_metrics(t, p, ["cat"])
    assert m["map50"] == 0.0 and m["map"] == 0.0
    assert m["false_positives"] == 1 and m["false_negatives"] == 1


def test_coco_map_averages_over_iou_thresholds() -> None:
    t = [[truth("cat", 0, 0, 10, 10)]]
    p = [[found("cat", 0.9, 0, 0, 10, 7.2)]]  # IoU 0.72: a hit at 0.50 ... 0.70 only
    m = detection_metrics(t, p, ["cat"])
    assert m["map50"] == 1.0
    assert m["map"] == pytest.approx(0.5)


def test_one_detection_matches_one_box_only() -> None:
    t = [[truth("cat", 0, 0, 10, 10)]]
    p = [[found("cat", 0.9, 0, 0, 10, 10), found("cat", 0.8, 0, 0, 10, 10)]]  # a duplicate
    m = detection_metrics(t, p, ["cat"])
    assert m["true_positives"] == 1 and m["false_positives"] == 1 and m["map50"] == 1.0


def test_average_precision_is_all_point_interpolated() -> None:
    # hits at ranks 1 and 3 of 3 true boxes: P/R points (1, 1/3), (2/3, 2/3)
    assert average_precision([True, False, True], 3) == pytest.approx(1 / 3 + 2 / 3 * 1 / 3)
    assert average_precision([], 2) == 0.0 and average_precision([True], 0) == 0.0


def test_no_truth_at_all_has_no_map() -> None:
    m = detection_metrics([[]], [[found("cat", 0.9, 0, 0, 5, 5)]], ["cat"])
    assert m["map50"] is None and m["map"] is None and m["false_positives"] == 1


# --- the backend: fast checks ---------------------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path) -> DetectionBackend:
    return DetectionBackend(BackendContext(cache_dir=tmp_path, device="cpu", threads=1))


def test_registered_with_the_interface_names() -> None:
    cls = backends.get("faster-rcnn-lite0")
    assert cls is DetectionBackend
    assert (cls.name, cls.version, cls.task) == ("faster-rcnn-lite0", "1", "object-detection")
    assert cls.Config is DetectionConfig


def test_config_bounds_and_defaults() -> None:
    config = DetectionConfig()
    assert config.max_size == 320 and config.min_size <= config.max_size
    with pytest.raises(ValueError):
        DetectionConfig(min_size=400, max_size=320)
    with pytest.raises(ValueError):
        DetectionConfig(epochs=0)
    with pytest.raises(ValueError):
        DetectionConfig(unknown=1)  # type: ignore[call-arg]


def test_featurize_is_the_identity(backend: DetectionBackend) -> None:
    images = [Image.new("RGB", (20, 10)), Image.new("RGB", (5, 5))]
    seen: list[float] = []
    out = backend.featurize(images, seen.append)
    assert len(out) == 2 and all(a is b for a, b in zip(out, images, strict=True))
    assert seen == [1.0]


def test_detection_to_dict() -> None:
    d = Detection("cat", 0.75, Box(1.0, 2.0, 3.0, 4.0))
    assert d.to_dict() == {
        "label": "cat",
        "probability": 0.75,
        "box": {"x_min": 1.0, "y_min": 2.0, "x_max": 3.0, "y_max": 4.0},
    }


def test_training_without_any_box_is_refused(backend: DetectionBackend) -> None:
    with pytest.raises(InvalidInput, match="no boxes"):
        backend.train(
            [Image.new("RGB", (64, 64))] * 2,
            [[], []],
            DetectionConfig(),
            seed=0,
            validation=None,
            on_epoch=None,
            progress=lambda _f: None,
        )


def test_an_empty_box_is_refused_naming_the_image(backend: DetectionBackend) -> None:
    with pytest.raises(InvalidInput, match="image 1"):
        backend.train(
            [Image.new("RGB", (64, 64))] * 2,
            [[truth("a", 1, 1, 9, 9)], [truth("a", 9, 1, 9, 9)]],
            DetectionConfig(),
            seed=0,
            validation=None,
            on_epoch=None,
            progress=lambda _f: None,
        )


def test_a_box_without_a_label_is_refused(backend: DetectionBackend) -> None:
    with pytest.raises(InvalidInput, match="image 0: every box needs a label"):
        backend.train(
            [Image.new("RGB", (64, 64))],
            [[{"x_min": 1, "y_min": 1, "x_max": 9, "y_max": 9}]],
            DetectionConfig(),
            seed=0,
            validation=None,
            on_epoch=None,
            progress=lambda _f: None,
        )


def test_loading_nothing_is_a_model_load_error(backend: DetectionBackend, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read"):
        backend.load(tmp_path / "nowhere")


# --- the backend: trained on a tiny set -----------------------------------------------------

SIZE = (192, 160)
CONFIG = DetectionConfig(min_size=160, max_size=192, epochs=8, min_steps=0)


def draw(kind: str, x: int, y: int, s: int, image: Image.Image) -> dict[str, Any]:
    return draw_object(kind, x, y, s, image)


def scene(rng: np.random.Generator, n: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    return detection_scene(rng, n, SIZE)


class Trained:
    def __init__(self, model: DetectionModel, records: list[EpochRecord], fractions: list[float]):
        self.model, self.records, self.fractions = model, records, fractions


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    rng = np.random.default_rng(7)
    data = [scene(rng, 1 + i % 2) for i in range(22)]
    data.append(scene(rng, 0))  # background only: a valid example
    backend = DetectionBackend(
        BackendContext(cache_dir=tmp_path_factory.mktemp("cache"), device="cpu", threads=1)
    )
    records: list[EpochRecord] = []
    fractions: list[float] = []
    model = backend.train(
        [im for im, _ in data],
        [b for _, b in data],
        CONFIG,
        seed=0,
        validation=None,
        on_epoch=records.append,
        progress=fractions.append,
    )
    return Trained(model, records, fractions)


def held_out() -> tuple[Image.Image, dict[str, Any]]:
    rng = np.random.default_rng(12345)
    image, _ = scene(rng, 0)
    return image, draw("square", 70, 40, 60, image)


def best_iou(detections: list[Detection], box: dict[str, Any]) -> float:
    if not detections:
        return 0.0
    boxes = np.array([[d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max] for d in detections])
    target = np.array([[box["x_min"], box["y_min"], box["x_max"], box["y_max"]]])
    return float(iou(boxes, target).max())


@pytest.mark.slow
def test_training_reports_epochs_and_progress(trained: Trained) -> None:
    assert [r.epoch for r in trained.records] == list(range(1, CONFIG.epochs + 1))
    assert all(np.isfinite(r.train_loss) for r in trained.records)
    assert trained.records[-1].train_loss < trained.records[0].train_loss
    assert trained.fractions == sorted(trained.fractions) and trained.fractions[-1] == 1.0
    assert trained.model.labels == ["disc", "square"]
    assert trained.model.feature_key.startswith("detect:")


@pytest.mark.slow
def test_finds_the_object_in_a_held_out_image(trained: Trained) -> None:
    image, box = held_out()
    [found_] = trained.model.detect([image])
    top = found_[0]
    assert top.label == "square" and top.probability >= 0.5
    assert best_iou(found_[:1], box) >= 0.5
    assert all(d.probability >= 0.5 for d in found_)
    assert found_ == sorted(found_, key=lambda d: -d.probability)


@pytest.mark.slow
def test_boxes_are_in_the_input_images_pixels(trained: Trained) -> None:
    image, box = held_out()
    # the same scene twice as large, on a wider canvas: resized internally to 192 px
    big = Image.new("RGB", (SIZE[0] * 2 + 100, SIZE[1] * 2), (128, 128, 128))
    big.paste(image.resize((SIZE[0] * 2, SIZE[1] * 2), Image.Resampling.NEAREST), (100, 0))
    scaled = {k: v * 2 + (100 if k.startswith("x") else 0) for k, v in box.items() if k != "label"}
    [found_] = trained.model.detect([big])
    squares = [d for d in found_ if d.label == "square"]
    assert best_iou(squares, scaled) >= 0.5
    assert all(0 <= d.box.x_min < d.box.x_max <= big.width for d in found_)
    assert all(0 <= d.box.y_min < d.box.y_max <= big.height for d in found_)


@pytest.mark.slow
def test_the_backbone_starts_from_the_shipped_weights(trained: Trained) -> None:
    import torch

    from vision.backbone import lite0

    shipped = lite0()
    body = trained.model.network.backbone
    # the stem and the first stages are frozen: still exactly the shipped tensors
    assert torch.equal(body.conv_stem.weight, shipped.conv_stem.weight)
    assert torch.equal(body.blocks[1][0].conv_pw.weight, shipped.blocks[1][0].conv_pw.weight)
    assert torch.equal(body.blocks[4][0].bn1.running_mean, shipped.blocks[4][0].bn1.running_mean)


@pytest.mark.slow
def test_save_then_load_gives_the_same_detections(
    trained: Trained, backend: DetectionBackend, tmp_path: Path
) -> None:
    trained.model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / META_FILE).read_text())
    assert meta["backend"] == "faster-rcnn-lite0" and meta["labels"] == ["disc", "square"]
    loaded = backend.load(tmp_path / "m")
    assert loaded.labels == trained.model.labels
    assert loaded.feature_key == trained.model.feature_key
    image, _ = held_out()
    before = trained.model.detect([image], min_score=0.1)[0]
    after = loaded.detect([image], min_score=0.1)[0]
    assert [d.label for d in after] == [d.label for d in before] and before
    for a, b in zip(after, before, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-4)
        assert a.box.x_min == pytest.approx(b.box.x_min, abs=0.05)
        assert a.box.y_max == pytest.approx(b.box.y_max, abs=0.05)


@pytest.mark.slow
def test_broken_artifacts_are_refused(
    trained: Trained, backend: DetectionBackend, tmp_path: Path
) -> None:
    directory = tmp_path / "m"
    trained.model.save(directory)
    weights = (directory / WEIGHTS_FILE).read_bytes()
    meta = json.loads((directory / META_FILE).read_text())

    (directory / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelLoadError, match="corrupt"):
        backend.load(directory)
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelLoadError, match="weights"):
        backend.load(directory)
    (directory / WEIGHTS_FILE).write_bytes(weights)
    (directory / META_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read"):
        backend.load(directory)
    (directory / META_FILE).write_text(json.dumps({**meta, "backend": "lite0-head"}))
    with pytest.raises(ModelLoadError, match="lite0-head"):
        backend.load(directory)
    (directory / META_FILE).write_text(json.dumps({**meta, "labels": ["disc"]}))
    with pytest.raises(ModelLoadError, match="do not fit|wrong shapes"):
        backend.load(directory)
    changed = {**meta["architecture"], "fpn_channels": 256}
    (directory / META_FILE).write_text(json.dumps({**meta, "architecture": changed}))
    with pytest.raises(ModelLoadError, match="another network"):
        backend.load(directory)
    (directory / META_FILE).write_text(json.dumps(meta))
    assert backend.load(directory).labels == ["disc", "square"]


@pytest.mark.slow
def test_feature_keys_are_never_shared(trained: Trained) -> None:
    other = DetectionModel(trained.model.network, trained.model.labels, CONFIG, device="cpu")
    assert other.feature_key != trained.model.feature_key


@pytest.mark.slow
def test_a_cancelled_job_stops_training(backend: DetectionBackend) -> None:
    image, boxes = scene(np.random.default_rng(3), 1)

    def cancel(_fraction: float) -> None:
        raise JobCancelled()

    with pytest.raises(JobCancelled):
        backend.train(
            [image],
            [boxes],
            CONFIG,
            seed=0,
            validation=None,
            on_epoch=None,
            progress=cancel,
        )


@pytest.mark.slow
def test_validation_keeps_the_best_epoch_and_stops_early(backend: DetectionBackend) -> None:
    image, boxes = scene(np.random.default_rng(4), 1)
    # the validation box's label is never predicted: mAP stays 0, so epoch 1 stays the best
    other, _ = scene(np.random.default_rng(5), 0)
    records: list[EpochRecord] = []
    fractions: list[float] = []
    config = CONFIG.model_copy(update={"epochs": 5, "batch_size": 1, "patience": 1})
    backend.train(
        [image],
        [boxes],
        config,
        seed=0,
        validation=([other], [[truth("triangle", 10, 10, 50, 50)]]),
        on_epoch=records.append,
        progress=fractions.append,
    )
    assert [r.epoch for r in records] == [1, 2]
    assert fractions[-1] == 1.0
