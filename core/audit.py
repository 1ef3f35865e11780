"""The audit log: who did what to which id, when, from which address, and how it ended.

One ``AuditEntry`` (table ``audit_log``) per write request; the gateway's audit middleware
(``bot_gateway.audit``) decides what is a write and fills the fields:

- ``actor``: ``key:<key id>`` (an API key), ``agent:<agent id>`` (an agent's console
  session), ``operator`` (the operator token), ``widget:<bot id>`` (a bot's public widget
  key), or ``anonymous`` (no valid credentials: the write was refused);
- ``action``: the method and the route template, ``POST /v1/bots/{bot_id}/channels``;
- ``target_id``: the path's parameters in order, then the id of what the request created,
  joined by ``/``: ``bot_1/channel_2`` (``query(target_id="channel_2")`` finds it);
- ``status``: the HTTP status answered (refused attempts too: 401, 403, 404, 422, ...);
- ``address``: the client's address as the server saw it;
- ``created_at``: when the request arrived (UTC).

Entries are kept ``settings.audit.retention_days`` days; ``purge`` removes older ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.orm import Session

from core.db import utcnow
from core.tables import AuditEntry

__all__ = ["MAX_PAGE", "Entry", "purge", "query", "record"]

MAX_PAGE = 1000
TARGET_SEPARATOR = "/"


@dataclass(frozen=True)
class Entry:
    """One audited write, ready to store (see the module docstring for the fields)."""

    tenant_id: str | None
    actor: str
    action: str
    target_id: str | None
    status: int
    address: str | None
    created_at: datetime


def record(session: Session, entries: Iterable[Entry]) -> int:
    """Store ``entries`` in one statement; returns how many."""
    rows = [
        {
            "tenant_id": e.tenant_id,
            "actor": e.actor[:100],
            "action": e.action[:200],
            "target_id": e.target_id[:100] if e.target_id else None,
            "status": e.status,
            "address": e.address[:64] if e.address else None,
            "created_at": e.created_at,
        }
        for e in entries
    ]
    if rows:
        session.execute(insert(AuditEntry), rows)
    return len(rows)


def _like_literal(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def query(
    session: Session,
    *,
    tenant_id: str | None,
    start: datetime | None = None,
    end: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    target_id: str | None = None,
    before: int | None = None,
    limit: int = 100,
    all_tenants: bool = False,
) -> list[AuditEntry]:
    """Entries newest first. ``tenant_id`` limits them to one tenant (``all_tenants=True``
    ignores it: the operator's view, which includes refused writes no tenant could be named
    for). ``start`` (inclusive) and ``end`` (exclusive) bound ``created_at``; ``actor`` and
    ``action`` match exactly; ``target_id`` matches one id of the entry's target; ``before``
    is a cursor: only entries with a smaller ``id`` (the last ``id`` of the previous page)."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(AuditEntry)
    if not all_tenants:
        stmt = stmt.where(AuditEntry.tenant_id == tenant_id)
    if start is not None:
        stmt = stmt.where(AuditEntry.created_at >= start)
    if end is not None:
        stmt = stmt.where(AuditEntry.created_at < end)
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    if target_id is not None:
        sep, lit = TARGET_SEPARATOR, _like_literal(target_id)
        col = AuditEntry.target_id
        stmt = stmt.where(
            or_(
                col == target_id,
                col.like(f"{lit}{sep}%", escape="\\"),
                col.like(f"%{sep}{lit}", escape="\\"),
                col.like(f"%{sep}{lit}{sep}%", escape="\\"),
            )
        )
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    return list(session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit)))


def purge(session: Session, *, retention_days: int, now: datetime | None = None) -> int:
    """Delete entries older than ``retention_days``; returns how many went."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    result = session.execute(delete(AuditEntry).where(AuditEntry.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
