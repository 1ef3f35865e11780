"""Per-connector test kits: what the contract suite (``test_contract.py``) and the route tests
(``tests/bot_gateway/test_api_channels.py``) need to drive any connector the way its provider
would. Each connector's test support module defines one ``Kit`` and adds it to ``KITS`` by
importing this module and calling ``register``."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from connectors.base import Connector, WebhookRequest

__all__ = ["KITS", "Kit", "register"]


class Kit(Protocol):
    type: str  # the connector's registry name
    secret_fields: tuple[str, ...]  # config fields that must never be returned

    def config(self) -> dict[str, Any]:
        """A valid config (fake secrets)."""

    def text_webhook(
        self, connector: Connector[Any], text: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        """A correctly signed webhook carrying one text message, as the provider sends it,
        addressed to ``connector.webhook_url``."""

    def button_webhook(
        self, connector: Connector[Any], payload: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        """A signed webhook of a button click / postback / callback with ``payload``."""

    def image_webhook(
        self, connector: Connector[Any], *, sender: str, message_id: str
    ) -> WebhookRequest:
        """A signed webhook of a customer photo, whose download ``provider`` answers."""

    def unknown_webhook(self, connector: Connector[Any]) -> WebhookRequest:
        """A signed webhook of a shape the connector does not handle (a reaction, a status)."""

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        """The same request with a wrong signature."""

    def stale(self, connector: Connector[Any], text: str) -> WebhookRequest | None:
        """A signed request outside the replay window, or None if the provider stamps none."""

    def provider(self, image: bytes, calls: list[httpx.Request]) -> httpx.MockTransport:
        """A fake of the provider's API: answers sends with success and media downloads with
        ``image``; appends every request it gets to ``calls``."""

    def sent(self, calls: list[httpx.Request]) -> list[dict[str, Any]]:
        """The messages the connector sent, as ``{"to": recipient, "text": text, "buttons":
        [titles]}`` (buttons empty where they were degraded to text)."""


KITS: dict[str, Kit] = {}


def register(kit: Kit) -> Kit:
    KITS[kit.type] = kit
    return kit
