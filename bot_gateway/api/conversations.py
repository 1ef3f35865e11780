"""Conversations: list (by bot, by status), read with events, forget a customer, and hand a
conversation to a person or back to the bot."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from bot_gateway.conversations import bots as bot_service
from bot_gateway.deps import AdminDep, Gateway, GatewayDep, PredictDep
from bot_gateway.schemas import (
    ConversationDetail,
    ConversationPage,
    ConversationPublic,
    ConversationTurn,
    RowNumber,
)
from core.db import session_scope
from core.tables import Bot
from core.tenants import Principal

router = APIRouter(prefix="/conversations", tags=["conversations"])


@router.get("", response_model=ConversationPage)
async def list_conversations(
    principal: PredictDep,
    gateway: GatewayDep,
    bot_id: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: RowNumber = 0,
) -> ConversationPage:
    """Most recently active first; ``status=waiting_for_agent`` lists handed-off ones."""
    items, total = await gateway.conversations.store.list(
        principal.tenant_id, bot_id=bot_id, status=status, limit=limit, offset=offset
    )
    return ConversationPage(
        items=[ConversationPublic.of(r) for r in items], total=total, limit=limit, offset=offset
    )


@router.get("/{conversation_id}", response_model=ConversationDetail)
async def get_conversation(
    conversation_id: str,
    principal: PredictDep,
    gateway: GatewayDep,
    after: Annotated[RowNumber, Query(description="only events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> ConversationDetail:
    """The conversation and its events (user messages with their parse, bot messages, slots,
    actions, flows, handoffs), oldest first."""
    store = gateway.conversations.store
    record = await store.get(principal.tenant_id, conversation_id)
    events = await store.events(principal.tenant_id, conversation_id, after=after, limit=limit)
    return ConversationDetail(**ConversationPublic.of(record).model_dump(), events=events)


@router.delete("/{conversation_id}", status_code=204, response_class=Response)
async def delete_conversation(
    conversation_id: str, principal: AdminDep, gateway: GatewayDep
) -> Response:
    """Forget a customer: the conversation, its events and the images they sent."""
    keys = await gateway.conversations.store.delete(principal.tenant_id, conversation_id)
    for key in keys:
        await run_in_threadpool(gateway.store.delete_prefix, key)
    return Response(status_code=204)


async def _control(
    gateway: Gateway, principal: Principal, conversation_id: str, what: str
) -> ConversationTurn:
    runtime = gateway.conversations
    record = await runtime.store.get(principal.tenant_id, conversation_id)

    def load_bot() -> Bot:
        with session_scope(gateway.engine) as session:
            return bot_service.get_bot(session, principal.tenant_id, record.bot_id)

    bot = await run_in_threadpool(load_bot)
    outcome = await runtime.control(bot_service.bot_info(bot), record, what)
    for item in outcome.messages:
        runtime.hub.said(outcome.conversation_id, item)
    runtime.hub.publish(outcome.conversation_id, {"type": "status", "status": outcome.status})
    return ConversationTurn(
        conversation_id=outcome.conversation_id,
        status=outcome.status,
        messages=[m.to_wire() for m in outcome.messages],
    )


@router.post("/{conversation_id}/handoff", response_model=ConversationTurn)
async def handoff(
    conversation_id: str, principal: PredictDep, gateway: GatewayDep
) -> ConversationTurn:
    """Move the conversation to ``waiting_for_agent``: the bot stops answering it."""
    return await _control(gateway, principal, conversation_id, "handoff")


@router.post("/{conversation_id}/release", response_model=ConversationTurn)
async def release(
    conversation_id: str, principal: PredictDep, gateway: GatewayDep
) -> ConversationTurn:
    """Give the conversation back to the bot."""
    return await _control(gateway, principal, conversation_id, "release")
