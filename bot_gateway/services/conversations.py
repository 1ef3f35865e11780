"""A customer's turn, the same for every channel: web chat, the REST channel and the messaging
channels hand over an ``InboundMessage`` and the connector that answers through that channel.

``take_turn`` fetches and keeps the images a messaging channel points to (one it cannot open is
answered with ``MEDIA_REFUSED`` through the channel), then runs the conversation runtime (NLU,
vision, dialog, events saved). ``answer`` sends the bot's messages through the connector (a
failure is recorded on the conversation, ``services.delivery``) and tells the conversation's
live listeners (web chat sockets, agents). ``converse`` is both, for a message that came by
webhook, in the background; ``rest_turn`` both for a REST channel call.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi.concurrency import run_in_threadpool

from bot_gateway.conversations import bots as bot_service
from bot_gateway.conversations import widget_sessions
from bot_gateway.conversations.runtime import Inbound, TurnOutcome
from bot_gateway.conversations.widget_sessions import WidgetSession
from bot_gateway.deps import Gateway
from bot_gateway.services.delivery import deliver, hand_off, handed_off
from bot_gateway.services.uploads import store_upload
from connectors.base import Connector, InboundMessage
from connectors.rest import RestConnector, RestMessage
from core.errors import DeliveryFailed, Forbidden, InvalidInput, LimitExceeded, ParleyError
from core.logging import log_event
from core.messages import OutboundMessage
from core.metrics import counters
from core.tables import Bot

__all__ = ["CHANNEL_REST", "MEDIA_REFUSED", "answer", "converse", "rest_turn", "take_turn"]

CHANNEL_REST = RestConnector.type  # the conversations of REST channel calls
MEDIA_REFUSED = (
    "Sorry, I couldn't open that image: please send a photo (JPEG or PNG) of at most {limit} MB."
)


async def take_turn(
    gateway: Gateway,
    bot: Bot,
    channel: str,
    message: InboundMessage,
    connector: Connector[Any],
    *,
    conversation_id: str | None = None,
) -> TurnOutcome | None:
    """Run the customer's ``message`` on the bot's conversation in ``channel`` (``None`` when
    the message held nothing but images that could not be opened). ``conversation_id``: the
    one conversation a widget session acts for, whose own uploads alone it may attach."""
    uploads = list(message.uploads)
    if conversation_id is not None:
        await run_in_threadpool(
            widget_sessions.check_uploads, gateway.engine, conversation_id, message.uploads
        )
    for media in message.media:
        try:
            data = await connector.fetch(media, max_bytes=gateway.settings.limits.max_image_bytes)
            stored = await store_upload(gateway, bot, data, media.file_id or "image")
        except (InvalidInput, LimitExceeded, DeliveryFailed) as e:  # too big, expired, …
            log_event("channel.media_refused", channel=channel, error=e.message)
            counters.incr("channel.media_refused", channel=connector.type)
            limit_mb = gateway.settings.limits.max_image_bytes / 1024 / 1024
            refusal = OutboundMessage(text=MEDIA_REFUSED.format(limit=f"{limit_mb:g}"))
            with contextlib.suppress(DeliveryFailed):
                await connector.send(message.sender_id, refusal, message.metadata)
            if not message.text and not message.payload:
                return None
            continue
        uploads.append(stored.upload_id)
    return await gateway.conversations.handle(
        bot_service.bot_info(bot),
        channel,
        Inbound(
            sender_id=message.sender_id,
            text=message.text,
            payload=message.payload,
            uploads=tuple(uploads),
            message_id=message.message_id,
            metadata=message.metadata,
        ),
    )


async def answer(
    gateway: Gateway,
    connector: Connector[Any],
    outcome: TurnOutcome,
    message: InboundMessage,
    *,
    skip: object = None,
) -> None:
    """The bot's messages of a turn, to the conversation's live listeners (but ``skip``, the
    customer's own socket's subscription, which ``connector`` writes) and to the customer
    through ``connector``; then, when the turn handed the conversation to a person, the
    channel is told (``Connector.handoff``)."""
    for item in outcome.messages:
        gateway.conversations.hub.said(outcome.conversation_id, item, skip=skip)
        await deliver(
            gateway,
            connector,
            outcome.conversation_id,
            message.sender_id,
            item,
            metadata=message.metadata,
        )
    if handed_off(outcome.events):
        await hand_off(
            gateway,
            connector,
            outcome.conversation_id,
            message.sender_id,
            metadata=message.metadata,
        )


async def converse(
    gateway: Gateway, bot: Bot, channel_id: str, connector: Connector[Any], message: InboundMessage
) -> None:
    """One customer message from a messaging channel, answered through the same channel; a
    background task, so a failed turn is logged and counted, never raised."""
    try:
        outcome = await take_turn(gateway, bot, channel_id, message, connector)
    except ParleyError as e:
        counters.incr("channel.turn_failed", channel=connector.type)
        log_event("channel.turn_failed", channel=channel_id, error=e.message)
        return
    except Exception as e:  # noqa: BLE001 - a background task: log, never crash the loop
        log_event("channel.turn_crashed", channel=channel_id, error=repr(e))
        return
    if outcome is not None:
        await answer(gateway, connector, outcome, message)


async def rest_turn(
    gateway: Gateway, bot: Bot, body: RestMessage, *, widget_session: WidgetSession | None = None
) -> list[dict[str, Any]]:
    """A REST channel call: the bot's replies in Rasa's shape. With a widget session it is
    that session's own conversation, as its sender, with its own images."""
    channel, conversation_id = CHANNEL_REST, None
    if widget_session is not None:
        if widget_session.sender_id != body.sender:
            raise Forbidden(
                "this session token belongs to another sender; send the session_id of its "
                "welcome frame as `sender`"
            )
        channel, conversation_id = widget_session.channel, widget_session.conversation_id
    connector = RestConnector()
    message = connector.inbound(body)
    outcome = await take_turn(
        gateway, bot, channel, message, connector, conversation_id=conversation_id
    )
    if outcome is not None:
        await answer(gateway, connector, outcome, message)
    return connector.replies
