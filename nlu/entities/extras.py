"""A dataset's Rasa extras, applied the same way by every trainable entity model.

``extras`` is the dict the importers keep beside a dataset (all keys optional)::

    {"synonyms": {canonical: [variant, ...]},
     "regexes": {entity: [pattern, ...]},
     "lookups": {entity: [value, ...]}}

Regex patterns and lookup values find entities without training, but only where the trained
model found nothing (a match that overlaps a model's entity, or an earlier match, is
dropped); regexes are tried before lookups, longer lookup values before shorter ones, and a
lookup value matches case-insensitively between word boundaries. Synonyms map an extracted
value (model, regex or lookup) to its canonical value.
"""

from __future__ import annotations

import re
from typing import Any

from core.backends import Entity

__all__ = ["EntityExtras"]


class EntityExtras:
    """Synonyms, regexes and lookups of one dataset; immutable, so safe across threads."""

    def __init__(self, extras: dict[str, Any] | None) -> None:
        self.raw: dict[str, Any] = dict(extras or {})
        self.synonyms = {
            variant: canonical
            for canonical, variants in (self.raw.get("synonyms") or {}).items()
            for variant in variants
        }
        regexes = [
            (name, re.compile(p))
            for name, patterns in (self.raw.get("regexes") or {}).items()
            for p in patterns
        ]
        lookups = [
            (name, re.compile(r"(?<!\w)" + re.escape(v) + r"(?!\w)", re.IGNORECASE))
            for name, values in (self.raw.get("lookups") or {}).items()
            for v in sorted(values, key=len, reverse=True)
        ]
        self._tables = (("regex", regexes), ("lookup", lookups))

    @property
    def names(self) -> set[str]:
        """The entity types the regexes and lookups extract (each is named by its entity)."""
        return {name for _, table in self._tables for name, _ in table}

    def entity(
        self, label: str, start: int, end: int, text: str, *, extractor: str, confidence: float
    ) -> Entity:
        """The entity ``text[start:end]``, its value mapped through the synonyms."""
        raw = text[start:end]
        return Entity(
            entity=label,
            value=self.synonyms.get(raw, raw),
            start=start,
            end=end,
            confidence=confidence,
            extractor=extractor,
        )

    def complete(self, text: str, found: list[Entity]) -> list[Entity]:
        """``found`` (a model's entities) plus regex and lookup matches where it found
        nothing, sorted by ``start``."""
        found = list(found)
        taken = [(e.start, e.end) for e in found]
        for extractor, table in self._tables:
            for name, pattern in table:
                for m in pattern.finditer(text):
                    if m.end() > m.start() and not any(
                        m.start() < e and s < m.end() for s, e in taken
                    ):
                        found.append(
                            self.entity(
                                name, m.start(), m.end(), text, extractor=extractor, confidence=1.0
                            )
                        )
                        taken.append((m.start(), m.end()))
        return sorted(found, key=lambda e: e.start)
