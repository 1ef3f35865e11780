"""``spacy-ner``: a per-dataset entity model — spaCy ``blank("en")`` + ``ner`` — plus the
dataset's Rasa extras: regex patterns and lookup tables find entities without training, and
synonyms map an extracted value to its canonical value.

Saved as spaCy's own folder (``config.cfg`` + thinc weights, no pickle) and ``entities.json``.
"""

from __future__ import annotations

import functools
import json
import random
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from core.backends import (
    BackendConfig,
    Entity,
    EntityAnnotation,
    EpochRecord,
    Progress,
    backends,
    unreadable_model,
)
from core.errors import ModelLoadError
from core.evaluation import entity_metrics
from nlu.entities.extras import EntityExtras
from nlu.entities.trainable import TextEntityBackend, TextEntityModel

FORMAT_VERSION = 1
NER_CONFIDENCE = 0.9
"""spaCy's greedy NER scores no entity: one documented constant for all of them."""


class SpacyNerConfig(BackendConfig):
    epochs: int = Field(default=15, ge=1, le=200)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    batch_size: int = Field(default=8, ge=1, le=1024)


def _spacy() -> Any:
    try:
        import spacy
    except ImportError as e:  # pragma: no cover - spaCy is a dependency
        raise ModelLoadError("spaCy is not installed; `pip install spacy`") from e
    return spacy


class SpacyNerModel(TextEntityModel):
    """Extracts entities: the trained NER, then regexes and lookups where NER found nothing."""

    def __init__(self, nlp: Any, labels: list[str], extras: dict[str, Any]) -> None:
        self.nlp, self.labels = nlp, labels
        self.extras = EntityExtras(extras)
        self._lock = threading.Lock()

    @functools.cached_property
    def nbytes(self) -> int:
        """Memory the NER weights hold, measured once (serialising them is not free)."""
        return len(self.nlp.get_pipe("ner").to_bytes())

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        with self._lock:
            docs = list(self.nlp.pipe(texts))
        return [self._entities(text, doc) for text, doc in zip(texts, docs, strict=True)]

    def _entities(self, text: str, doc: Any) -> list[Entity]:
        found = [
            self.extras.entity(
                ent.label_,
                ent.start_char,
                ent.end_char,
                text,
                extractor="spacy-ner",
                confidence=NER_CONFIDENCE,
            )
            for ent in doc.ents
        ]
        return self.extras.complete(text, found)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.nlp.to_disk(directory / "ner")
        meta = {
            "format_version": FORMAT_VERSION,
            "backend": SpacyNerBackend.name,
            "labels": self.labels,
            "extras": self.extras.raw,
        }
        (directory / "entities.json").write_text(json.dumps(meta, indent=2))


@backends.register("spacy-ner")
class SpacyNerBackend(TextEntityBackend):
    name: ClassVar[str] = "spacy-ner"
    version: ClassVar[str] = "1"
    Config: ClassVar[type[BackendConfig]] = SpacyNerConfig

    def train(
        self,
        features: Sequence[str],
        labels: Sequence[list[EntityAnnotation]],
        config: BackendConfig,
        *,
        seed: int,
        validation: tuple[list[str], Sequence[list[EntityAnnotation]]] | None,
        on_epoch: Callable[[EpochRecord], None] | None,
        progress: Progress,
        extras: dict[str, Any] | None = None,
    ) -> SpacyNerModel:
        assert isinstance(config, SpacyNerConfig)
        spacy = _spacy()
        from spacy.training import Example
        from spacy.util import filter_spans, fix_random_seed, minibatch

        types = self.entity_types(labels)
        fix_random_seed(seed)
        nlp = spacy.blank("en")
        ner = nlp.add_pipe("ner")
        for t in types:
            ner.add_label(t)
        examples = []
        for text, spans in zip(features, labels, strict=True):
            doc = nlp.make_doc(text)
            ents = [
                s
                for span in spans
                if (
                    s := doc.char_span(
                        span["start"], span["end"], label=span["entity"], alignment_mode="expand"
                    )
                )
                is not None
            ]
            ents = filter_spans(ents)
            examples.append(
                Example.from_dict(
                    doc, {"entities": [(e.start_char, e.end_char, e.label_) for e in ents]}
                )
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # spaCy notes about the blank pipeline's settings
            optimizer = nlp.initialize(lambda: examples)
        rng = random.Random(seed)
        model = SpacyNerModel(nlp, types, extras or {})
        for epoch in range(1, config.epochs + 1):
            rng.shuffle(examples)
            losses: dict[str, float] = {}
            for batch in minibatch(examples, size=config.batch_size):
                nlp.update(batch, drop=config.dropout, sgd=optimizer, losses=losses)
            if on_epoch is not None:
                f1 = None
                if validation is not None and len(validation[0]):
                    found = model.extract(validation[0])
                    f1 = entity_metrics(
                        validation[1], [[e.to_dict() for e in row] for row in found]
                    )["micro"]["f1"]
                on_epoch(
                    EpochRecord(
                        epoch, float(losses.get("ner", 0.0)) / max(1, len(examples)), None, None, f1
                    )
                )
            progress(epoch / config.epochs)
        return model

    def load(self, directory: Path) -> SpacyNerModel:
        spacy = _spacy()
        try:
            meta = json.loads((directory / "entities.json").read_text())
            nlp = spacy.load(directory / "ner")
        except (OSError, ValueError) as e:
            raise unreadable_model(f"cannot read the entity model in {directory.name}: {e}") from e
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise unreadable_model(f"the entity model in {directory.name} has an unknown format")
        return SpacyNerModel(nlp, list(meta.get("labels") or []), meta.get("extras") or {})
