"""What every trainable entity backend shares: its features are the texts themselves.

A trainable entity model extracts entities (``extract``) rather than predicting class
probabilities; the job runner calls ``extract_features`` on what ``featurize`` returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from nlu.entities.prebuilt import Entity
from training.backends import BackendConfig, BackendContext, Progress

__all__ = ["TextEntityBackend", "TextEntityModel"]


class TextEntityModel:
    """Base of entity models over raw texts; subclasses implement ``extract``."""

    task = "entities"
    feature_key = "texts"

    def featurize(self, texts: Sequence[str]) -> list[str]:
        return list(texts)

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        raise NotImplementedError

    def extract_features(self, features: Sequence[str]) -> list[list[Entity]]:
        return self.extract(features)

    def predict_features(self, features: Any) -> Any:  # pragma: no cover - not a classifier
        raise TypeError("an entity model extracts entities; it has no class probabilities")


class TextEntityBackend:
    """Base of entity backends over raw texts: featurising is the identity."""

    task: ClassVar[str] = "entities"

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    def featurize(
        self,
        texts: Sequence[str],
        progress: Progress | None = None,
        *,
        config: BackendConfig | None = None,
    ) -> list[str]:
        if progress is not None:
            progress(1.0)
        return list(texts)
