"""Browser sessions, shared by the Studio and the agents' console: one cookie (``COOKIE``:
HttpOnly, SameSite=Strict, Secure behind an https public URL), signing in (the failed-login
guard per address and the account's lockout), signing out, and the CSRF check of every write
made with the cookie.

The accounts, sessions and CSRF tokens themselves are ``bot_gateway.services.accounts``'s;
this module is the HTTP side of them, used by ``deps`` (who is calling) and the ``/v1/auth``
and ``/v1/agent`` routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool

from bot_gateway import auth_failures
from bot_gateway.services import accounts
from bot_gateway.services.accounts import SESSION_TTL, AgentPrincipal
from core.db import session_scope

if TYPE_CHECKING:
    from bot_gateway.deps import Gateway

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "SAFE_METHODS",
    "check_csrf",
    "set_cookie",
    "sign_in",
    "sign_out",
    "user_of",
]

COOKIE = "parley_agent"
"""The session cookie of the Studio and the agents' console."""
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_csrf(request: Request, token: str) -> None:
    """``Forbidden`` for a write (not GET, HEAD or OPTIONS) made with the session ``token``
    that lacks its CSRF token in ``X-CSRF-Token``."""
    if request.method not in SAFE_METHODS:
        accounts.check_csrf(token, request.headers.get(CSRF_HEADER))


async def user_of(gateway: Gateway, token: str | None) -> AgentPrincipal:
    """The signed-in user of a session token, any role (``Unauthenticated`` otherwise)."""

    def load() -> AgentPrincipal:
        with session_scope(gateway.engine) as session:
            return accounts.session_user(session, token)

    return await run_in_threadpool(load)


def set_cookie(request: Request, response: Response, gateway: Gateway, token: str) -> None:
    """Give the browser the session cookie of ``token``."""
    public = (gateway.settings.public_url or "").lower()
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or public.startswith("https://"),
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
    )


async def sign_in(
    gateway: Gateway,
    request: Request,
    response: Response,
    *,
    tenant: str,
    username: str,
    password: str,
    console: bool = False,
) -> tuple[AgentPrincipal, str]:
    """Check a user's password and start a session (its cookie set on ``response``); the user
    and the session's token. Failures count against the caller's address as every failed
    authentication does (``auth_failures``, checked before the password since scrypt is the
    expensive work), and against the account (``accounts.authenticate``'s lockout). For the
    agents' ``console``, a user of another role is ``Forbidden`` (after the password matched)."""

    def check() -> tuple[AgentPrincipal, str]:
        with session_scope(gateway.engine) as session:
            user = accounts.authenticate(
                session, gateway.counter_store, tenant=tenant, username=username, password=password
            )
            found = accounts.user_principal(session, user)
            if console:
                accounts.check_console_role(found)
            return found, accounts.login(session, user)

    async with auth_failures.guarded(gateway, request, expensive=True):
        user, token = await run_in_threadpool(check)
    request.state.agent = user  # for the audit log
    set_cookie(request, response, gateway, token)
    return user, token


async def sign_out(gateway: Gateway, request: Request) -> Response:
    """End the request's session (the CSRF token is needed, as for every write) and clear the
    cookie; 204 whether or not a session was open."""
    token = request.cookies.get(COOKIE)
    if token:
        check_csrf(request, token)

        def drop() -> None:
            with session_scope(gateway.engine) as session:
                accounts.logout(session, token)

        await run_in_threadpool(drop)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/")
    return response
