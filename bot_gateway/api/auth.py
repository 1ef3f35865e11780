"""Signing in to the Studio: ``/v1/auth/login``, ``logout``, ``me`` and ``accept-invite``.

One session cookie (``parley_agent``: HttpOnly, SameSite=Strict) serves the Studio and the
agents' console; with it the Studio calls the ordinary ``/v1`` routes, with the scopes of the
user's role (``bot_gateway.services.accounts.ROLE_SCOPES``). Every write made with the cookie
sends the session's ``csrf_token`` in ``X-CSRF-Token``. The work is done by
``bot_gateway.sessions`` and ``bot_gateway.services.accounts``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from bot_gateway import auth_failures, sessions
from bot_gateway.deps import GatewayDep, UserDep
from bot_gateway.schemas import AcceptInvite, Login, StudioSession, StudioUser
from bot_gateway.services import accounts
from bot_gateway.services.accounts import AgentPrincipal
from core.db import session_scope

router = APIRouter(prefix="/auth", tags=["sign-in"])


def studio_session(user: AgentPrincipal, token: str) -> StudioSession:
    return StudioSession(
        user=StudioUser.of(user),
        scopes=sorted(accounts.ROLE_SCOPES[user.role]),
        csrf_token=accounts.csrf_token(token),
    )


@router.post("/login", response_model=StudioSession)
async def studio_login(
    body: Login, request: Request, response: Response, gateway: GatewayDep
) -> StudioSession:
    """Sign in a user of a tenant (any role): the session cookie and its CSRF token. Five
    failures lock the account for up to five minutes (``429`` with ``Retry-After``; the right
    password too), and failures count against the caller's address as every failed
    authentication does (the same checks as ``/v1/agent/login``)."""
    user, token = await sessions.sign_in(
        gateway,
        request,
        response,
        tenant=body.tenant,
        username=body.username,
        password=body.password,
    )
    return studio_session(user, token)


@router.post("/logout", status_code=204, response_class=Response)
async def studio_logout(request: Request, gateway: GatewayDep) -> Response:
    """End the session (with its CSRF token) and clear the cookie."""
    return await sessions.sign_out(gateway, request)


@router.get("/me", response_model=StudioSession)
async def studio_me(user: UserDep, request: Request) -> StudioSession:
    """The signed-in user, the session's scopes and CSRF token (``401`` when signed out)."""
    return studio_session(user, request.cookies.get(sessions.COOKIE, ""))


@router.post("/accept-invite", response_model=StudioSession)
async def accept_invite(
    body: AcceptInvite, request: Request, response: Response, gateway: GatewayDep
) -> StudioSession:
    """Become the user an invite link names (choosing a password), and sign in. A link that is
    unknown, used, revoked or expired is ``401`` (counted against the caller's address)."""

    def accept() -> tuple[AgentPrincipal, str]:
        with session_scope(gateway.engine) as session:
            user = accounts.accept_invite(
                session, token=body.token, password=body.password, name=body.name
            )
            return accounts.user_principal(session, user), accounts.login(session, user)

    async with auth_failures.guarded(gateway, request, expensive=True):
        user, token = await run_in_threadpool(accept)
    request.state.agent = user  # for the audit log
    sessions.set_cookie(request, response, gateway, token)
    return studio_session(user, token)
