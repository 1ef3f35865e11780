"""Users of a tenant: accounts with a role (scrypt password hashes), sign-in sessions (random
tokens, stored hashed, 12 hours) shared by the Studio and the agents' console, their CSRF
tokens, the login lockout, and admins' invitations.

Roles (``ROLES``): ``admin`` (everything: API keys, users), ``builder`` (datasets, models, bots,
channels), ``agent`` and ``supervisor`` (the agents' console). A session on ``/v1`` holds the
role's scopes (``ROLE_SCOPES``); admins also work in the agents' console with a supervisor's
rights (``CONSOLE_ROLES``).

A session's CSRF token is derived from its token (``csrf_token``: HMAC-SHA256 under a purpose
prefix), so it needs no storage; a page gets it with the session (``/v1/auth/me``) and sends it
back in ``X-CSRF-Token`` on every write, which a page of another site cannot do.

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
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.counters import CounterStore
from core.db import utcnow
from core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from core.ids import new_id
from core.tables import Agent, AgentSession, Invite, Tenant
from core.tenants import Principal

__all__ = [
    "CONSOLE_ROLES",
    "INVITE_TTL",
    "ROLES",
    "ROLE_SCOPES",
    "AgentPrincipal",
    "NewInvite",
    "accept_invite",
    "authenticate",
    "check_console_role",
    "check_csrf",
    "create_agent",
    "create_invite",
    "create_user",
    "csrf_token",
    "list_invites",
    "list_users",
    "login",
    "logout",
    "principal_of",
    "revoke_invite",
    "session_agent",
    "session_user",
    "unlock",
    "update_user",
    "user_principal",
]

ROLES = ("admin", "builder", "agent", "supervisor")
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin"}),
    "builder": frozenset({"train", "predict"}),
    "agent": frozenset(),
    "supervisor": frozenset(),
}
"""The scopes a signed-in user of each role holds on ``/v1`` (``admin`` holds them all)."""
CONSOLE_ROLES = ("agent", "supervisor", "admin")
"""Who works in the agents' console (admins with a supervisor's rights)."""
INVITE_TTL = timedelta(days=7)
_CSRF_PURPOSE = b"parley csrf v1"
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
    """A signed-in user (any role; the agents' console takes ``CONSOLE_ROLES``)."""

    id: str
    tenant_id: str
    username: str
    name: str
    role: str
    tenant_name: str = ""

    @property
    def supervisor(self) -> bool:
        """Whether the user has a supervisor's rights in the agents' console."""
        return self.role in ("supervisor", "admin")

    @classmethod
    def of(cls, agent: Agent, tenant_name: str = "") -> AgentPrincipal:
        return cls(agent.id, agent.tenant_id, agent.username, agent.name, agent.role, tenant_name)


@dataclass(frozen=True)
class NewInvite:
    record: Invite
    token: str  # the link's secret: shown once


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


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise InvalidInput("a password has at least 8 characters")


def _normal(username: str) -> str:
    """A username as it is stored and looked up: stripped, in Unicode NFC (so ``é`` typed as
    one character or as ``e`` and an accent names the same user)."""
    return unicodedata.normalize("NFC", username.strip())


def _username(session: Session, tenant_id: str, username: str) -> str:
    """``username`` normalised (``_normal``), after checking it is well-formed and free in
    the tenant. Control and format characters (such as U+202E, which turns the text around
    it) are refused: a name in the users list must read as what it is."""
    username = _normal(username)
    if not username or len(username) > 100:
        raise InvalidInput("a username is 1-100 characters")
    odd = next((ch for ch in username if unicodedata.category(ch).startswith("C")), None)
    if odd is not None:
        raise InvalidInput(
            f"a username cannot hold the control or format character U+{ord(odd):04X}; "
            "use letters, digits, spaces and punctuation"
        )
    taken = session.scalar(
        select(Agent.id).where(Agent.tenant_id == tenant_id, Agent.username == username)
    )
    if taken is not None:
        raise Conflict(f"this tenant already has a user named {username!r}; pick another name")
    return username


def create_agent(
    session: Session,
    *,
    tenant_id: str,
    username: str,
    password: str,
    role: str = "agent",
    name: str | None = None,
) -> Agent:
    """A user of the agents' console (``create_user`` with role ``agent`` by default)."""
    return create_user(
        session, tenant_id=tenant_id, username=username, password=password, role=role, name=name
    )


def create_user(
    session: Session,
    *,
    tenant_id: str,
    username: str,
    password: str,
    role: str,
    name: str | None = None,
) -> Agent:
    """A user of the tenant with ``role`` (one of ``ROLES``)."""
    _check_role(role)
    _check_password(password)
    username = _username(session, tenant_id, username)
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
    name, user = tenant.strip(), _normal(username)
    tenant_id = session.scalar(select(Tenant.id).where((Tenant.name == name) | (Tenant.id == name)))
    if tenant_id is None:
        return f"agent_login:?{name.lower()}:{user.lower()}", None
    return f"agent_login:{tenant_id}:{user}", tenant_id


def authenticate(
    session: Session, counters: CounterStore, *, tenant: str, username: str, password: str
) -> Agent:
    """The user for these credentials; one message for every failure (no user enumeration),
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
            select(Agent).where(Agent.tenant_id == tenant_id, Agent.username == _normal(username))
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


def csrf_token(token: str) -> str:
    """The CSRF token of the session ``token`` (derived, never stored)."""
    return hmac.new(token.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def check_csrf(token: str, given: str | None) -> None:
    """``Forbidden`` unless ``given`` is the CSRF token of the session ``token``."""
    if not given or not hmac.compare_digest(given.encode(), csrf_token(token).encode()):
        raise Forbidden(
            "missing or wrong CSRF token: a write with the session cookie must send the header "
            "X-CSRF-Token with the csrf_token from /v1/auth/me (or the login's answer); reload "
            "the page"
        )


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


def session_user(session: Session, token: str | None) -> AgentPrincipal:
    """The signed-in user of a session token (any role), or ``Unauthenticated``."""
    if not token:
        raise Unauthenticated("sign in first")
    row = session.get(AgentSession, _token_hash(token))
    if row is None or row.expires_at < utcnow():
        raise Unauthenticated("your session expired; sign in again")
    agent = session.get(Agent, row.agent_id)
    if agent is None or agent.disabled_at is not None:
        raise Unauthenticated("this account is disabled; ask an admin of your tenant")
    return user_principal(session, agent)


def user_principal(session: Session, agent: Agent) -> AgentPrincipal:
    """What the gateway keeps of a signed-in user (with the tenant's name)."""
    tenant = session.get(Tenant, agent.tenant_id)
    return AgentPrincipal.of(agent, tenant.name if tenant is not None else "")


def check_console_role(user: AgentPrincipal) -> None:
    """``Forbidden`` unless the user works in the agents' console (``CONSOLE_ROLES``)."""
    if user.role not in CONSOLE_ROLES:
        raise Forbidden(
            f"a {user.role} works in the Studio at /studio; the agents' console is for agents, "
            "supervisors and admins"
        )


def session_agent(session: Session, token: str | None) -> AgentPrincipal:
    """The signed-in user of a session token who works in the agents' console:
    ``Unauthenticated`` without a valid session, ``Forbidden`` for other roles."""
    if not token:
        raise Unauthenticated("log in to the agents' console first")
    user = session_user(session, token)
    check_console_role(user)
    return user


def principal_of(user: AgentPrincipal) -> Principal:
    """The ``/v1`` principal of a signed-in user: the role's scopes, keyed by the user's id
    (rate limits, usage and the audit log count the user as a key)."""
    return Principal(
        tenant_id=user.tenant_id, key_id=user.id, scopes=ROLE_SCOPES[user.role], role=user.role
    )


def get_agent(session: Session, tenant_id: str, agent_id: str) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None or agent.tenant_id != tenant_id:
        raise NotFound(f"agent {agent_id} not found")
    return agent


# --- users (admins) -----------------------------------------------------------------------------


def list_users(session: Session, tenant_id: str) -> list[Agent]:
    """Every user of the tenant, by username."""
    return list(
        session.scalars(select(Agent).where(Agent.tenant_id == tenant_id).order_by(Agent.username))
    )


def _active_admins(session: Session, tenant_id: str) -> int:
    """How many active admins the tenant has, their rows locked until the transaction ends
    (on PostgreSQL), so that two admins demoting or disabling each other at once cannot both
    see the other still there: the second waits, then counts again."""
    return len(
        session.scalars(
            select(Agent.id)
            .where(Agent.tenant_id == tenant_id, Agent.role == "admin", Agent.disabled_at.is_(None))
            .with_for_update()
        ).all()
    )


def update_user(
    session: Session,
    tenant_id: str,
    user_id: str,
    *,
    role: str | None = None,
    disabled: bool | None = None,
) -> Agent:
    """Change a user's role and/or disable (or enable) the account. A disabled user's sessions
    end at once. ``Conflict`` when the change would leave the tenant without an active admin."""
    user = session.get(Agent, user_id)
    if user is None or user.tenant_id != tenant_id:
        raise NotFound(f"user {user_id} not found")
    if role is not None:
        _check_role(role)
    active_admin = user.role == "admin" and user.disabled_at is None
    stays_admin = (role or user.role) == "admin" and not (
        disabled if disabled is not None else user.disabled_at is not None
    )
    if active_admin and not stays_admin and _active_admins(session, tenant_id) <= 1:
        raise Conflict(
            f"{user.username} is the tenant's last active admin; make another user admin first"
        )
    if role is not None:
        user.role = role
    if disabled is True and user.disabled_at is None:
        user.disabled_at = utcnow()
        session.execute(delete(AgentSession).where(AgentSession.agent_id == user.id))
    elif disabled is False:
        user.disabled_at = None
    session.flush()
    return user


# --- invitations --------------------------------------------------------------------------------


def _pending(tenant_id: str) -> Any:
    return (
        Invite.tenant_id == tenant_id,
        Invite.accepted_at.is_(None),
        Invite.expires_at > utcnow(),
    )


def create_invite(
    session: Session,
    *,
    tenant_id: str,
    username: str,
    role: str,
    name: str | None = None,
    created_by: str,
) -> NewInvite:
    """An invitation for ``username`` to join with ``role``; its link's token is returned once
    and is good for ``INVITE_TTL``."""
    _check_role(role)
    username = _username(session, tenant_id, username)
    pending = session.scalar(
        select(Invite.id).where(*_pending(tenant_id), Invite.username == username)
    )
    if pending is not None:
        raise Conflict(
            f"{username!r} is already invited ({pending}); revoke that invite to send a new one"
        )
    token = secrets.token_urlsafe(32)
    invite = Invite(
        id=new_id("invite"),
        tenant_id=tenant_id,
        username=username,
        name=(name or "").strip() or None,
        role=role,
        token_hash=_token_hash(token),
        created_by=created_by,
        expires_at=utcnow() + INVITE_TTL,
    )
    session.add(invite)
    session.flush()
    return NewInvite(invite, token)


def list_invites(session: Session, tenant_id: str) -> list[Invite]:
    """The tenant's pending invites (not accepted, not expired), oldest first."""
    return list(
        session.scalars(select(Invite).where(*_pending(tenant_id)).order_by(Invite.created_at))
    )


def revoke_invite(session: Session, tenant_id: str, invite_id: str) -> None:
    """Delete an invite (its link stops working)."""
    invite = session.get(Invite, invite_id)
    if invite is None or invite.tenant_id != tenant_id:
        raise NotFound(f"invite {invite_id} not found")
    session.delete(invite)


def accept_invite(session: Session, *, token: str, password: str, name: str | None = None) -> Agent:
    """The new user an invite link makes (with ``password``); ``Unauthenticated`` for a link
    that is unknown, used or expired."""
    invite = session.scalar(select(Invite).where(Invite.token_hash == _token_hash(token)))
    now, claimed = utcnow(), 0
    if invite is not None and invite.expires_at >= now:  # claimed once, even by two at once
        claimed = session.execute(
            update(Invite)
            .where(Invite.id == invite.id, Invite.accepted_at.is_(None))
            .values(accepted_at=now)
        ).rowcount  # type: ignore[attr-defined]
    if invite is None or claimed != 1:
        raise Unauthenticated(
            "this invite link is not valid (used, revoked or expired); ask an admin of your "
            "tenant for a new one"
        )
    user = create_user(
        session,
        tenant_id=invite.tenant_id,
        username=invite.username,
        password=password,
        role=invite.role,
        name=name or invite.name,
    )
    return user
