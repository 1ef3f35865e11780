"""The dataset types Parley knows, and what each example of a type carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidInput


@dataclass(frozen=True)
class DatasetType:
    name: str
    task: str  # the model task it trains: intent, entities, image-classification, ...
    modality: str  # text or image
    description: str


DATASET_TYPES: dict[str, DatasetType] = {
    t.name: t
    for t in (
        DatasetType("text-intent", "intent", "text", "texts with one intent label each"),
        DatasetType("text-entities", "entities", "text", "texts with entity spans (start, end)"),
        DatasetType("image", "image-classification", "image", "images with one label each"),
        DatasetType(
            "image-multi-label", "image-multi-label", "image", "images with any number of labels"
        ),
        DatasetType("image-detection", "object-detection", "image", "images with labelled boxes"),
    )
}


def get_dataset_type(name: str) -> DatasetType:
    try:
        return DATASET_TYPES[name]
    except KeyError:
        raise InvalidInput(
            f"unknown dataset type {name!r}; known: {', '.join(DATASET_TYPES)}",
            known=list(DATASET_TYPES),
        ) from None


@dataclass(frozen=True)
class ParsedExample:
    """One example as an importer read it, before it becomes a row."""

    line: int
    text: str | None = None
    label: str | None = None
    labels: list[str] | None = None
    annotations: list[dict[str, Any]] | None = None  # entity spans, or an image's boxes
    blob_key: str | None = None
    width: int | None = None
    height: int | None = None
    file: str | None = None
    source: str = "import"


@dataclass
class ParsedDataset:
    examples: list[ParsedExample]
    extras: dict[str, Any] = field(default_factory=dict)
