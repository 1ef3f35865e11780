"""Slot values: a customer's answer, an entity or a vision step's result read as a slot's type
(``coerce``, ``vision_value``), and the comparisons flows and response conditions make
(``norm``, ``as_number``)."""

from __future__ import annotations

import re
from typing import Any

from bot_gateway.conversations.definition import Slot
from bot_gateway.conversations.understanding import Scored, Seen

__all__ = ["as_number", "coerce", "norm", "vision_value"]

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")
_YES = frozenset({"yes", "y", "yeah", "yep", "sure", "true", "ok", "okay", "correct", "right"})
_NO = frozenset({"no", "n", "nope", "nah", "false", "wrong", "not really"})


def norm(value: Any) -> Any:
    """Text compared without case or surrounding spaces; other values as they are."""
    return value.strip().lower() if isinstance(value, str) else value


def as_number(value: Any) -> float | None:
    """The number a value is, or the first number in its text (``"2 kg"``: 2.0); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _NUMBER.search(value)
        if m:
            return float(m.group(0).replace(",", "."))
    return None


def coerce(slot: Slot, value: Any) -> Any:
    """``value`` as the slot's type, or None when it cannot be one."""
    if value is None:
        return None
    if slot.type == "any":
        return value
    if slot.type == "list":
        return value if isinstance(value, list) else [value]
    if slot.type == "number":
        number = as_number(value)
        if (
            number is None
            or (slot.min is not None and number < slot.min)
            or (slot.max is not None and number > slot.max)
        ):
            return None
        return int(number) if number.is_integer() else number
    if slot.type == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower().rstrip(".!")
        return True if text in _YES else False if text in _NO else None
    text = str(value).strip()
    if slot.type == "categorical":
        values = slot.values or []
        exact = [v for v in values if v.lower() == text.lower()]
        if exact:
            return exact[0]
        inside = [v for v in values if re.search(rf"\b{re.escape(v.lower())}\b", text.lower())]
        return inside[0] if len(inside) == 1 else None
    return text or None


def vision_value(vslot: Any, result: Seen) -> Any:
    """A slot value from one vision result (OCR text by regex; a label's probability; boxes)."""
    if vslot.regex is not None:
        text = result.text or ""
        m = re.search(vslot.regex, text)
        if m is None:
            return None
        return m.group(1) if m.groups() else m.group(0)
    labels = result.labels
    hits = [
        p
        for p in result.probabilities or ()
        if p.label == vslot.label and p.probability >= vslot.min_probability
    ]
    if labels is not None and vslot.label in labels and not hits:
        hits = [Scored(label=vslot.label)]
    if any(p.box is not None for p in hits):
        return (vslot.value if vslot.value is not None else len(hits)) if hits else None
    if hits:
        return vslot.value if vslot.value is not None else True
    return False if vslot.value is None else None
