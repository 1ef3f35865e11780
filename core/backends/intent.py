"""The intent task (text classification): the base of every intent backend.

Targets are one label per text; a held-out split is scored with accuracy, macro-F1, per-label
precision / recall / F1 and the confusion matrix, plus the out-of-scope threshold calibrated
on it. An intent dataset whose examples carry entity spans also trains an entity model (a
joint model, ``joint_entities``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

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
from core.evaluation import calibrate_out_of_scope, classification_metrics

__all__ = ["INTENT", "IntentBackend"]

INTENT = "intent"


class IntentBackend(Backend[FeaturesT, str, TextClassifier]):
    """Base of intent backends: ``FeaturesT`` is what ``featurize`` makes of the texts."""

    task: ClassVar[str] = INTENT
    joint_entities: ClassVar[bool] = True

    @classmethod
    def targets(cls, data: TrainingData) -> list[str]:
        return list(data.labels)

    @classmethod
    def check_dataset(cls, stats: DatasetStats) -> None:
        check_classes(stats)

    def evaluate(
        self,
        model: TextClassifier,
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
        model: TextClassifier,
        features: FeaturesT,
        targets: Sequence[str],
        *,
        dataset_labels: Sequence[str],
        options: EvaluationOptions,
    ) -> Evaluation:
        truth = list(targets)
        probs = model.predict_features(features)
        predictions = top_predictions(probs, model.labels)
        metrics = classification_metrics(truth, [p.predicted for p in predictions], dataset_labels)
        metrics["out_of_scope"] = calibrate_out_of_scope(
            truth,
            probs,
            model.labels,
            fixed=options.out_of_scope_threshold,
            share=options.out_of_scope_share,
        )
        return Evaluation(metrics, predictions)
