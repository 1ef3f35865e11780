"""The image classification tasks: one label per image, or any number of labels per image.

A trained image classifier scores features with class probabilities like a text classifier
(``TextClassifier``: the gateway batches them the same way) and scores a held-out split itself
(``evaluate``: single-label models the classification metrics, multi-label models per-label
average precision at their tuned thresholds). A single-label task scores its held-out split
from ``probabilities``, keeping each image's prediction (``evaluate_held_out``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from core.backends.base import (
    Backend,
    DatasetStats,
    Evaluation,
    EvaluationOptions,
    FeaturesT,
    TextClassifier,
    TrainingData,
    check_classes,
    top_predictions,
)
from core.errors import InvalidInput
from core.evaluation import classification_metrics

__all__ = [
    "IMAGE_CLASSIFICATION",
    "IMAGE_MULTI_LABEL",
    "ImageClassificationBackend",
    "ImageClassifier",
    "MultiLabelImageBackend",
]

IMAGE_CLASSIFICATION = "image-classification"
IMAGE_MULTI_LABEL = "image-multi-label"


class ImageClassifier(TextClassifier, Protocol):
    """A trained image classifier: class probabilities, and its own held-out metrics."""

    def evaluate(self, features: Any, targets: Sequence[Any]) -> dict[str, Any]: ...

    def probabilities(self, features: Any) -> Any:
        """Class probabilities (an array, one row per image) of held-out ``features`` as the
        backend's ``featurize`` made them."""


class ImageClassificationBackend(Backend[FeaturesT, str, ImageClassifier]):
    """Base of single-label image backends: one label per image."""

    task: ClassVar[str] = IMAGE_CLASSIFICATION

    @classmethod
    def targets(cls, data: TrainingData) -> list[str]:
        return list(data.labels)

    @classmethod
    def check_dataset(cls, stats: DatasetStats) -> None:
        check_classes(stats)

    def evaluate(
        self,
        model: ImageClassifier,
        features: FeaturesT,
        targets: Sequence[str],
        *,
        dataset_labels: Sequence[str],
        options: EvaluationOptions,
    ) -> dict[str, Any]:
        return self.evaluate_held_out(
            model, features, targets, dataset_labels=dataset_labels, options=options
        ).metrics

    def evaluate_held_out(
        self,
        model: ImageClassifier,
        features: FeaturesT,
        targets: Sequence[str],
        *,
        dataset_labels: Sequence[str],
        options: EvaluationOptions,
    ) -> Evaluation:
        truth = list(targets)
        predictions = top_predictions(model.probabilities(features), model.labels)
        labels = sorted(set(model.labels) | set(truth))
        metrics = classification_metrics(truth, [p.predicted for p in predictions], labels)
        return Evaluation(metrics, predictions)


class MultiLabelImageBackend(Backend[FeaturesT, list[str], ImageClassifier]):
    """Base of multi-label image backends: any number of labels per image."""

    task: ClassVar[str] = IMAGE_MULTI_LABEL

    @classmethod
    def targets(cls, data: TrainingData) -> list[list[str]]:
        return [list(labels or []) for labels in data.multi_labels]

    @classmethod
    def check_dataset(cls, stats: DatasetStats) -> None:
        if not stats.label_counts:
            raise InvalidInput(
                f"dataset {stats.dataset_id} has no labels; add some and train again"
            )

    def evaluate(
        self,
        model: ImageClassifier,
        features: FeaturesT,
        targets: Sequence[list[str]],
        *,
        dataset_labels: Sequence[str],
        options: EvaluationOptions,
    ) -> dict[str, Any]:
        return model.evaluate(features, targets)
