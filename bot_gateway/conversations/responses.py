"""Responses: a response variant rendered as the ``OutboundMessage`` the customer gets, with
``{slot}`` (and ``{sender_id}``, ``{bot_name}``) filled in."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bot_gateway.conversations.definition import ResponseVariant
from core.messages import Button, Card, OutboundMessage

__all__ = ["render"]


def render(variant: ResponseVariant, slots: dict[str, Any], **extra: Any) -> OutboundMessage:
    """An outbound message from a response variant, with ``{slot}`` filled in."""
    values = {**{k: _show(v) for k, v in slots.items()}, **{k: str(v) for k, v in extra.items()}}

    def fill(text: str | None) -> str | None:
        if text is None:
            return None
        return re.sub(
            r"\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: values.get(m.group(1), m.group(0)), text
        )

    def buttons(items: Iterable[Any]) -> tuple[Button, ...]:
        return tuple(
            Button(title=fill(b.title) or "", payload=fill(b.payload) or "") for b in items
        )

    return OutboundMessage(
        text=fill(variant.text) if variant.text else None,
        buttons=buttons(variant.buttons),
        quick_replies=buttons(variant.quick_replies),
        image=fill(variant.image) or None,
        cards=tuple(
            Card(
                title=fill(c.title) or None,
                subtitle=fill(c.subtitle) or None,
                image=fill(c.image) or None,
                buttons=buttons(c.buttons),
            )
            for c in variant.cards
        ),
        custom=variant.custom or None,
    )


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value)
    return str(value)
