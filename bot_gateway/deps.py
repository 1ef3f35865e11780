"""FastAPI dependencies: the gateway's shared state, DB sessions and the calling principal."""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bot_gateway import auth_failures, sessions
from bot_gateway.audit import AuditWriter
from bot_gateway.conversations.runtime import ConversationRuntime
from bot_gateway.ratelimit import Admission
from bot_gateway.services import accounts
from bot_gateway.services.accounts import AgentPrincipal
from bot_gateway.services.exports import ModelExports
from bot_gateway.services.remote_models import RemoteModels
from bot_gateway.serving.batcher import MicroBatcher
from bot_gateway.serving.cache import ModelCache
from bot_gateway.serving.lookup import Lookups
from core.backends import builtin_models
from core.counters import CounterStore
from core.db import session_scope
from core.errors import Forbidden, Unauthenticated
from core.secrets import SecretBox
from core.settings import Settings
from core.storage import ArtifactStore
from core.tenants import Principal
from core.usage import UsageRecorder
from training.datasets.importers import Limits
from training.queue import TrainQueue


@dataclass
class Gateway:
    """Everything the routes share, built once by ``create_app``."""

    settings: Settings
    engine: Engine
    store: ArtifactStore
    queue: TrainQueue
    cache: ModelCache
    batcher: MicroBatcher
    imports: ThreadPoolExecutor
    lookups: Lookups
    counter_store: CounterStore  # rate-limit buckets, lockouts (settings.rate_limits.backend)
    audit: AuditWriter  # stores the audit log off the event loop (bot_gateway.audit)
    secrets: SecretBox  # channel secrets, action headers at rest (core.secrets)
    conversations: ConversationRuntime = field(init=False)  # built in the app's lifespan
    http: httpx.AsyncClient = field(init=False)  # channel providers' APIs (the lifespan's)
    tenant_http: httpx.AsyncClient = field(init=False)  # self-hosted providers: core.outbound
    usage: UsageRecorder = field(init=False)  # metered usage (core.usage; the lifespan's)
    admission: Admission = field(init=False)  # rate limits and quotas (bot_gateway.ratelimit)
    remote: RemoteModels = field(init=False)  # calls to tenants' model servers (the lifespan's)
    exports: ModelExports = field(init=False)  # model exports as zips (the lifespan's)
    background: set[asyncio.Task[None]] = field(default_factory=set)  # channel turns
    _builtins: dict[str, Any] = field(default_factory=dict)
    _builtin_lock: threading.Lock = field(default_factory=threading.Lock)

    def builtin(self, name: str) -> Any:
        """A built-in model, loaded once per process."""
        with self._builtin_lock:
            if name not in self._builtins:
                self._builtins[name] = builtin_models.get(name).load(self.cache.context)
            return self._builtins[name]

    @property
    def limits(self) -> Limits:
        lim = self.settings.limits
        return Limits(
            max_examples=lim.max_examples,
            max_labels=lim.max_labels,
            max_text_chars=lim.max_text_chars,
            max_image_pixels=lim.max_image_pixels,
        )


async def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def get_session(gateway: GatewayDep) -> Iterator[Session]:
    with session_scope(gateway.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
"""A session committed when the route returns, before the response is sent (so a client that
uses what it was just given, such as a new API key, finds it)."""


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def get_principal(request: Request, gateway: GatewayDep) -> Principal:
    """The caller's principal: the bearer key's, or else (no ``Authorization`` header) the
    signed-in user's of the session cookie, with the role's scopes (a write with the cookie
    needs its CSRF token: ``bot_gateway.sessions``). Also left on ``request.state.principal``
    for the middleware that meters, limits and audits the request. Rate limits and quotas are
    checked here (``bot_gateway.ratelimit``). A stale session cookie is not counted as a failed
    authentication (its token cannot be guessed; a page left open would lock its address)."""
    secret, token = bearer(request), request.cookies.get(sessions.COOKIE)
    if secret is None and token:
        user = await sessions.user_of(gateway, token)
        sessions.check_csrf(request, token)
        principal = accounts.principal_of(user)
    else:
        async with auth_failures.guarded(gateway, request):
            principal = await gateway.lookups.principal(secret)
    request.state.principal = principal
    await gateway.admission.admit(request, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def scoped(scope: str) -> object:
    """A dependency that yields the principal after checking it holds ``scope``."""

    async def dependency(principal: PrincipalDep) -> Principal:
        principal.require(scope)
        return principal

    return Depends(dependency)


AdminDep = Annotated[Principal, scoped("admin")]
TrainDep = Annotated[Principal, scoped("train")]
PredictDep = Annotated[Principal, scoped("predict")]


async def require_operator(request: Request, gateway: GatewayDep) -> None:
    token = gateway.settings.operator_token
    if token is None or not token.get_secret_value():
        raise Forbidden(
            "operator endpoints are disabled; set PARLEY_OPERATOR_TOKEN on the server to enable "
            "them, or use `parley tenants create` on the server"
        )
    async with auth_failures.guarded(gateway, request):
        given = bearer(request)
        if given is None:
            raise Unauthenticated("missing operator token; send `Authorization: Bearer <token>`")
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Unauthenticated("invalid operator token")
    request.state.operator = True  # for the audit log


OperatorDep = Annotated[None, Depends(require_operator)]


async def current_user(request: Request, gateway: GatewayDep) -> AgentPrincipal:
    """The signed-in user (any role) whose session cookie came with the request
    (``Unauthenticated`` otherwise; a write needs the CSRF token); also left on
    ``request.state.agent`` for the audit log."""
    token = request.cookies.get(sessions.COOKIE)
    user = await sessions.user_of(gateway, token)
    sessions.check_csrf(request, token or "")
    request.state.agent = user  # for the audit log
    return user


UserDep = Annotated[AgentPrincipal, Depends(current_user)]


async def current_agent(user: UserDep) -> AgentPrincipal:
    """The signed-in user of the agents' console (``accounts.CONSOLE_ROLES``; others are
    ``Forbidden``)."""
    accounts.check_console_role(user)
    return user


AgentDep = Annotated[AgentPrincipal, Depends(current_agent)]
