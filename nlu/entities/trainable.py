"""What every trainable entity backend shares: its features are the texts themselves.

A trainable entity model extracts entities (``extract``) rather than predicting class
probabilities; the job runner calls ``extract_features`` on what ``featurize`` returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.backends import Entity, EntityAnnotation, EntityBackend, TextsBackend
from core.errors import InvalidInput
from nlu.entities.extras import EntityExtras

__all__ = ["TextEntityBackend", "TextEntityModel"]


class TextEntityModel:
    """Base of entity models over raw texts; subclasses implement ``extract`` and set
    ``labels`` (the trained types) and ``extras`` (an ``EntityExtras``)."""

    task = "entities"
    feature_key = "texts"
    labels: list[str]
    extras: EntityExtras

    @property
    def entity_types(self) -> list[str]:
        """Every type ``extract`` can return: the trained ones, the regexes' and lookups'."""
        return sorted(set(self.labels) | self.extras.names)

    def featurize(self, texts: Sequence[str]) -> list[str]:
        return list(texts)

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        raise NotImplementedError

    def extract_features(self, features: Sequence[str]) -> list[list[Entity]]:
        return self.extract(features)

    def predict_features(self, features: Any) -> Any:  # pragma: no cover - not a classifier
        raise TypeError("an entity model extracts entities; it has no class probabilities")


class TextEntityBackend(TextsBackend, EntityBackend[list[str]]):
    """Base of entity backends over raw texts: featurising is the identity."""

    @staticmethod
    def entity_types(labels: Sequence[Sequence[EntityAnnotation]]) -> list[str]:
        """The entity types of the training spans, sorted; ``InvalidInput`` if there are none."""
        types = sorted({span["entity"] for spans in labels for span in spans})
        if not types:
            raise InvalidInput(
                "the dataset has no entity annotations to learn from; annotate entities as "
                "[value](entity) (Rasa), {start, end, entity} (JSON) or BIO tags (CoNLL)"
            )
        return types
