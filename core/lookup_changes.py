"""The look-up change log: how a revoked key, a moved or deleted alias, or a deleted model
reaches the look-up caches of every gateway process.

Writers call ``record`` in the transaction that makes the change. It adds a row to the
``lookup_changes`` table, which gateways without Redis poll (``after(last_id)``: one indexed
query per poll interval, not one per request); rows older than ``KEEP`` are pruned by the
writers. Where ``publish_on(engine, settings.redis)`` was called (gateways and workers with
``PARLEY_REDIS__URL``), the change is also published as ``{"tenant_id", "kind"}`` on
``CHANNEL`` once the transaction commits (never on rollback), and gateways subscribed there
forget the tenant's entries at once (``bot_gateway.serving.lookup``). The rows are written in
both modes, so a gateway without Redis in a mixed deployment still sees every change.
"""

from __future__ import annotations

import json
import threading
import weakref
from datetime import timedelta
from typing import Literal

from sqlalchemy import Connection, Engine, delete, event, func, select
from sqlalchemy.orm import Session

from core.db import utcnow
from core.logging import log_event
from core.metrics import counters
from core.redis import KEY_PREFIX, redis_errors, sync_client
from core.settings import RedisSettings
from core.tables import LookupChange

__all__ = ["CHANNEL", "KEEP", "Kind", "after", "latest", "publish_on", "record"]

Kind = Literal["keys", "models"]
KEEP = timedelta(days=1)
CHANNEL = f"{KEY_PREFIX}lookups"
"""The Redis pub/sub channel of look-up changes."""

_PENDING = "parley.lookup_changes"  # session.info: changes to publish after the commit
_publishers: weakref.WeakKeyDictionary[Engine, RedisSettings] = weakref.WeakKeyDictionary()
_publishers_lock = threading.Lock()


def publish_on(engine: Engine, redis: RedisSettings) -> None:
    """Publish the changes committed through ``engine`` on Redis (nothing without a URL)."""
    if redis.url is None:
        return
    with _publishers_lock:
        _publishers[engine] = redis


def record(session: Session, tenant_id: str, kind: Kind) -> None:
    """Note that ``tenant_id``'s cached keys (``keys``) or models and aliases (``models``) are
    stale."""
    session.add(LookupChange(tenant_id=tenant_id, kind=kind))
    session.execute(delete(LookupChange).where(LookupChange.created_at < utcnow() - KEEP))
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    session.info.setdefault(_PENDING, set()).add((engine, tenant_id, kind))


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    for engine, tenant_id, kind in session.info.pop(_PENDING, set()):
        redis = _publishers.get(engine)
        if redis is None:
            continue
        message = json.dumps({"tenant_id": tenant_id, "kind": kind})
        try:
            with redis_errors(redis.url, "look-up invalidation"):
                sync_client(redis).publish(CHANNEL, message)
        except Exception as e:  # noqa: BLE001 - committed already; subscribers that lost
            # Redis empty their caches, and MAX_AGE bounds what a lost message leaves behind
            counters.incr("lookups.publish_failed")
            log_event("lookups.publish_failed", tenant=tenant_id, kind=kind, error=str(e))


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)


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
