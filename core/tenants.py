"""Tenants and API keys: create, authenticate, revoke. Keys are stored as sha256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import lookup_changes
from core.db import utcnow
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from core.ids import new_id
from core.tables import ApiKey, Tenant

SCOPES = ("admin", "train", "predict")
KEY_PREFIX = "pk_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, through one key with some scopes, or a signed-in user of the
    tenant (``role`` set; ``key_id`` is then the user's id and the scopes are the role's)."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]
    role: str | None = None

    @property
    def actor(self) -> str:
        """Who this is in the audit log: ``key:<id>`` or ``user:<id>``."""
        return f"{'key' if self.role is None else 'user'}:{self.key_id}"

    def require(self, scope: str) -> None:
        """Raise ``Forbidden`` unless the key holds ``scope`` (``admin`` holds them all)."""
        if scope in self.scopes or "admin" in self.scopes:
            return
        if self.role in ("agent", "supervisor"):
            raise Forbidden(
                "agents work in the agents' console at /console/agents; the Studio and the "
                "rest of the API are for builders and admins",
                missing_scope=scope,
            )
        if self.role is not None:
            raise Forbidden(
                f"a {self.role} cannot do this (it needs the {scope!r} scope); ask an admin of "
                "your tenant",
                missing_scope=scope,
            )
        raise Forbidden(
            f"this API key lacks the {scope!r} scope (it has: "
            f"{', '.join(sorted(self.scopes))}); create a key with `--scope {scope}`",
            missing_scope=scope,
        )


@dataclass(frozen=True)
class NewKey:
    record: ApiKey
    secret: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_tenant(session: Session, name: str) -> tuple[Tenant, NewKey]:
    """A tenant and its first key (scope ``admin``); the secret is returned once."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("tenant name must be 1-200 characters")
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise Conflict(f"a tenant named {name!r} already exists")
    tenant = Tenant(id=new_id("tenant"), name=name)
    session.add(tenant)
    session.flush()
    key = create_key(session, tenant.id, scopes=["admin"], name="first key")
    return tenant, key


def get_tenant(session: Session, tenant: str) -> Tenant:
    """A tenant by id or name."""
    row = session.get(Tenant, tenant) or session.scalar(select(Tenant).where(Tenant.name == tenant))
    if row is None:
        raise NotFound(f"tenant {tenant!r} not found")
    return row


def create_key(session: Session, tenant_id: str, *, scopes: list[str], name: str = "") -> NewKey:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(
            f"unknown scopes {unknown}; known: {', '.join(SCOPES)}"
            if unknown
            else f"a key needs at least one scope: {', '.join(SCOPES)}"
        )
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        prefix=secret[:10],
        key_hash=hash_key(secret),
        scopes=sorted(set(scopes)),
    )
    session.add(record)
    session.flush()
    return NewKey(record=record, secret=secret)


def list_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
        )
    )


def revoke_key(session: Session, tenant_id: str, key_id: str) -> ApiKey:
    record = session.get(ApiKey, key_id)
    if record is None or record.tenant_id != tenant_id:
        raise NotFound(f"API key {key_id} not found")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        lookup_changes.record(session, tenant_id, "keys")
    return record


def authenticate(session: Session, secret: str | None) -> Principal:
    """The principal for a bearer secret; ``Unauthenticated`` if missing, wrong or revoked."""
    if not secret:
        raise Unauthenticated(
            "missing API key; send `Authorization: Bearer <api key>` (or sign in to the Studio "
            "at /studio)"
        )
    row = session.execute(
        select(ApiKey.tenant_id, ApiKey.id, ApiKey.scopes, ApiKey.revoked_at).where(
            ApiKey.key_hash == hash_key(secret)
        )
    ).first()
    if row is None:
        raise Unauthenticated("invalid API key")
    if row.revoked_at is not None:
        raise Unauthenticated("this API key was revoked; create a new one")
    return Principal(tenant_id=row.tenant_id, key_id=row.id, scopes=frozenset(row.scopes))
