"""The entity types a trained model can return: its trained labels plus the names of its
dataset's regexes and lookups (what ``entity_labels`` at predict time is checked against)."""

from __future__ import annotations

from nlu.entities.extras import EntityExtras
from nlu.entities.trainable import TextEntityModel


class _Model(TextEntityModel):
    def __init__(self, labels: list[str], extras: dict) -> None:
        self.labels = labels
        self.extras = EntityExtras(extras)


def test_entity_types_join_trained_labels_regexes_and_lookups() -> None:
    model = _Model(
        ["city", "product"],
        {
            "regexes": {"order_id": [r"\b[A-Z]-\d{4}\b"]},
            "lookups": {"product": ["sofa"], "colour": ["red", "blue"]},
            "synonyms": {"headphones": ["earphones"]},
        },
    )
    assert model.entity_types == ["city", "colour", "order_id", "product"]
    assert _Model(["city"], {}).entity_types == ["city"]
