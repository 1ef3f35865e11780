"""Channels: connect a bot to Slack, Telegram, Twilio (SMS/WhatsApp) or Messenger, and the
webhook route every provider calls.

``GET /v1/channel-types`` lists the channel types with their config's JSON Schema (secrets
``writeOnly``), webhook path, setup steps and documentation, for a form built from them.

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
The work is ``bot_gateway.services.channels``'s.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from bot_gateway.deps import GatewayDep, PredictDep, SessionDep, TrainDep
from bot_gateway.services import channels
from bot_gateway.services.channels import ChannelCreate, ChannelPublic, ChannelTypes
from bot_gateway.services.delivery import public_base

router = APIRouter(tags=["channels"])
webhook_router = APIRouter(tags=["channels"])


@router.get("/channel-types", response_model=ChannelTypes)
def channel_types(principal: PredictDep) -> ChannelTypes:
    """The channel types (and the built-in web chat and REST channels): each one's config
    schema, webhook path, capabilities and the steps to set it up at the provider."""
    return channels.channel_types()


@router.post("/bots/{bot_id}/channels", status_code=201, response_model=ChannelPublic)
async def create_channel(
    bot_id: str, body: ChannelCreate, request: Request, principal: TrainDep, gateway: GatewayDep
) -> ChannelPublic:
    """Connect the bot to a channel; where the platform has an API for it (Telegram), the
    webhook is registered there too. The channel is created even when that fails:
    ``registration`` says how it went, and ``POST .../register`` tries again."""
    base = public_base(gateway, request)
    channel = await channels.create(gateway, principal.tenant_id, bot_id, body, base=base)
    return channels.public(channel, base)


@router.get("/bots/{bot_id}/channels", response_model=list[ChannelPublic])
def list_channels(
    bot_id: str, request: Request, principal: PredictDep, session: SessionDep, gateway: GatewayDep
) -> list[ChannelPublic]:
    base = public_base(gateway, request)
    return [channels.public(c, base) for c in channels.listed(session, principal.tenant_id, bot_id)]


@router.get("/bots/{bot_id}/channels/{channel_id}", response_model=ChannelPublic)
def get_channel(
    bot_id: str,
    channel_id: str,
    request: Request,
    principal: PredictDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> ChannelPublic:
    channel = channels.get(session, principal.tenant_id, bot_id, channel_id)
    return channels.public(channel, public_base(gateway, request))


@router.post("/bots/{bot_id}/channels/{channel_id}/register", response_model=ChannelPublic)
async def register_channel(
    bot_id: str, channel_id: str, request: Request, principal: TrainDep, gateway: GatewayDep
) -> ChannelPublic:
    """Register the channel's webhook with the provider again (after ``registration`` said
    ``failed``, or after ``PARLEY_PUBLIC_URL`` changed); answers the channel with its new
    ``registration``."""
    base = public_base(gateway, request)
    channel = await channels.reregister(gateway, principal.tenant_id, bot_id, channel_id, base=base)
    return channels.public(channel, base)


@router.delete("/bots/{bot_id}/channels/{channel_id}", status_code=204, response_class=Response)
def delete_channel(
    bot_id: str, channel_id: str, principal: TrainDep, session: SessionDep
) -> Response:
    channels.delete(session, principal.tenant_id, bot_id, channel_id)
    return Response(status_code=204)


@webhook_router.api_route("/webhooks/{channel_id}", methods=["GET", "POST"])
async def webhook(channel_id: str, request: Request, gateway: GatewayDep) -> Response:
    """A provider's call (see the module docstring)."""
    reply = await channels.receive_webhook(gateway, channel_id, request)
    if reply is None:  # a payload the connector does not know: 200, so it is not retried
        return Response(status_code=200)
    return Response(reply.body, reply.status, media_type=reply.media_type)
