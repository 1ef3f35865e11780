"""The web chat socket's conversation: opening it (a widget caller gets a session token for a
conversation of its own; resuming one needs that token), the ``welcome`` frame with the history,
the connector that answers on the socket, and the demo page's bot. The socket's frames and the
widget's files are ``connectors.webchat``'s; the route is ``bot_gateway.api.chat``'s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from bot_gateway.conversations import bots as bot_service
from bot_gateway.conversations import widget_sessions
from bot_gateway.conversations.store import ConversationRecord
from bot_gateway.deps import Gateway
from bot_gateway.services.chat_access import Caller, allowed_origins
from connectors.webchat import SocketWriter, WebchatConfig, WebchatConnector
from connectors.webchat.access import session_id as valid_session_id
from connectors.webchat.frames import history_item
from core.db import session_scope
from core.errors import Conflict, NotFound
from core.logging import log_event
from core.tables import Bot, Tenant

__all__ = [
    "CHANNEL_WEBCHAT",
    "HISTORY",
    "OpenChat",
    "connector",
    "demo_bot",
    "open_chat",
    "reload_bot",
]

CHANNEL_WEBCHAT = WebchatConnector.type  # the conversations of web chat sockets
HISTORY = 50  # messages of the history in the welcome frame
BOT_REFRESH_S = 2.0  # an open socket re-reads its bot (version, enabled) at most this often


@dataclass(frozen=True)
class OpenChat:
    """The conversation a socket opened, as its ``welcome`` frame tells the widget."""

    record: ConversationRecord
    session_id: str
    session_token: str | None  # issued to a widget caller for a new conversation
    history: list[dict[str, Any]]

    def welcome(self) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "welcome",
            "conversation_id": self.record.id,
            "session_id": self.session_id,
            "status": self.record.status,
            "history": [history_item(e) for e in self.history],
        }
        if self.session_token is not None:  # kept to resume this conversation (and uploads)
            frame["session_token"] = self.session_token
        return frame


async def open_chat(
    gateway: Gateway, caller: Caller, *, session: str | None, session_token: str | None
) -> OpenChat:
    """The web chat conversation of ``?session=`` (a new one when it is not well formed).
    A widget caller resumes a conversation only with its session token; otherwise it gets a
    conversation of its own, and a token for it."""
    bot, runtime = caller.bot, gateway.conversations
    if not bot.enabled:
        raise NotFound(f"bot {bot.id} is disabled; enable it with PATCH /v1/bots/{bot.id}")
    session_id = valid_session_id(session)
    record, _ = await runtime.store.open(bot.tenant_id, bot.id, CHANNEL_WEBCHAT, session_id)
    issued = None
    if caller.widget:
        held = await run_in_threadpool(
            widget_sessions.session_of, gateway.engine, bot.id, session_token
        )
        if held is None or held.conversation_id != record.id:
            if not record.is_new:  # not this caller's: a conversation of its own instead
                log_event("webchat.session_refused", bot=bot.id, conversation=record.id)
                session_id = valid_session_id(None)
                record, _ = await runtime.store.open(
                    bot.tenant_id, bot.id, CHANNEL_WEBCHAT, session_id
                )
            issued = await run_in_threadpool(widget_sessions.issue, gateway.engine, record.id)
            if issued is None:
                raise Conflict("this web chat session was just opened elsewhere; reconnect")
    history = await runtime.store.transcript(record.id, HISTORY)
    return OpenChat(record, session_id, issued, history)


def connector(
    gateway: Gateway,
    bot: Bot,
    chat: OpenChat,
    *,
    socket: SocketWriter,
) -> WebchatConnector:
    """The connector that answers on this socket."""
    return WebchatConnector(
        WebchatConfig(allowed_origins=allowed_origins(bot)),
        bot_id=bot.id,
        session_id=chat.session_id,
        conversation_id=chat.record.id,
        socket=socket,
    )


async def reload_bot(gateway: Gateway, bot: Bot) -> Bot:
    """The bot as it is now (a new version, or disabled meanwhile); ``NotFound`` once deleted."""

    def load() -> Bot:
        with session_scope(gateway.engine) as session:
            return bot_service.get_bot(session, bot.tenant_id, bot.id)

    return await run_in_threadpool(load)


async def demo_bot(gateway: Gateway) -> Bot:
    """The demo tenant's first bot (``parley serve`` sets it up)."""

    def load() -> Bot | None:
        with session_scope(gateway.engine) as session:
            return session.scalar(
                select(Bot)
                .join(Tenant, Tenant.id == Bot.tenant_id)
                .where(Tenant.name == "demo")
                .order_by(Bot.created_at)
            )

    bot = await run_in_threadpool(load)
    if bot is None:
        raise NotFound(
            "the demo is not set up here; start the server with `parley serve` (demo on)"
        )
    return bot
