"""Agents of a tenant's service team: accounts (scrypt password hashes), login sessions
(random tokens, stored hashed, 12 hours), and the login lockout.

The lockout (``MAX_FAILED_LOGINS`` per account within ``LOCKOUT``) is kept in the gateway's
counter store. With Redis (``PARLEY_REDIS__URL``) it is shared by every gateway and never falls
back to a per-process count (``CounterStore.strict``): while Redis is unreachable a login is
refused with ``503 unavailable`` naming Redis. A per-process fallback would let a guesser
multiply the allowed failures by the number of gateways (and start afresh on each outage),
which defeats the lockout; refusing logins for the few seconds Redis is away costs agents a
retry, and agents already logged in keep working (sessions live in the database).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.counters import CounterStore
from core.db import utcnow
from core.errors import Conflict, InvalidInput, NotFound, TooManyRequests, Unauthenticated
from core.ids import new_id
from core.tables import Agent, AgentSession, Tenant

__all__ = [
    "AgentPrincipal",
    "ROLES",
    "authenticate",
    "create_agent",
    "login",
    "logout",
    "session_agent",
    "unlock",
]

ROLES = ("agent", "supervisor")
MAX_FAILED_LOGINS = 5  # per account (tenant id and username), within LOCKOUT
LOCKOUT = timedelta(minutes=5)
LOCKOUT_NEEDS = "the agents' login lockout"  # named in the 503 while Redis is away
SESSION_TTL = timedelta(hours=12)
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_DUMMY_HASH = (  # checked for unknown or disabled accounts, so they take as long as real ones
    "scrypt$QxlNetMDWbwbgxcUyAEOSA==$OTmajGXHXNyGNEOOrIXfHBMQNqo4jqi9ydBW03ygjvWEH7w2GvjsZkM8vn6Z"
    "/mU+3ZuihkTCKQ7up2M9G8NIkg=="
)  # (of a random password nobody knows)


@dataclass(frozen=True)
class AgentPrincipal:
    id: str
    tenant_id: str
    username: str
    name: str
    role: str

    @property
    def supervisor(self) -> bool:
        return self.role == "supervisor"

    @classmethod
    def of(cls, agent: Agent) -> AgentPrincipal:
        return cls(agent.id, agent.tenant_id, agent.username, agent.name, agent.role)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_password(password: str, stored: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), **_SCRYPT)
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def create_agent(
    session: Session,
    *,
    tenant_id: str,
    username: str,
    password: str,
    role: str = "agent",
    name: str | None = None,
) -> Agent:
    username = username.strip()
    if not username or len(username) > 100:
        raise InvalidInput("a username is 1-100 characters")
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if len(password) < 8:
        raise InvalidInput("a password has at least 8 characters")
    taken = session.scalar(
        select(Agent.id).where(Agent.tenant_id == tenant_id, Agent.username == username)
    )
    if taken is not None:
        raise Conflict(f"this tenant already has an agent named {username!r}")
    agent = Agent(
        id=new_id("agent"),
        tenant_id=tenant_id,
        username=username,
        name=(name or username).strip(),
        role=role,
        password_hash=hash_password(password),
    )
    session.add(agent)
    session.flush()
    return agent


def _account(session: Session, tenant: str, username: str) -> tuple[str, str | None]:
    """The lockout key of the account these credentials name, and the tenant's id. The key is
    the tenant's id (whether it was given by name or by id) and the username; for an unknown
    tenant it is the normalised names, so guesses there are throttled too."""
    name, user = tenant.strip(), username.strip()
    tenant_id = session.scalar(select(Tenant.id).where((Tenant.name == name) | (Tenant.id == name)))
    if tenant_id is None:
        return f"agent_login:?{name.lower()}:{user.lower()}", None
    return f"agent_login:{tenant_id}:{user}", tenant_id


def authenticate(
    session: Session, counters: CounterStore, *, tenant: str, username: str, password: str
) -> Agent:
    """The agent for these credentials; one message for every failure (no user enumeration),
    in the same time whether the account exists or not.

    ``MAX_FAILED_LOGINS`` failures within ``LOCKOUT`` lock the account (tenant id and
    username, however the tenant was named): until the oldest of them leaves the window every
    login fails with ``TooManyRequests`` (``retry_after`` seconds), even the right password.
    Each attempt is counted as a failure before the password is checked, in the same atomic
    step as the check of the count (``try_add_event``), and forgotten with the rest once the
    password matches: parallel guesses, on one gateway or several, get no more than
    ``MAX_FAILED_LOGINS`` checks in all. A refused attempt counts nothing (the lockout ends
    when it said it would). ``Unavailable`` when the shared lockout cannot be used (see the
    module docstring).
    """
    counters = counters.strict(LOCKOUT_NEEDS)
    key, tenant_id = _account(session, tenant, username)
    counted, window = counters.try_add_event(
        key, window_s=LOCKOUT.total_seconds(), limit=MAX_FAILED_LOGINS
    )
    if not counted:
        wait = max(1, math.ceil(window.oldest_leaves_in))
        raise TooManyRequests(
            f"too many failed logins for this account; try again in {wait} s", retry_after=wait
        )
    row = None
    if tenant_id is not None:
        row = session.scalar(
            select(Agent).where(Agent.tenant_id == tenant_id, Agent.username == username.strip())
        )
    if row is not None and row.disabled_at is not None:
        row = None
    matches = check_password(password, row.password_hash if row is not None else _DUMMY_HASH)
    if row is None or not matches:
        raise Unauthenticated("wrong tenant, username or password")  # counted above
    counters.clear(key)
    return row


def unlock(session: Session, counters: CounterStore, *, tenant: str, username: str) -> None:
    """Forget an account's failed logins (ends its lockout)."""
    counters.strict(LOCKOUT_NEEDS).clear(_account(session, tenant, username)[0])


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login(session: Session, agent: Agent) -> str:
    """A new session token for ``agent`` (returned once; stored hashed)."""
    token = secrets.token_urlsafe(32)
    session.add(
        AgentSession(
            token_hash=_token_hash(token), agent_id=agent.id, expires_at=utcnow() + SESSION_TTL
        )
    )
    return token


def logout(session: Session, token: str) -> None:
    row = session.get(AgentSession, _token_hash(token))
    if row is not None:
        session.delete(row)


def session_agent(session: Session, token: str | None) -> AgentPrincipal:
    """The logged-in agent of a session token, or ``Unauthenticated``."""
    if not token:
        raise Unauthenticated("log in to the agents' console first")
    row = session.get(AgentSession, _token_hash(token))
    if row is None or row.expires_at < utcnow():
        raise Unauthenticated("your session expired; log in again")
    agent = session.get(Agent, row.agent_id)
    if agent is None or agent.disabled_at is not None:
        raise Unauthenticated("this agent account is disabled")
    return AgentPrincipal.of(agent)


def get_agent(session: Session, tenant_id: str, agent_id: str) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None or agent.tenant_id != tenant_id:
        raise NotFound(f"agent {agent_id} not found")
    return agent
