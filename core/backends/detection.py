"""The object detection task: the base of every detection backend, and its box types.

Targets are the labelled boxes of each image (``BoxAnnotation``, as datasets store them); a
model finds ``Detection``s (label, probability, ``Box``) and scores a held-out split itself
(AP50 per label, ``map50``, ``map``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypedDict, cast

from core.backends.base import Backend, DatasetStats, EvaluationOptions, FeaturesT, TrainingData
from core.errors import InvalidInput

__all__ = [
    "OBJECT_DETECTION",
    "Box",
    "BoxAnnotation",
    "Detection",
    "Detector",
    "ObjectDetectionBackend",
]

OBJECT_DETECTION = "object-detection"


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in pixels (floats); ``x_min <= x_max``, ``y_min <= y_max``.
    The one box type of the vision backends (detections, OCR lines)."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    def clipped(self, width: float, height: float) -> Box:
        """This box cut to an image of ``width`` x ``height`` pixels."""
        return Box(
            x_min=min(max(self.x_min, 0.0), width),
            y_min=min(max(self.y_min, 0.0), height),
            x_max=min(max(self.x_max, 0.0), width),
            y_max=min(max(self.y_max, 0.0), height),
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Detection:
    """One object found in an image."""

    label: str
    probability: float
    box: Box

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probability": self.probability, "box": self.box.to_dict()}


class BoxAnnotation(TypedDict):
    """One labelled box of a training image, as a dataset stores it (pixels)."""

    label: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float


class Detector(Protocol):
    """A trained detector: the labels it finds, the objects in images, its own metrics."""

    labels: list[str]

    def detect(self, images: Sequence[Any], *, min_score: float = 0.5) -> list[list[Detection]]: ...

    def evaluate(self, images: Any, truth: Sequence[list[BoxAnnotation]]) -> dict[str, Any]: ...
    def save(self, directory: Path) -> None: ...


class ObjectDetectionBackend(Backend[FeaturesT, list[BoxAnnotation], Detector]):
    """Base of detection backends: ``FeaturesT`` is what ``featurize`` makes of the images."""

    task: ClassVar[str] = OBJECT_DETECTION

    @classmethod
    def targets(cls, data: TrainingData) -> list[list[BoxAnnotation]]:
        return [cast(list[BoxAnnotation], list(boxes or [])) for boxes in data.annotations]

    @classmethod
    def check_dataset(cls, stats: DatasetStats) -> None:
        if not stats.label_counts:
            raise InvalidInput(f"dataset {stats.dataset_id} has no boxes; add some and train again")

    def evaluate(
        self,
        model: Detector,
        features: FeaturesT,
        targets: Sequence[list[BoxAnnotation]],
        *,
        dataset_labels: Sequence[str],
        options: EvaluationOptions,
    ) -> dict[str, Any]:
        return model.evaluate(features, targets)
