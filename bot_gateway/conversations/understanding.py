"""What the runtime hands the dialog engine about one customer message, typed: the NLU
``Parse`` (Rasa's ``/model/parse`` shape) and a ``VisionResult`` per vision step that looked at
an attached image.

Both are read from the prediction side's JSON (``Parse.of``, ``Seen.of``) and keep whatever
else it held (``model_id``, an entity's ``confidence`` and ``extractor``, OCR ``lines``...), so
``to_rasa()`` / ``to_dict()`` give back exactly the keys that came in: that is what the
tracker stores (``parse_data``, a ``vision`` event's ``result``) and what an action server
reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Entity", "Intent", "Parse", "Scored", "Seen", "VisionResult"]


class _Shape(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: the keys it was given (or set), nothing added."""
        return self.model_dump(mode="json", exclude_unset=True)


class Intent(_Shape):
    name: str
    confidence: float = 0.0


class Entity(_Shape):
    """An entity NLU found (or a button payload carried): ``value`` is text, a number, ..."""

    entity: str
    value: Any = None
    start: int = 0
    end: int = 0
    role: str | None = None
    group: str | None = None


class Parse(_Shape):
    """What NLU made of a message. ``payload``: the message was a button's ``/intent{...}``
    payload (confidence 1.0, no NLU; its title is not an answer the customer typed)."""

    text: str | None = None
    intent: Intent | None = None
    intent_ranking: tuple[Intent, ...] = ()
    entities: tuple[Entity, ...] = ()
    out_of_scope: bool = False
    payload: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | Parse) -> Parse:
        """A parse from its Rasa-shaped JSON."""
        return data if isinstance(data, Parse) else cls.model_validate(data)

    @property
    def intent_name(self) -> str | None:
        return self.intent.name if self.intent is not None else None

    @property
    def confidence(self) -> float:
        return self.intent.confidence if self.intent is not None else 0.0

    def with_intent(self, name: str) -> Parse:
        """This parse with ``name`` as its intent, at confidence 1.0 (a vision step's)."""
        return self.model_copy(update={"intent": Intent(name=name, confidence=1.0)})

    def with_text(self, text: str) -> Parse:
        return self.model_copy(update={"text": text})

    def to_rasa(self) -> dict[str, Any]:
        """Rasa's ``parse_data`` / ``latest_message``."""
        return self.to_dict()


class Scored(_Shape):
    """A label of an image model: its probability, and for detection its ``box``."""

    label: str
    probability: float = 0.0
    box: dict[str, float] | None = None


class Seen(_Shape):
    """An image model's answer for one image (the predict response): classification
    ``probabilities`` (detection: boxes), multi-label ``labels``, OCR ``text``."""

    probabilities: tuple[Scored, ...] | None = None
    labels: tuple[str, ...] | None = None
    text: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | Seen) -> Seen:
        return data if isinstance(data, Seen) else cls.model_validate(data)

    def top_label(self) -> str | None:
        return self.probabilities[0].label if self.probabilities else None


@dataclass(frozen=True)
class VisionResult:
    """What one of the bot's vision steps made of an attached image."""

    step: str
    model: str
    result: Seen
