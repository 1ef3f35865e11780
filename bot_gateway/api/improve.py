"""The improve inbox of a bot: ``GET /v1/bots/{bot_id}/improve`` (the customers' messages the
bot did not understand, was unsure of, or a person took over, grouped by meaning), ``POST
.../improve/label`` (into the NLU model's dataset as feedback examples), ``.../dismiss`` and
``.../retrain`` (a model like the bot's, with the feedback, promoted to the bot's alias when it
succeeds). Train scope. What makes an item: ``bot_gateway.services.improve``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from bot_gateway.deps import GatewayDep, TrainDep
from bot_gateway.schemas import (
    ImproveDismiss,
    ImproveDismissed,
    ImproveGroup,
    ImproveInbox,
    ImproveItemPublic,
    ImproveLabel,
    ImproveLabelled,
    ModelPublic,
)
from bot_gateway.services import improve as service
from core.db import session_scope
from training import registry

router = APIRouter(prefix="/bots", tags=["improve"])


@router.get("/{bot_id}/improve", response_model=ImproveInbox)
async def get_inbox(
    bot_id: str,
    principal: TrainDep,
    gateway: GatewayDep,
    status: Annotated[
        str, Query(description="open (default), labelled, dismissed or all")
    ] = "open",
    similarity: Annotated[
        float, Query(ge=0, le=1, description="cosine similarity that joins a group")
    ] = service.SIMILARITY,
) -> ImproveInbox:
    """The bot's improve inbox: customers' messages (last 90 days) that fell back, were
    understood with low confidence, or were said to a person after a fallback, grouped by
    meaning; label a group's items with an intent (or as out of scope), then retrain."""

    def read() -> tuple[service.BotNlu, list[service.Item], float]:
        with session_scope(gateway.engine) as session:
            nlu = service.bot_nlu(session, principal.tenant_id, bot_id)
            items = service.inbox_items(session, nlu.bot, status=status)
            threshold = service.unsure_below(nlu.bot)
            return nlu, items, threshold

    nlu, items, threshold = await run_in_threadpool(read)
    groups = await run_in_threadpool(
        service.group_items, items, gateway.cache.context, similarity=similarity
    )
    return ImproveInbox(
        bot_id=nlu.bot.id,
        model_id=nlu.model.id,
        dataset_id=nlu.dataset_id,
        alias=nlu.alias,
        intents=service.intents(nlu),
        low_confidence_below=threshold,
        groups=[
            ImproveGroup(
                id=g.id,
                size=len(g.items),
                suggested_intent=g.suggested_intent,
                items=[ImproveItemPublic.model_validate(i) for i in g.items],
            )
            for g in groups
        ],
    )


@router.post("/{bot_id}/improve/label", response_model=ImproveLabelled)
async def label_items(
    bot_id: str, body: ImproveLabel, principal: TrainDep, gateway: GatewayDep
) -> ImproveLabelled:
    """Add the items' texts to the dataset of the bot's NLU model as feedback examples
    (``source: feedback``) of ``intent``, or of ``out_of_scope``; they train with
    ``params.with_feedback`` (``POST .../improve/retrain``)."""

    def write() -> ImproveLabelled:
        with session_scope(gateway.engine) as session:
            nlu = service.bot_nlu(session, principal.tenant_id, bot_id)
            added = service.label(
                session,
                nlu,
                body.item_ids,
                intent=body.intent,
                out_of_scope=body.out_of_scope,
                limits=gateway.limits,
            )
            return ImproveLabelled(
                added=added, labelled=len(set(body.item_ids)), dataset_id=nlu.dataset_id
            )

    return await run_in_threadpool(write)


@router.post("/{bot_id}/improve/dismiss", response_model=ImproveDismissed)
async def dismiss_items(
    bot_id: str, body: ImproveDismiss, principal: TrainDep, gateway: GatewayDep
) -> ImproveDismissed:
    """Take the items out of the inbox without adding anything."""

    def write() -> ImproveDismissed:
        with session_scope(gateway.engine) as session:
            nlu = service.bot_nlu(session, principal.tenant_id, bot_id)
            return ImproveDismissed(dismissed=service.dismiss(session, nlu, body.item_ids))

    return await run_in_threadpool(write)


@router.post("/{bot_id}/improve/retrain", status_code=202, response_model=ModelPublic)
async def retrain(bot_id: str, principal: TrainDep, gateway: GatewayDep) -> ModelPublic:
    """Train a model like the bot's (same dataset, backend and params) with its feedback
    examples (``with_feedback: true``), promoted to the bot's alias when it succeeds; poll it
    with ``GET /v1/models/{id}``. A bot that named its model by id follows alias
    ``bot-<bot id>`` from now on."""

    def write() -> ModelPublic:
        with session_scope(gateway.engine) as session:
            nlu = service.bot_nlu(session, principal.tenant_id, bot_id)
            model = service.retrain(session, nlu)
            session.commit()
            gateway.queue.submit(model.id)
            return ModelPublic.of(model, registry.queue_position(session, model))

    return await run_in_threadpool(write)
