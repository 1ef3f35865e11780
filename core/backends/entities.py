"""The entities task: the base of every trainable entity backend, and the entity type.

Targets are the entity spans of each text (``EntityAnnotation``, as datasets store them);
a model extracts ``Entity`` spans (``extract``), and a held-out split is scored by exact
spans: precision, recall and F1 per entity type and micro-averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, NotRequired, Protocol, TypedDict, cast

from core.backends.base import Backend, DatasetStats, EvaluationOptions, FeaturesT, TrainingData
from core.errors import InvalidInput
from core.evaluation import entity_metrics

__all__ = ["ENTITIES", "Entity", "EntityAnnotation", "EntityBackend", "EntityModel"]

ENTITIES = "entities"


@dataclass(frozen=True)
class Entity:
    """One entity: ``text[start:end]`` is the span (character offsets into the input text)."""

    entity: str
    value: str
    start: int
    end: int
    confidence: float
    extractor: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EntityAnnotation(TypedDict):
    """One annotated span of a training text, as a dataset stores it."""

    start: int
    end: int
    entity: str
    value: NotRequired[str]


class EntityModel(Protocol):
    """A trained entity model: the entity types it learnt and the spans it finds."""

    labels: list[str]

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]: ...
    def extract_features(self, features: Any) -> list[list[Entity]]: ...
    def save(self, directory: Path) -> None: ...


class EntityBackend(Backend[FeaturesT, list[EntityAnnotation], EntityModel]):
    """Base of entity backends: ``FeaturesT`` is what ``featurize`` makes of the texts."""

    task: ClassVar[str] = ENTITIES

    @classmethod
    def targets(cls, data: TrainingData) -> list[list[EntityAnnotation]]:
        return [cast(list[EntityAnnotation], list(spans or [])) for spans in data.annotations]

    @classmethod
    def check_dataset(cls, stats: DatasetStats) -> None:
        if not stats.annotated_examples:
            raise InvalidInput(
                f"dataset {stats.dataset_id} has no entity annotations; annotate entities as "
                "[value](entity) (Rasa), {start, end, entity} (JSON) or BIO tags (CoNLL)"
            )

    def evaluate(
        self,
        model: EntityModel,
        features: FeaturesT,
        targets: Sequence[list[EntityAnnotation]],
        *,
        dataset_labels: Sequence[str],
        options: EvaluationOptions,
    ) -> dict[str, Any]:
        found = model.extract_features(features)
        return entity_metrics(list(targets), [[e.to_dict() for e in row] for row in found])
