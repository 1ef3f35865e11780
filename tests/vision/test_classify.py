"""Image classification backends on generated shapes: the frozen-feature head (single and
multi-label), the fine-tuned network, save/load, and the shared feature key."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.backends import BackendContext
from core.errors import ModelLoadError
from core.evaluation import average_precision, multilabel_metrics
from core.shared_models import shared_models
from tests.conftest import CACHE_DIR
from tests.support.images import shape_image
from vision.classify.features import FEATURE_KEY, augment
from vision.classify.finetune import FineTuneBackend, FineTuneConfig
from vision.classify.head import (
    ImageHeadBackend,
    ImageHeadConfig,
    MultiLabelHeadBackend,
    tune_thresholds,
)

KINDS = ("circle", "square", "triangle")
CONTEXT = BackendContext(cache_dir=CACHE_DIR, device="cpu")


def shapes(per_kind: int, offset: int = 0) -> tuple[list, list[str]]:
    images = [
        shape_image(k, offset + 10 * i + j) for j, k in enumerate(KINDS) for i in range(per_kind)
    ]
    return images, [k for k in KINDS for _ in range(per_kind)]


def test_metrics_for_multi_label() -> None:
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    # interpolated: the precision at recall 0.5 is the best at any higher recall (2/3)
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert average_precision(np.array([0.5]), np.array([0])) is None
    probs = np.array([[0.9, 0.2], [0.4, 0.7], [0.8, 0.9]])
    m = multilabel_metrics([["a"], ["b"], ["a", "b"]], probs, ["a", "b"], [0.5, 0.5])
    assert m["exact_match"] == 1.0 and m["map"] == 1.0 and m["per_label"]["a"]["f1"] == 1.0
    truth = np.array([[1, 0], [0, 1], [1, 1]], dtype=bool)
    assert tune_thresholds(probs, truth) == [0.5, 0.5]  # ties keep 0.5
    low = np.array([[0.3, 0.2], [0.2, 0.3], [0.35, 0.25]])
    assert tune_thresholds(low, truth) == [0.3, 0.25]


def test_augmented_views_differ_from_each_other() -> None:
    image = shape_image("circle", 1)
    rng = random.Random(0)
    views = [augment(image, rng) for _ in range(3)]
    assert len({v.tobytes() for v in views}) == 3


@pytest.mark.slow
def test_onnx_features_match_the_pytorch_network() -> None:
    import torch

    from vision.backbone import lite0, to_tensor
    from vision.classify.features import get_features

    images = [shape_image(k, 7) for k in KINDS]
    onnx = get_features(CONTEXT, "cpu").features(images)
    model = lite0()
    with torch.inference_mode():
        reference = model.forward_head(model.forward_features(to_tensor(images)), pre_logits=True)
        expected = model.get_classifier()(reference).numpy()
    np.testing.assert_allclose(onnx, reference.numpy(), atol=1e-4)
    logits = get_features(CONTEXT, "cpu").classify_features(onnx)
    np.testing.assert_allclose(logits, expected, atol=1e-3)


@pytest.mark.slow
def test_image_features_are_shared_per_thread_count_and_sized_by_their_graph() -> None:
    from vision.backbone import WEIGHTS_SHA256
    from vision.classify.features import get_features

    one = get_features(CONTEXT, "cpu")
    two = get_features(replace(CONTEXT, threads=2), "cpu")

    assert get_features(CONTEXT, "cpu") is one and one is not two
    graph = CACHE_DIR / f"lite0-features-{WEIGHTS_SHA256[:16]}.onnx"
    classifier = (1280 * 1000 + 1000) * 4  # the ImageNet layer kept beside the graph, float32
    assert one.nbytes == two.nbytes == graph.stat().st_size + classifier
    assert graph.stat().st_size > 10_000_000  # 3.4 M weights before the classifier
    sizes = [e.nbytes for e in shared_models.entries() if e.key.kind == "image-features"]
    assert sizes.count(one.nbytes) >= 2


@pytest.mark.slow
def test_head_learns_shapes_and_round_trips(tmp_path: Path) -> None:
    backend = ImageHeadBackend(CONTEXT)
    images, labels = shapes(6)
    config = ImageHeadConfig(augment_views=1, epochs=40)
    features = backend.featurize(images, config=config)
    assert features.shape == (18, 2, 1280)
    curve = []
    model = backend.train(
        features,
        labels,
        config,
        seed=0,
        validation=(features[:, 0], labels),
        on_epoch=curve.append,
        progress=lambda f: None,
    )
    assert len(curve) == 40 and curve[-1].validation_accuracy == 1.0
    test_images, test_labels = shapes(3, offset=5000)
    probs = model.predict_features(model.featurize(test_images))
    accuracy = np.mean(
        [model.labels[i] == t for i, t in zip(probs.argmax(1), test_labels, strict=True)]
    )
    assert accuracy >= 0.8 and model.feature_key == FEATURE_KEY
    model.save(tmp_path / "m")
    loaded = backend.load(tmp_path / "m")
    np.testing.assert_allclose(
        loaded.predict_features(features[:, 0]), model.predict_features(features[:, 0]), atol=1e-6
    )
    (tmp_path / "m" / "head.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError):
        backend.load(tmp_path / "m")


@pytest.mark.slow
def test_multi_label_head_tunes_thresholds_without_validation() -> None:
    backend = MultiLabelHeadBackend(CONTEXT)
    images, labels = shapes(6)
    targets = [[k] if i % 3 else [k, "any"] for i, k in enumerate(labels)]
    features = backend.featurize(images, config=ImageHeadConfig(augment_views=0))
    model = backend.train(
        features,
        targets,
        ImageHeadConfig(augment_views=0),
        seed=0,
        validation=None,
        on_epoch=None,
        progress=lambda f: None,
    )
    assert model.labels == ["any", "circle", "square", "triangle"] and model.multi_label
    assert len(model.thresholds) == 4
    metrics = model.evaluate(features, targets)
    assert metrics["per_label"]["circle"]["f1"] == 1.0


@pytest.mark.slow
def test_fine_tuning_keeps_the_best_epoch_and_round_trips(tmp_path: Path) -> None:
    backend = FineTuneBackend(CONTEXT)
    images, labels = shapes(4)
    config = FineTuneConfig(epochs=3, image_size=96, batch_size=6, learning_rate=1e-3)
    curve = []
    model = backend.train(
        backend.featurize(images),
        labels,
        config,
        seed=0,
        validation=None,
        on_epoch=curve.append,
        progress=lambda f: None,
    )
    assert 1 <= len(curve) <= 3 and all(r.validation_accuracy is not None for r in curve)
    assert model.feature_key.startswith("lite0-finetune:") and model.nbytes > 10_000_000
    probs = model.predict_features(model.featurize(images[:3]))
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1)
    model.save(tmp_path / "ft")
    loaded = backend.load(tmp_path / "ft")
    np.testing.assert_allclose(
        loaded.predict_features(loaded.featurize(images[:3])), probs, atol=1e-5
    )
    metrics = loaded.evaluate(images, labels)
    assert set(metrics) >= {"accuracy", "macro_f1", "confusion_matrix"}
    (tmp_path / "ft" / "network.json").write_text('{"backend": "lite0-head"}')
    with pytest.raises(ModelLoadError):
        backend.load(tmp_path / "ft")
