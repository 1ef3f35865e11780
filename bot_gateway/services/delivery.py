"""Messages leaving through a channel's connector: which connector serves a stored channel,
where providers reach this server, and delivery with failures recorded on the conversation;
also a handoff told to the channel (``Connector.handoff``: a platform with human agents of its
own opens the conversation to them)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from bot_gateway.conversations.events import event
from bot_gateway.deps import Gateway
from connectors.base import Connector
from connectors.registry import connectors
from core.db import session_scope
from core.errors import DeliveryFailed
from core.logging import log_event
from core.messages import OutboundMessage
from core.metrics import counters
from core.secrets import open_config
from core.tables import Channel

__all__ = [
    "connector_for",
    "deliver",
    "hand_off",
    "hand_off_stored",
    "handed_off",
    "public_base",
    "send_to_customer",
    "webhook_url",
]


def public_base(gateway: Gateway, request: Request) -> str:
    """Where providers reach this server: ``PARLEY_PUBLIC_URL``, else the request's own base."""
    return (gateway.settings.public_url or str(request.base_url)).rstrip("/")


def webhook_url(base: str, channel_id: str) -> str:
    return f"{base}/webhooks/{channel_id}"


def connector_for(gateway: Gateway, channel: Channel, base: str) -> Connector[Any]:
    cls = connectors.get(channel.type)
    config = cls.Config.model_validate(open_config(gateway.secrets, channel.config))
    client = gateway.tenant_http if cls.self_hosted else gateway.http  # core.outbound
    return cls(config, client, webhook_url=webhook_url(base, channel.id))


async def deliver(
    gateway: Gateway,
    connector: Connector[Any],
    conversation_id: str,
    recipient: str,
    item: OutboundMessage,
    *,
    metadata: dict[str, Any],
) -> bool:
    """Send one message to the customer; a failure is recorded on the conversation."""
    try:
        await connector.send(recipient, item, metadata)
        return True
    except DeliveryFailed as e:
        counters.incr("channel.delivery_failed", channel=connector.type)
        log_event("channel.delivery_failed", conversation=conversation_id, error=e.message)
        failed = event(
            "delivery_failed", channel=connector.type, error=e.message, message=item.to_wire()
        )
        await gateway.conversations.store.append(conversation_id, [failed])
        return False


async def send_to_customer(
    gateway: Gateway, request: Request, conversation: Any, item: OutboundMessage
) -> bool:
    """An agent's message to the customer, through the conversation's channel when it is a
    connector's (web chat sockets get it from the hub; the REST channel only keeps it)."""

    def load() -> Channel | None:
        with session_scope(gateway.engine) as session:
            return session.get(Channel, conversation.channel)

    channel = await run_in_threadpool(load)
    if channel is None:
        return True
    connector = connector_for(gateway, channel, public_base(gateway, request))
    metadata = conversation.state.get("reply_metadata") or {}
    return await deliver(
        gateway, connector, conversation.id, conversation.sender_id, item, metadata=metadata
    )


def handed_off(events: list[Any]) -> bool:
    """Whether a turn's or a control's ``events`` hand the conversation to a person."""
    return any(getattr(e, "event", None) == "handoff" for e in events)


async def hand_off(
    gateway: Gateway,
    connector: Connector[Any],
    conversation_id: str,
    recipient: str,
    *,
    metadata: dict[str, Any],
) -> bool:
    """Tell the channel that a person takes the conversation over; a failure is recorded on
    the conversation (as a failed delivery) and never raised."""
    try:
        await connector.handoff(recipient, metadata)
        return True
    except DeliveryFailed as e:
        counters.incr("channel.handoff_failed", channel=connector.type)
        log_event("channel.handoff_failed", conversation=conversation_id, error=e.message)
        failed = event("delivery_failed", channel=connector.type, error=e.message, message={})
        await gateway.conversations.store.append(conversation_id, [failed])
        return False


async def hand_off_stored(gateway: Gateway, conversation: Any) -> bool:
    """``hand_off`` for a stored conversation (an API or agent handoff, outside a customer's
    turn), through its channel when that is a connector's."""

    def load() -> Channel | None:
        with session_scope(gateway.engine) as session:
            return session.get(Channel, conversation.channel)

    channel = await run_in_threadpool(load)
    if channel is None or channel.type not in connectors:
        return True
    base = (gateway.settings.public_url or "").rstrip("/")
    connector = connector_for(gateway, channel, base)
    metadata = conversation.state.get("reply_metadata") or {}
    return await hand_off(
        gateway, connector, conversation.id, conversation.sender_id, metadata=metadata
    )
