"""The contract every model backend keeps, run against each registered one (like the
connectors' suite): trained once on tiny generated data of its task, a model saves and loads
back with the same predictions, refuses corrupted and foreign artifacts with a
``ModelLoadError`` that says to retrain, reports monotone progress ending at 1.0, stops when
the progress callback raises ``JobCancelled``, and predicts in its task's shape.

A new backend gets these tests by registering: the parameters come from the ``backends``
registry at collection time. Give it small training params in ``SMALL`` if its defaults are
slow; a backend of a new task needs a ``TaskKit`` in ``KITS``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import tests.support.toy_backend  # noqa: F401  (registers toy-bow)
from core.backends import BackendContext, JobCancelled, backends
from core.errors import ModelLoadError
from core.registry import load_entry_points
from tests.conftest import CACHE_DIR
from tests.support.data import INTENTS
from tests.support.entity_data import entity_rows
from tests.support.images import detection_scene, shape_image

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

load_entry_points()
NAMES = sorted(backends.names())

SMALL: dict[str, dict[str, Any]] = {
    "toy-bow": {"epochs": 3},
    "embedding-head": {"epochs": 5},
    "setfit": {"contrastive_epochs": 1, "batch_size": 16, "per_label": 4, "head_epochs": 5},
    "spacy-ner": {"epochs": 10},
    "encoder-ner": {"epochs": 2, "batch_size": 10, "min_steps": 0},
    "lite0-head": {"augment_views": 0, "epochs": 5},
    "lite0-multi-label": {"augment_views": 0, "epochs": 5},
    "lite0-finetune": {"epochs": 1, "image_size": 96, "batch_size": 6},
    "faster-rcnn-lite0": {"epochs": 1, "min_steps": 0, "min_size": 160, "max_size": 192},
}
"""The smallest params that still train each backend (a few seconds on one CPU thread)."""


# --- tiny data per task ---------------------------------------------------------------------

KINDS = ("circle", "square", "triangle")


def _shapes(per_kind: int, offset: int) -> tuple[list[Image.Image], list[str]]:
    images = [
        shape_image(k, offset + 10 * i + j) for j, k in enumerate(KINDS) for i in range(per_kind)
    ]
    return images, [k for k in KINDS for _ in range(per_kind)]


def _intent_data() -> tuple[list[Any], list[Any], list[Any]]:
    texts = [t for texts in INTENTS.values() for t in texts]
    labels = [label for label, texts in INTENTS.items() for _ in texts]
    probe = ["where is my parcel", "i want my money back", "hello there"]
    return texts, labels, probe


def _entity_data() -> tuple[list[Any], list[Any], list[Any]]:
    rows = entity_rows()
    texts = [str(r["text"]) for r in rows[:32]]
    spans = [list(r["entities"]) for r in rows[:32]]  # type: ignore[call-overload]
    return texts, spans, [str(r["text"]) for r in rows[32:]] + ["no entity here"]


def _image_data() -> tuple[list[Any], list[Any], list[Any]]:
    images, labels = _shapes(4, 0)
    return images, labels, _shapes(1, 5000)[0]


def _multi_label_data() -> tuple[list[Any], list[Any], list[Any]]:
    images, labels = _shapes(4, 0)
    targets = [[k] if i % 3 else [k, "any"] for i, k in enumerate(labels)]
    return images, targets, _shapes(1, 5000)[0]


def _detection_data() -> tuple[list[Any], list[Any], list[Any]]:
    rng = np.random.default_rng(7)
    scenes = [detection_scene(rng, 1 + i % 2, (192, 160)) for i in range(8)]
    probe = [detection_scene(rng, 1, (192, 160))[0] for _ in range(2)]
    return [im for im, _ in scenes], [b for _, b in scenes], probe


# --- what a prediction is, per task ---------------------------------------------------------


def _probabilities(model: Any, inputs: Sequence[Any]) -> np.ndarray:
    return np.asarray(model.predict_features(model.featurize(inputs)))


def _entities(model: Any, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
    return [[e.to_dict() for e in found] for found in model.extract(texts)]


def _detections(model: Any, images: Sequence[Any]) -> list[list[dict[str, Any]]]:
    return [[d.to_dict() for d in found] for found in model.detect(images, min_score=0.0)]


def _same_arrays(a: Any, b: Any) -> None:
    np.testing.assert_allclose(a, b, atol=1e-4)


def _same_records(a: list[list[dict[str, Any]]], b: list[list[dict[str, Any]]]) -> None:
    assert len(a) == len(b)
    for xs, ys in zip(a, b, strict=True):
        assert len(xs) == len(ys)
        for x, y in zip(xs, ys, strict=True):
            assert set(x) == set(y)
            for key, value in x.items():
                if isinstance(value, float):
                    assert value == pytest.approx(y[key], abs=1e-3), key
                elif isinstance(value, dict):
                    assert value == pytest.approx(y[key], abs=0.05), key
                else:
                    assert value == y[key], key


def _single_label_shape(
    model: Any, probs: np.ndarray, inputs: Sequence[Any], labels: set[str]
) -> None:
    assert set(model.labels) == labels
    assert probs.shape == (len(inputs), len(model.labels))
    assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def _multi_label_shape(
    model: Any, probs: np.ndarray, inputs: Sequence[Any], labels: set[str]
) -> None:
    assert set(model.labels) == labels
    assert probs.shape == (len(inputs), len(model.labels))
    assert np.all((probs >= 0) & (probs <= 1))


def _entity_shape(model: Any, found: Any, texts: Sequence[str], labels: set[str]) -> None:
    assert set(model.labels) <= labels and model.labels
    assert len(found) == len(texts)
    assert any(found), "no entity in any probe text: the model learned nothing or lost it"
    for text, entities in zip(texts, found, strict=True):
        for e in entities:
            assert e["entity"] in model.labels
            assert 0 <= e["start"] < e["end"] <= len(text)
            assert 0.0 <= e["confidence"] <= 1.0


def _detection_shape(model: Any, found: Any, images: Sequence[Any], labels: set[str]) -> None:
    assert set(model.labels) == labels
    assert len(found) == len(images)
    assert any(found), "no object in any probe image: the model learned nothing or lost it"
    for image, detections in zip(images, found, strict=True):
        for d in detections:
            assert d["label"] in model.labels and 0.0 <= d["probability"] <= 1.0
            box = d["box"]
            assert 0 <= box["x_min"] < box["x_max"] <= image.width
            assert 0 <= box["y_min"] < box["y_max"] <= image.height


@dataclass(frozen=True)
class TaskKit:
    """Tiny data of a task and what its models' predictions look like."""

    data: Callable[[], tuple[list[Any], list[Any], list[Any]]]  # inputs, targets, probe
    label_set: Callable[[list[Any]], set[str]]
    predict: Callable[[Any, Sequence[Any]], Any]
    same: Callable[[Any, Any], None]
    shape: Callable[[Any, Any, Sequence[Any], set[str]], None]


KITS: dict[str, TaskKit] = {
    "intent": TaskKit(_intent_data, set, _probabilities, _same_arrays, _single_label_shape),
    "image-classification": TaskKit(
        _image_data, set, _probabilities, _same_arrays, _single_label_shape
    ),
    "image-multi-label": TaskKit(
        _multi_label_data,
        lambda targets: {label for t in targets for label in t},
        _probabilities,
        _same_arrays,
        _multi_label_shape,
    ),
    "entities": TaskKit(
        _entity_data,
        lambda targets: {s["entity"] for t in targets for s in t},
        _entities,
        _same_records,
        _entity_shape,
    ),
    "object-detection": TaskKit(
        _detection_data,
        lambda targets: {b["label"] for t in targets for b in t},
        _detections,
        _same_records,
        _detection_shape,
    ),
}


# --- each backend trained once ----------------------------------------------------------------


@dataclass
class Trained:
    name: str
    kit: TaskKit
    config: Any
    features: Any
    targets: list[Any]
    probe: list[Any]
    model: Any
    fractions: list[float]
    saved: Path
    seconds: float


_TRAINED: dict[str, Trained] = {}


def _context() -> BackendContext:
    return BackendContext(cache_dir=CACHE_DIR, device="cpu", threads=1)


def trained_backend(name: str, root: Path) -> Trained:
    """``name`` trained on its task's tiny data and saved (once per session)."""
    if name not in _TRAINED:
        import time

        cls = backends.get(name)
        kit = KITS[cls.task]
        inputs, targets, probe = kit.data()
        config = cls.Config.model_validate(SMALL.get(name, {}))
        backend = cls(_context())
        features = backend.featurize(inputs, config=config)
        fractions: list[float] = []
        start = time.perf_counter()
        model = backend.train(
            features,
            targets,
            config,
            seed=0,
            validation=None,
            on_epoch=None,
            progress=fractions.append,
        )
        seconds = time.perf_counter() - start
        saved = root / name
        model.save(saved)
        _TRAINED[name] = Trained(
            name, kit, config, features, targets, probe, model, fractions, saved, seconds
        )
    return _TRAINED[name]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backend-contracts")


@pytest.fixture(params=NAMES)
def trained(request: pytest.FixtureRequest, artifacts: Path) -> Trained:
    return trained_backend(request.param, artifacts)


def _copy(saved: Path, target: Path) -> Path:
    shutil.copytree(saved, target)
    return target


def _refused(name: str, directory: Path) -> str:
    with pytest.raises(ModelLoadError) as refused:
        backends.get(name)(_context()).load(directory)
    message = str(refused.value)
    assert directory.name in message, f"{name}: the refusal names no model folder: {message}"
    assert "retrain" in message.lower(), f"{name}: the refusal does not say to retrain: {message}"
    return message


# --- the contract -----------------------------------------------------------------------------


def test_every_backend_of_the_api_is_in_the_suite() -> None:
    from bot_gateway.api.system import list_backends

    listed = {b["name"] for b in list_backends(None)["backends"]}  # type: ignore[arg-type]
    assert listed == set(NAMES)
    assert {backends.get(n).task for n in NAMES} <= set(KITS), "a task without a TaskKit"


def test_progress_is_monotone_and_ends_at_one(trained: Trained) -> None:
    f = trained.fractions
    assert f, f"{trained.name} reported no progress"
    assert f == sorted(f) and all(0.0 <= x <= 1.0 for x in f) and f[-1] == 1.0
    # reported during training, not only at its end, so that a job can be cancelled midway
    assert f[0] < 1.0, f"{trained.name} reports progress only when training is over: {f}"


def test_predictions_have_the_task_shape(trained: Trained) -> None:
    found = trained.kit.predict(trained.model, trained.probe)
    trained.kit.shape(trained.model, found, trained.probe, trained.kit.label_set(trained.targets))


def test_save_then_load_predicts_the_same(trained: Trained) -> None:
    loaded = backends.get(trained.name)(_context()).load(trained.saved)
    assert loaded.labels == trained.model.labels
    trained.kit.same(
        trained.kit.predict(loaded, trained.probe),
        trained.kit.predict(trained.model, trained.probe),
    )


def test_a_truncated_weights_file_is_refused(trained: Trained, tmp_path: Path) -> None:
    broken = _copy(trained.saved, tmp_path / "truncated")
    weights = max((p for p in broken.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _refused(trained.name, broken)


def test_garbled_or_missing_metadata_is_refused(trained: Trained, tmp_path: Path) -> None:
    metas = list(trained.saved.glob("*.json"))
    assert metas, f"{trained.name} saves no JSON metadata"
    garbled = _copy(trained.saved, tmp_path / "garbled")
    for meta in garbled.glob("*.json"):
        meta.write_text("{")
    _refused(trained.name, garbled)
    missing = _copy(trained.saved, tmp_path / "missing")
    for meta in missing.glob("*.json"):
        meta.unlink()
    _refused(trained.name, missing)


def test_another_backends_artifact_is_refused(trained: Trained, artifacts: Path) -> None:
    cls = backends.get(trained.name)
    same_task = [n for n in NAMES if n != trained.name and backends.get(n).task == cls.task]
    other_task = [n for n in NAMES if backends.get(n).task != cls.task]
    assert same_task or other_task, "no other backend's artifact to refuse"
    for other in same_task + other_task:
        _refused(trained.name, trained_backend(other, artifacts).saved)


def test_a_cancelled_job_stops_training(trained: Trained) -> None:
    calls: list[float] = []

    def cancel(fraction: float) -> None:
        calls.append(fraction)
        raise JobCancelled

    backend = backends.get(trained.name)(_context())
    with pytest.raises(JobCancelled):
        backend.train(
            trained.features,
            trained.targets,
            trained.config,
            seed=0,
            validation=None,
            on_epoch=None,
            progress=cancel,
        )
    # stopped at the first report, before the end (progress test: the first is below 1.0)
    assert calls == [trained.fractions[0]]
