"""The look-up change log: how a revoked key, a moved or deleted alias, or a deleted model
reaches the look-up caches of every gateway process.

Writers call ``record`` in the transaction that makes the change; each gateway polls
``after(last_id)`` (one indexed query per poll interval, not one per request). Rows older than
``KEEP`` are pruned by the writers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.orm import Session

from core.db import utcnow
from core.tables import LookupChange

Kind = Literal["keys", "models"]
KEEP = timedelta(days=1)


def record(session: Session, tenant_id: str, kind: Kind) -> None:
    """Note that ``tenant_id``'s cached keys (``keys``) or models and aliases (``models``) are
    stale."""
    session.add(LookupChange(tenant_id=tenant_id, kind=kind))
    session.execute(delete(LookupChange).where(LookupChange.created_at < utcnow() - KEEP))


def latest(conn: Connection) -> int:
    """The id of the newest change (0 if none)."""
    return int(conn.execute(select(func.max(LookupChange.id))).scalar() or 0)


def after(conn: Connection, last_id: int) -> list[tuple[int, str, str]]:
    """Changes newer than ``last_id``: ``(id, tenant_id, kind)``, oldest first."""
    rows = conn.execute(
        select(LookupChange.id, LookupChange.tenant_id, LookupChange.kind)
        .where(LookupChange.id > last_id)
        .order_by(LookupChange.id)
    )
    return [(int(r.id), str(r.tenant_id), str(r.kind)) for r in rows]
