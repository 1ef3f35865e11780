"""Channels: connect a bot to Slack, Telegram, Twilio (SMS/WhatsApp) or Messenger, and the
webhook route every provider calls.

``POST /v1/bots/{bot_id}/channels`` ``{type, config}`` checks the config against the connector's
schema and answers the channel's ``id`` and public ``webhook_url``; secrets are write-only.
Where the provider has an API for the webhook (Telegram), the channel is registered there: the
channel is created (201) whether that works or not, and its ``registration`` says how it went
(``registered``, ``failed`` with the provider's message, or ``not_needed``);
``POST /v1/bots/{bot_id}/channels/{channel_id}/register`` tries again.
``POST /webhooks/{channel_id}`` (and ``GET`` for verification handshakes) is signed by the
provider, not by an API key: the connector verifies it (a bad signature is a 401 and counted),
parses it, and the gateway answers at once — the conversation (media download, NLU, vision,
dialog, replies through the connector) runs in the background, in order per conversation. A
reply the provider will not take is recorded on the conversation as ``delivery_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from sqlalchemy import select

from bot_gateway.conversations import bots as bot_service
from bot_gateway.conversations.runtime import Inbound
from bot_gateway.deps import Gateway, GatewayDep, PredictDep, SessionDep, TrainDep
from bot_gateway.services.delivery import connector_for, deliver, public_base, webhook_url
from bot_gateway.services.uploads import store_upload
from connectors.base import Connector, InboundMessage, WebhookRequest
from connectors.registry import connectors
from core.db import session_scope
from core.errors import (
    DeliveryFailed,
    InvalidInput,
    LimitExceeded,
    NotFound,
    ParleyError,
    Unauthenticated,
)
from core.ids import new_id
from core.logging import log_event
from core.metrics import counters
from core.secrets import SecretBox, seal_config, secret_fields
from core.tables import Bot, Channel

router = APIRouter(tags=["channels"])
webhook_router = APIRouter(tags=["channels"])

MAX_WEBHOOK_BYTES = 1024 * 1024
MEDIA_REFUSED = (
    "Sorry, I couldn't open that image: please send a photo (JPEG or PNG) of at most {limit} MB."
)


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="slack, telegram, twilio or messenger")
    config: dict[str, Any]


class ChannelRegistration(BaseModel):
    """How telling the provider about the webhook went (``Channel.registration``)."""

    status: Literal["registered", "failed", "not_needed"] = Field(
        description="registered; failed (see message; retry with POST .../register); "
        "not_needed (the provider is given webhook_url by hand)"
    )
    message: str | None = Field(default=None, description="why it failed")


class ChannelPublic(BaseModel):
    id: str
    bot_id: str
    type: str
    config: dict[str, Any] = Field(description="the settings, without secrets")
    webhook_url: str = Field(description="give this URL to the provider")
    capabilities: dict[str, bool]
    registration: ChannelRegistration | None = Field(
        default=None, description="the webhook's registration with the provider (null: unknown)"
    )
    created_at: Any


def _stored_config(config: BaseModel, box: SecretBox) -> dict[str, Any]:
    """The config as stored: secrets encrypted with PARLEY_SECRET_KEY (``core.secrets``; in
    clear without a key); the API never returns them."""
    out = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        out[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return seal_config(box, out, secret_fields(type(config)))


def _public_config(connector_cls: type[Connector[Any]], stored: dict[str, Any]) -> dict[str, Any]:
    secrets = secret_fields(connector_cls.Config)
    return {name: value for name, value in stored.items() if name not in secrets}


def _public(channel: Channel, base: str) -> ChannelPublic:
    cls = connectors.get(channel.type)
    caps = cls.capabilities
    return ChannelPublic(
        id=channel.id,
        bot_id=channel.bot_id,
        type=channel.type,
        config=_public_config(cls, channel.config),
        webhook_url=webhook_url(base, channel.id),
        capabilities={k: bool(getattr(caps, k)) for k in caps.__dataclass_fields__},
        registration=(
            ChannelRegistration.model_validate(channel.registration)
            if channel.registration
            else None
        ),
        created_at=channel.created_at,
    )


async def register(gateway: Gateway, channel: Channel, base: str) -> Channel:
    """Tell the provider where the channel's webhook is, and keep how it went on the channel
    (``registration``); a provider that cannot be reached or refuses is ``failed``, logged and
    counted, never an error of the caller's request."""
    connector = connector_for(gateway, channel, base)
    if type(connector).register is Connector.register:
        outcome = ChannelRegistration(status="not_needed")
    else:
        try:
            await connector.register()
            outcome = ChannelRegistration(status="registered")
        except ParleyError as e:
            counters.incr("channel.register_failed", channel=channel.type)
            log_event("channel.register_failed", channel=channel.id, error=e.message)
            outcome = ChannelRegistration(
                status="failed",
                message=f"{channel.type} did not take the webhook: {e.message}; retry with "
                f"POST /v1/bots/{channel.bot_id}/channels/{channel.id}/register",
            )

    def save() -> Channel:
        with session_scope(gateway.engine) as session:
            row = session.get(Channel, channel.id)
            if row is None:
                raise NotFound(f"channel {channel.id} not found")
            row.registration = outcome.model_dump()
            return row

    return await run_in_threadpool(save)


@router.post("/bots/{bot_id}/channels", status_code=201, response_model=ChannelPublic)
async def create_channel(
    bot_id: str, body: ChannelCreate, request: Request, principal: TrainDep, gateway: GatewayDep
) -> ChannelPublic:
    """Connect the bot to a channel; where the platform has an API for it (Telegram), the
    webhook is registered there too. The channel is created even when that fails:
    ``registration`` says how it went, and ``POST .../register`` tries again."""
    cls = connectors.get(body.type)
    try:
        config = cls.Config.model_validate(body.config)
    except ValidationError as e:
        problems = "; ".join(
            f"config.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()
        )
        raise InvalidInput(f"invalid {body.type} config: {problems}") from e

    def save() -> Channel:
        with session_scope(gateway.engine) as session:
            bot_service.get_bot(session, principal.tenant_id, bot_id)
            channel = Channel(
                id=new_id("channel"),
                tenant_id=principal.tenant_id,
                bot_id=bot_id,
                type=body.type,
                config=_stored_config(config, gateway.secrets),
            )
            session.add(channel)
            return channel

    channel = await run_in_threadpool(save)
    base = public_base(gateway, request)
    return _public(await register(gateway, channel, base), base)


@router.get("/bots/{bot_id}/channels", response_model=list[ChannelPublic])
def list_channels(
    bot_id: str, request: Request, principal: PredictDep, session: SessionDep, gateway: GatewayDep
) -> list[ChannelPublic]:
    bot_service.get_bot(session, principal.tenant_id, bot_id)
    rows = session.scalars(
        select(Channel).where(Channel.bot_id == bot_id).order_by(Channel.created_at)
    )
    return [_public(c, public_base(gateway, request)) for c in rows]


def _channel(session: Any, tenant_id: str, bot_id: str, channel_id: str) -> Channel:
    channel = session.get(Channel, channel_id)
    if channel is None or channel.tenant_id != tenant_id or channel.bot_id != bot_id:
        raise NotFound(f"channel {channel_id} not found")
    return channel


@router.get("/bots/{bot_id}/channels/{channel_id}", response_model=ChannelPublic)
def get_channel(
    bot_id: str,
    channel_id: str,
    request: Request,
    principal: PredictDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> ChannelPublic:
    channel = _channel(session, principal.tenant_id, bot_id, channel_id)
    return _public(channel, public_base(gateway, request))


@router.post("/bots/{bot_id}/channels/{channel_id}/register", response_model=ChannelPublic)
async def register_channel(
    bot_id: str, channel_id: str, request: Request, principal: TrainDep, gateway: GatewayDep
) -> ChannelPublic:
    """Register the channel's webhook with the provider again (after ``registration`` said
    ``failed``, or after ``PARLEY_PUBLIC_URL`` changed); answers the channel with its new
    ``registration``."""

    def load() -> Channel:
        with session_scope(gateway.engine) as session:
            return _channel(session, principal.tenant_id, bot_id, channel_id)

    channel = await run_in_threadpool(load)
    base = public_base(gateway, request)
    return _public(await register(gateway, channel, base), base)


@router.delete("/bots/{bot_id}/channels/{channel_id}", status_code=204)
def delete_channel(
    bot_id: str, channel_id: str, principal: TrainDep, session: SessionDep
) -> Response:
    session.delete(_channel(session, principal.tenant_id, bot_id, channel_id))
    return Response(status_code=204)


# --- the webhook route ------------------------------------------------------------------------


async def _webhook_request(request: Request) -> WebhookRequest:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_WEBHOOK_BYTES:
        raise InvalidInput("the webhook body is too large")
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise InvalidInput("the webhook body is too large")
    return WebhookRequest(
        method=request.method,
        url=str(request.url),
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        body=body,
    )


async def _load(gateway: Gateway, channel_id: str) -> tuple[Channel, Bot]:
    def load() -> tuple[Channel, Bot]:
        with session_scope(gateway.engine) as session:
            channel = session.get(Channel, channel_id)
            bot = session.get(Bot, channel.bot_id) if channel is not None else None
            if channel is None or bot is None:
                raise NotFound(f"no channel {channel_id}")
            bot_service.refresh_status(session, bot)
            return channel, bot

    return await run_in_threadpool(load)


def _signed_url(gateway: Gateway, request: Request, channel_id: str) -> str:
    """The URL the provider called (Twilio signs it): the public URL when one is set."""
    if gateway.settings.public_url is None:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return webhook_url(gateway.settings.public_url.rstrip("/"), channel_id) + query


@webhook_router.api_route("/webhooks/{channel_id}", methods=["GET", "POST"])
async def webhook(channel_id: str, request: Request, gateway: GatewayDep) -> Response:
    """A provider's call (see the module docstring)."""
    channel, bot = await _load(gateway, channel_id)
    await gateway.admission.admit_tenant(request, channel.tenant_id)  # webhook_tenant bucket
    base = public_base(gateway, request)
    connector = connector_for(gateway, channel, base)
    raw = await _webhook_request(request)
    raw = WebhookRequest(
        method=raw.method,
        url=_signed_url(gateway, request, channel_id),
        headers=raw.headers,
        query=raw.query,
        body=raw.body,
        received_at=raw.received_at,
    )
    if request.method == "GET":
        reply = connector.handshake(raw)
        if reply is None:
            raise NotFound(f"{channel.type} channels have no GET handshake")
        return Response(reply.body, reply.status, media_type=reply.media_type)
    try:
        connector.verify(raw)
    except Unauthenticated:
        counters.incr("webhook.signature_failed", channel=channel.type)
        log_event("webhook.signature_failed", channel=channel.id, type=channel.type)
        raise
    try:
        result = connector.parse(raw)
    except InvalidInput as e:  # 200 anyway: the provider would only retry it
        counters.incr("webhook.ignored", channel=channel.type)
        log_event("webhook.ignored", channel=channel.id, type=channel.type, reason=e.message)
        return Response(status_code=200)
    for message in result.messages:
        task = asyncio.create_task(converse(gateway, channel, bot, connector, message))
        gateway.background.add(task)
        task.add_done_callback(gateway.background.discard)
    reply = result.reply
    return Response(reply.body, reply.status, media_type=reply.media_type)


async def converse(
    gateway: Gateway, channel: Channel, bot: Bot, connector: Connector[Any], message: InboundMessage
) -> None:
    """One customer message from a channel, answered through the same channel."""
    runtime = gateway.conversations
    try:
        uploads = []
        for media in message.media:
            try:
                data = await connector.fetch(
                    media, max_bytes=gateway.settings.limits.max_image_bytes
                )
                stored = await store_upload(gateway, bot, data, media.file_id or "image")
            except (InvalidInput, LimitExceeded, DeliveryFailed) as e:  # too big, expired, …
                log_event("channel.media_refused", channel=channel.id, error=e.message)
                counters.incr("channel.media_refused", channel=channel.type)
                limit_mb = gateway.settings.limits.max_image_bytes / 1024 / 1024
                refusal = {"text": MEDIA_REFUSED.format(limit=f"{limit_mb:g}")}
                with contextlib.suppress(DeliveryFailed):
                    await connector.send(message.sender_id, refusal, message.metadata)
                if not message.text and not message.payload:
                    return
                continue
            uploads.append(stored.upload_id)
        outcome = await runtime.handle(
            bot_service.bot_info(bot),
            channel.id,
            Inbound(
                sender_id=message.sender_id,
                text=message.text,
                payload=message.payload,
                uploads=tuple(uploads),
                message_id=message.message_id,
                metadata=message.metadata,
            ),
        )
    except ParleyError as e:
        counters.incr("channel.turn_failed", channel=channel.type)
        log_event("channel.turn_failed", channel=channel.id, error=e.message)
        return
    except Exception as e:  # noqa: BLE001 - a background task: log, never crash the loop
        log_event("channel.turn_crashed", channel=channel.id, error=repr(e))
        return
    for item in outcome.messages:
        runtime.hub.said(outcome.conversation_id, item)
        await deliver(
            gateway,
            connector,
            outcome.conversation_id,
            message.sender_id,
            item,
            metadata=message.metadata,
        )
