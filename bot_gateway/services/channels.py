"""A bot's messaging channels (Slack, Telegram, Twilio, Messenger): creating one (its config
checked against the connector's schema, secrets sealed with ``PARLEY_SECRET_KEY``), reading them
without their secrets, registering the webhook with the provider, and the webhook intake
(verify, parse, start each message's turn in the background, ``services.conversations``).

Web chat and the REST channel are built in for every bot (``connectors.registry.
builtin_connectors``): they are not channel types and cannot be created.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot_gateway import dedupe
from bot_gateway.conversations import bots as bot_service
from bot_gateway.deps import Gateway
from bot_gateway.services.conversations import converse
from bot_gateway.services.delivery import connector_for, public_base, webhook_url
from connectors.base import Connector, WebhookReply, WebhookRequest
from connectors.registry import builtin_connectors, connectors
from core.db import session_scope
from core.errors import InvalidInput, NotFound, ParleyError, Unauthenticated
from core.ids import new_id
from core.logging import log_event
from core.metrics import counters
from core.secrets import SecretBox, seal_config, secret_fields
from core.tables import Bot, Channel

__all__ = [
    "MAX_WEBHOOK_BYTES",
    "ChannelCreate",
    "ChannelPublic",
    "ChannelRegistration",
    "ChannelType",
    "ChannelTypes",
    "channel_types",
    "create",
    "delete",
    "get",
    "listed",
    "public",
    "receive_webhook",
    "register",
    "reregister",
]

MAX_WEBHOOK_BYTES = 1024 * 1024


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="slack, telegram, twilio, messenger or chatwoot")
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


# --- the channels -----------------------------------------------------------------------------


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


class ChannelType(BaseModel):
    type: str = Field(description="what POST /v1/bots/{bot_id}/channels takes as `type`")
    title: str
    builtin: bool = Field(
        description="every bot has this channel already (web chat, REST): it is not created"
    )
    config_schema: dict[str, Any] = Field(
        description="JSON Schema of `config`; secrets are writeOnly (never shown again)"
    )
    webhook_path: str | None = Field(
        description="where the provider calls Parley; a channel's webhook_url is this in full"
    )
    setup_steps: list[str] = Field(
        description="what to do at the provider; {webhook_url} stands for the channel's URL"
    )
    docs_url: str | None
    capabilities: dict[str, bool]


class ChannelTypes(BaseModel):
    channel_types: list[ChannelType]


def _capabilities(cls: type[Connector[Any]]) -> dict[str, bool]:
    caps = cls.capabilities
    return {k: bool(getattr(caps, k)) for k in caps.__dataclass_fields__}


def channel_types() -> ChannelTypes:
    """Every channel type a bot can be connected to, then the built-in ones, each with what
    a form and a person need to set it up."""
    registered = [(cls, False) for _, cls in connectors.items()]
    registered += [(cls, True) for _, cls in builtin_connectors.items()]
    return ChannelTypes(
        channel_types=[
            ChannelType(
                type=cls.type,
                title=cls.title,
                builtin=builtin,
                config_schema=cls.config_schema(),
                webhook_path=cls.webhook_path,
                setup_steps=list(cls.setup_steps),
                docs_url=cls.docs_url,
                capabilities=_capabilities(cls),
            )
            for cls, builtin in registered
        ]
    )


def public(channel: Channel, base: str) -> ChannelPublic:
    """The channel as the API shows it: its settings without secrets, and its webhook URL
    under ``base``."""
    cls = connectors.get(channel.type)
    return ChannelPublic(
        id=channel.id,
        bot_id=channel.bot_id,
        type=channel.type,
        config=_public_config(cls, channel.config),
        webhook_url=webhook_url(base, channel.id),
        capabilities=_capabilities(cls),
        registration=(
            ChannelRegistration.model_validate(channel.registration)
            if channel.registration
            else None
        ),
        created_at=channel.created_at,
    )


async def create(
    gateway: Gateway, tenant_id: str, bot_id: str, body: ChannelCreate, *, base: str
) -> Channel:
    """Connect the bot to a channel of ``body.type`` (``InvalidInput`` naming each problem of
    its config), then register its webhook with the provider (``register``)."""
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
            bot_service.get_bot(session, tenant_id, bot_id)
            channel = Channel(
                id=new_id("channel"),
                tenant_id=tenant_id,
                bot_id=bot_id,
                type=body.type,
                config=_stored_config(config, gateway.secrets),
            )
            session.add(channel)
            return channel

    channel = await run_in_threadpool(save)
    return await register(gateway, channel, base)


def listed(session: Session, tenant_id: str, bot_id: str) -> list[Channel]:
    """The bot's channels, oldest first."""
    bot_service.get_bot(session, tenant_id, bot_id)
    rows = session.scalars(
        select(Channel).where(Channel.bot_id == bot_id).order_by(Channel.created_at)
    )
    return list(rows)


def get(session: Session, tenant_id: str, bot_id: str, channel_id: str) -> Channel:
    """One channel of the tenant's bot (``NotFound`` otherwise)."""
    channel = session.get(Channel, channel_id)
    if channel is None or channel.tenant_id != tenant_id or channel.bot_id != bot_id:
        raise NotFound(f"channel {channel_id} not found")
    return channel


def delete(session: Session, tenant_id: str, bot_id: str, channel_id: str) -> None:
    session.delete(get(session, tenant_id, bot_id, channel_id))


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


async def reregister(
    gateway: Gateway, tenant_id: str, bot_id: str, channel_id: str, *, base: str
) -> Channel:
    """``register`` an existing channel of the tenant's bot again."""

    def load() -> Channel:
        with session_scope(gateway.engine) as session:
            return get(session, tenant_id, bot_id, channel_id)

    return await register(gateway, await run_in_threadpool(load), base)


# --- the webhook intake -----------------------------------------------------------------------


async def _webhook_request(request: Request, url: str) -> WebhookRequest:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_WEBHOOK_BYTES:
        raise InvalidInput("the webhook body is too large")
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise InvalidInput("the webhook body is too large")
    return WebhookRequest(
        method=request.method,
        url=url,
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


async def receive_webhook(
    gateway: Gateway, channel_id: str, request: Request
) -> WebhookReply | None:
    """A provider's call to ``/webhooks/{channel_id}``: a ``GET`` handshake is answered by the
    connector; a ``POST`` is verified (a bad signature is ``Unauthenticated``, logged and
    counted) and parsed, each message's turn starts in the background, and the provider gets
    the connector's reply at once. A payload the connector does not know is ``None``: answered
    with a plain 200 (the provider would only retry it), logged and counted."""
    channel, bot = await _load(gateway, channel_id)
    await gateway.admission.admit_tenant(request, channel.tenant_id)  # webhook_tenant bucket
    connector = connector_for(gateway, channel, public_base(gateway, request))
    raw = await _webhook_request(request, _signed_url(gateway, request, channel_id))
    if request.method == "GET":
        reply = connector.handshake(raw)
        if reply is None:
            raise NotFound(f"{channel.type} channels have no GET handshake")
        return reply
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
        return None
    fresh = await run_in_threadpool(
        dedupe.first_deliveries,
        gateway.settings.redis,
        channel_id=channel.id,
        channel_type=channel.type,
        messages=result.messages,
    )  # a redelivery (on any gateway, with Redis) is dropped here: bot_gateway.dedupe
    for message in fresh:
        task = asyncio.create_task(converse(gateway, bot, channel.id, connector, message))
        gateway.background.add(task)
        task.add_done_callback(gateway.background.discard)
    return result.reply
