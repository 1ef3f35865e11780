"""Who may chat with a bot: a tenant API key with the ``predict`` scope (``Authorization:
Bearer`` or ``?token=``), or the bot's public widget key (``?key=wk_...`` or
``X-Parley-Widget-Key``), which reaches that bot only, only from the bot's ``allowed_origins``
(``connectors.webchat.access``), and only for the web chat session it opened
(``?session_token=`` or ``X-Parley-Session-Token``; ``bot_gateway.conversations.widget_sessions``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from bot_gateway import auth_failures
from bot_gateway.conversations import bots as bot_service
from bot_gateway.conversations import widget_sessions
from bot_gateway.conversations.widget_sessions import WidgetSession
from bot_gateway.deps import Gateway, bearer
from connectors.webchat.access import (
    SESSION_TOKEN_HEADER,
    WIDGET_KEY_HEADER,
    check_origin,
    origin_allowed,
)
from core.db import session_scope
from core.errors import Forbidden, Unauthenticated
from core.tables import Bot

__all__ = ["Caller", "allow_origin", "authorize", "authorize_request", "widget_session"]


@dataclass(frozen=True)
class Caller:
    """Who may chat with ``bot``: with its public widget key (``widget``: then only for the
    web chat session it opened), or with a tenant API key."""

    bot: Bot
    widget: bool


def allowed_origins(bot: Bot) -> list[str]:
    """The pages that may embed the bot's widget."""
    return list(bot.definition.get("allowed_origins") or [])


async def authorize(
    gateway: Gateway,
    connection: HTTPConnection,
    bot_id: str,
    *,
    key: str | None,
    token: str | None,
    origin: str | None,
    socket: bool = False,
) -> Caller:
    """The bot, if this caller may chat with it (see the module docstring); a wrong key
    counts as a failed authentication of the caller's address. A ``socket`` without an
    ``Origin`` is refused the widget key where the bot names its origins."""
    async with auth_failures.guarded(gateway, connection):
        if key:

            def by_key() -> Bot | None:
                with session_scope(gateway.engine) as session:
                    bot = bot_service.bot_by_widget_key(session, key)
                    if bot is not None:
                        bot_service.refresh_status(session, bot)
                    return bot

            found = await run_in_threadpool(by_key)
            if found is None or found.id != bot_id:
                raise Unauthenticated(
                    "invalid widget key for this bot; copy it from GET /v1/bots/{id}"
                )
            check_origin(allowed_origins(found), origin, required=socket, bot_id=bot_id)
            return Caller(found, widget=True)
        principal = await gateway.lookups.principal(token)
    principal.require("predict")

    def by_id() -> Bot:
        with session_scope(gateway.engine) as session:
            return bot_service.get_bot(session, principal.tenant_id, bot_id)

    return Caller(await run_in_threadpool(by_id), widget=False)


async def authorize_request(gateway: Gateway, bot_id: str, request: Request) -> Caller:
    """``authorize`` with the request's widget key, API key and ``Origin``; then the tenant's
    rate limits and quotas (``bot_gateway.ratelimit``)."""
    caller = await authorize(
        gateway,
        request,
        bot_id,
        key=request.query_params.get("key") or request.headers.get(WIDGET_KEY_HEADER),
        token=bearer(request) or request.query_params.get("token"),
        origin=request.headers.get("origin"),
    )
    await gateway.admission.admit_tenant(request, caller.bot.tenant_id)
    return caller


async def widget_session(gateway: Gateway, bot: Bot, connection: HTTPConnection) -> WidgetSession:
    """The web chat session whose token the caller presents (``?session_token=`` or
    ``X-Parley-Session-Token``)."""
    token = connection.query_params.get("session_token") or connection.headers.get(
        SESSION_TOKEN_HEADER
    )
    if not token:
        raise Unauthenticated(
            "the widget key acts only for its web chat session: send the session_token of the "
            "web chat socket's welcome frame (?session_token= or X-Parley-Session-Token)"
        )
    found = await run_in_threadpool(widget_sessions.session_of, gateway.engine, bot.id, token)
    if found is None:
        raise Forbidden(
            "this session token is not one of this bot's web chat sessions; open the web chat "
            "socket for a new one"
        )
    return found


async def widget_conversation(
    gateway: Gateway, caller: Caller, connection: HTTPConnection
) -> str | None:
    """The one conversation a widget caller acts for (``None`` for an API key)."""
    if not caller.widget:
        return None
    return (await widget_session(gateway, caller.bot, connection)).conversation_id


def allow_origin(response: Response, request: Request, bot: Bot) -> None:
    """Let the page read the answer (CORS) when its origin may use the bot's widget."""
    origin = request.headers.get("origin")
    if origin and origin_allowed(allowed_origins(bot), origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
