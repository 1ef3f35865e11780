"""Conversations: list (by bot, by status), read with events, forget a customer, and hand a
conversation to a person or back to the bot."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from bot_gateway.deps import AdminDep, Gateway, GatewayDep, PredictDep
from bot_gateway.schemas import (
    ConversationDetail,
    ConversationPage,
    ConversationPublic,
    ConversationTurn,
    RowNumber,
)
from bot_gateway.services import handoffs
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
    await handoffs.forget(gateway, principal.tenant_id, conversation_id)
    return Response(status_code=204)


async def _control(
    gateway: Gateway,
    principal: Principal,
    conversation_id: str,
    what: Literal["handoff", "release"],
) -> ConversationTurn:
    outcome = await handoffs.control(gateway, principal.tenant_id, conversation_id, what)
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
