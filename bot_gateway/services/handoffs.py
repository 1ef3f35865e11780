"""Conversations handed to a person or back to the bot through the API (``/v1/conversations``),
and customers forgotten: the conversation, its events and the images they sent."""

from __future__ import annotations

from typing import Literal

from fastapi.concurrency import run_in_threadpool

from bot_gateway.conversations import bots as bot_service
from bot_gateway.conversations.runtime import TurnOutcome
from bot_gateway.deps import Gateway
from bot_gateway.services.delivery import hand_off_stored, handed_off
from core.db import session_scope
from core.tables import Bot

__all__ = ["control", "forget"]


async def control(
    gateway: Gateway,
    tenant_id: str,
    conversation_id: str,
    what: Literal["handoff", "release"],
) -> TurnOutcome:
    """Move a conversation to ``waiting_for_agent`` (``handoff``) or back to the bot
    (``release``); what the bot says and the new status reach the conversation's sockets, and
    a handoff is told to the conversation's channel (``Connector.handoff``)."""
    runtime = gateway.conversations
    record = await runtime.store.get(tenant_id, conversation_id)

    def load_bot() -> Bot:
        with session_scope(gateway.engine) as session:
            return bot_service.get_bot(session, tenant_id, record.bot_id)

    bot = await run_in_threadpool(load_bot)
    outcome = await runtime.control(bot_service.bot_info(bot), record, what)
    for item in outcome.messages:
        runtime.hub.said(outcome.conversation_id, item)
    runtime.hub.publish(outcome.conversation_id, {"type": "status", "status": outcome.status})
    if handed_off(outcome.events):
        await hand_off_stored(gateway, record)
    return outcome


async def forget(gateway: Gateway, tenant_id: str, conversation_id: str) -> None:
    """Delete a conversation, its events and the images sent in it."""
    keys = await gateway.conversations.store.delete(tenant_id, conversation_id)
    for key in keys:
        await run_in_threadpool(gateway.store.delete_prefix, key)
