"""The task bases in ``core.backends``: what each task counts as a target, which datasets it
refuses before a job is queued, how it scores a held-out split, and that every registered
backend is built on the base of its task (the job runner and the registry rely on it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tests.support.toy_backend  # noqa: F401  (registers toy-bow)
from core.backends import (
    Backend,
    BackendContext,
    DatasetStats,
    EntityBackend,
    EvaluationOptions,
    ImageClassificationBackend,
    IntentBackend,
    MultiLabelImageBackend,
    ObjectDetectionBackend,
    backends,
    default_backend,
)
from core.errors import InvalidInput
from core.evaluation import OUT_OF_SCOPE
from core.registry import load_entry_points
from tests.support.data import INTENTS
from tests.support.toy_backend import ToyBowBackend, ToyBowConfig

BASES: dict[str, type[Backend[Any, Any, Any]]] = {
    "intent": IntentBackend,
    "entities": EntityBackend,
    "image-classification": ImageClassificationBackend,
    "image-multi-label": MultiLabelImageBackend,
    "object-detection": ObjectDetectionBackend,
}


@dataclass
class Data:
    texts: list[str]
    labels: list[str]
    annotations: list[list[dict[str, Any]] | None] = field(default_factory=list)
    multi_labels: list[list[str] | None] = field(default_factory=list)


SPAN = {"start": 0, "end": 5, "entity": "city"}
BOX = {"label": "cat", "x_min": 1.0, "y_min": 2.0, "x_max": 30.0, "y_max": 40.0}
DATA = Data(
    texts=["paris now", "no city", "a cat", "two cats"],
    labels=["go", "stay", "go", "stay"],
    annotations=[[SPAN], None, [BOX], [BOX, BOX]],
    multi_labels=[["cat"], None, ["cat", "dog"], []],
)


def test_every_registered_backend_is_built_on_the_base_of_its_task() -> None:
    load_entry_points()
    names = backends.names()
    assert {"embedding-head", "encoder-ner", "lite0-head", "faster-rcnn-lite0"} <= set(names)
    for name in names:
        cls = backends.get(name)
        assert cls.task in BASES, f"{name}: unknown task {cls.task!r}"
        assert issubclass(cls, BASES[cls.task]), f"{name} does not subclass its task's base"
        assert not cls.__abstractmethods__, f"{name} leaves {set(cls.__abstractmethods__)}"


def test_each_task_has_a_default_backend_of_that_task() -> None:
    load_entry_points()
    for task, base in BASES.items():
        name = default_backend(task)
        assert name is not None and issubclass(backends.get(name), base)


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        (IntentBackend, ["go", "stay", "go", "stay"]),
        (ImageClassificationBackend, ["go", "stay", "go", "stay"]),
        (EntityBackend, [[SPAN], [], [BOX], [BOX, BOX]]),
        (ObjectDetectionBackend, [[SPAN], [], [BOX], [BOX, BOX]]),
        (MultiLabelImageBackend, [["cat"], [], ["cat", "dog"], []]),
    ],
)
def test_targets_are_what_the_task_learns(
    base: type[Backend[Any, Any, Any]], expected: Any
) -> None:
    assert base.targets(DATA) == expected


def test_the_held_out_split_is_stratified_by_label_and_keeps_every_label_in_training() -> None:
    data = Data(texts=[""] * 13, labels=["a"] * 10 + ["b"] * 3)
    train, held = IntentBackend.split(data, 0.8, 0)
    assert sorted(train + held) == list(range(13))
    assert [data.labels[i] for i in held] == ["a", "a", "b"]
    assert {data.labels[i] for i in train} == {"a", "b"}


def stats(labels: dict[str, int], annotated: int = 0) -> DatasetStats:
    return DatasetStats(dataset_id="ds_1", label_counts=labels, annotated_examples=annotated)


TWO = stats({"go": 3, "stay": 2})


@pytest.mark.parametrize(
    ("base", "refused", "message", "accepted"),
    [
        (
            IntentBackend,
            stats({"go": 3}),
            "has 1 label \\(only 'go'\\).*at least 2",
            stats({"a": 1, "b": 1}),
        ),
        (ImageClassificationBackend, stats({}), "has 0 label;", stats({"a": 1, "b": 1})),
        (
            EntityBackend,
            stats({"go": 3, "stay": 2}),
            "no entity annotations",
            stats({}, annotated=1),
        ),
        (ObjectDetectionBackend, stats({}), "has no boxes", stats({"cat": 1})),
        (MultiLabelImageBackend, stats({}), "has no labels", stats({"cat": 1})),
    ],
)
def test_a_dataset_the_task_cannot_learn_from_is_refused_saying_what_to_add(
    base: type[Backend[Any, Any, Any]],
    refused: DatasetStats,
    message: str,
    accepted: DatasetStats,
) -> None:
    with pytest.raises(InvalidInput, match=message) as e:
        base.check_dataset(refused)
    assert "ds_1" in str(e.value)
    base.check_dataset(accepted)


def intent_examples() -> tuple[list[str], list[str]]:
    texts = [t for label in sorted(INTENTS) for t in INTENTS[label]]
    labels = [label for label in sorted(INTENTS) for _ in INTENTS[label]]
    return texts, labels


def test_intent_held_out_metrics_score_the_model_and_calibrate_out_of_scope(
    tmp_path: Path,
) -> None:
    texts, labels = intent_examples()
    backend = ToyBowBackend(BackendContext(cache_dir=tmp_path))
    features = backend.featurize(texts)
    model = backend.train(
        features,
        labels,
        ToyBowConfig(epochs=50),
        seed=0,
        validation=None,
        on_epoch=None,
        progress=lambda f: None,
    )
    truth = list(labels)
    truth[0] = OUT_OF_SCOPE  # one example the bot should not answer
    dataset_labels = sorted({*labels, OUT_OF_SCOPE})

    calibrated = backend.evaluate(
        model, features, truth, dataset_labels=dataset_labels, options=EvaluationOptions()
    )
    predicted = [model.labels[i] for i in model.predict_features(features).argmax(axis=1)]
    right = sum(p == t for p, t in zip(predicted, truth, strict=True))
    assert calibrated["accuracy"] == pytest.approx(right / len(truth))
    assert calibrated["num_evaluated"] == len(truth)
    assert calibrated["confusion_matrix"]["labels"] == dataset_labels
    assert calibrated["out_of_scope"]["method"] == "overall_accuracy_on_out_of_scope_examples"
    assert calibrated["out_of_scope"]["num_out_of_scope"] == 1

    fixed = backend.evaluate(
        model,
        features,
        truth,
        dataset_labels=dataset_labels,
        options=EvaluationOptions(out_of_scope_threshold=0.25),
    )
    assert fixed["out_of_scope"]["method"] == "fixed"
    assert fixed["out_of_scope"]["threshold"] == 0.25

    shared = backend.evaluate(
        model,
        features,
        truth,
        dataset_labels=dataset_labels,
        options=EvaluationOptions(out_of_scope_share=0.5),
    )
    assert shared["out_of_scope"]["out_of_scope_share"] == 0.5  # the job's prior, not 1/n
    assert calibrated["out_of_scope"]["out_of_scope_share"] == round(1 / len(truth), 6)


def test_entity_held_out_metrics_count_exact_spans_only(tmp_path: Path) -> None:
    from core.backends import Entity

    class Found:
        labels = ["city"]

        def extract_features(self, features: Sequence[str]) -> list[list[Entity]]:
            # the first span is exact, the second one character short
            return [
                [Entity("city", "paris", 0, 5, 1.0, "test")],
                [Entity("city", "rom", 0, 3, 1.0, "test")],
            ]

    class Spans(EntityBackend[list[str]]):
        name = "spans"
        version = "1"

        def featurize(self, inputs: Any, progress: Any = None, *, config: Any = None) -> Any:
            return list(inputs)

        def train(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("not trained here")

        def load(self, directory: Path) -> Any:
            raise AssertionError("not loaded here")

    gold = [[{"start": 0, "end": 5, "entity": "city"}], [{"start": 0, "end": 4, "entity": "city"}]]
    metrics = Spans(BackendContext(cache_dir=tmp_path)).evaluate(
        Found(),  # type: ignore[arg-type]
        ["paris", "rome"],
        gold,  # type: ignore[arg-type]
        dataset_labels=[],
        options=EvaluationOptions(),
    )
    assert metrics["micro"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert metrics["per_entity"]["city"]["support"] == 2


def test_a_backend_that_leaves_out_part_of_the_algorithm_cannot_be_used(tmp_path: Path) -> None:
    class NoTrain(IntentBackend[np.ndarray]):
        name = "no-train"
        version = "1"

        def featurize(self, inputs: Any, progress: Any = None, *, config: Any = None) -> Any:
            return np.zeros((len(inputs), 1))

        def load(self, directory: Path) -> Any:
            raise AssertionError

    with pytest.raises(TypeError, match="train"):
        NoTrain(BackendContext(cache_dir=tmp_path))  # type: ignore[abstract]
