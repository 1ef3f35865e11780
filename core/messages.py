"""The message a bot (or an agent) sends a customer: the one typed payload between the dialog
engine, the conversation runtime and every channel connector.

Its JSON shape (``to_wire``) is what web chat frames, the REST channel and the tracker's ``bot``
events have always carried: only the parts a message has, e.g.
``{"text": "Hi", "buttons": [{"title": "Track", "payload": "/track"}]}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Button", "Card", "OutboundMessage"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Button(_Part):
    """A button or quick reply: what the customer sees and the payload sent back when tapped;
    a link button (``url``) opens a page instead, on channels that have them (Telegram)."""

    title: str
    payload: str = ""
    url: str | None = None


class Card(_Part):
    """One card of a carousel."""

    title: str | None = None
    subtitle: str | None = None
    image: str | None = None
    buttons: tuple[Button, ...] = ()


class OutboundMessage(_Part):
    """One message to a customer. Kinds a channel cannot show degrade to text
    (``connectors.base.as_text``); ``custom`` is passed through to channels that understand it
    (web chat, REST)."""

    text: str | None = None
    buttons: tuple[Button, ...] = ()
    quick_replies: tuple[Button, ...] = ()
    image: str | None = None
    cards: tuple[Card, ...] = ()
    custom: dict[str, Any] | None = Field(default=None)

    @classmethod
    def of(cls, data: dict[str, Any] | OutboundMessage) -> OutboundMessage:
        """A message from its wire shape (a stored event's data, an action server's reply)."""
        if isinstance(data, OutboundMessage):
            return data
        return cls.model_validate(data)

    def options(self) -> list[Button]:
        """The buttons and quick replies, in order (numbered on text-only channels)."""
        return [*self.buttons, *self.quick_replies]

    def is_empty(self) -> bool:
        return not (
            self.text
            or self.buttons
            or self.quick_replies
            or self.image
            or self.cards
            or self.custom
        )

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape: only the parts the message has (no nulls, no empty lists)."""
        return self.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
