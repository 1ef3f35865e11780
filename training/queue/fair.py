"""Which queued job runs next: tenants in turn, so one tenant's backlog never holds another's job.

``claim_next_job`` is the pick of workers that poll the database (the embedded queue): among
tenants with a queued job and fewer than ``per_tenant_concurrency`` running jobs, the tenant served
least recently (the latest ``started_at`` of its jobs; never served first) gets its oldest queued
job. The claim is one conditional ``UPDATE`` (still queued, tenant still under its limit), so
any number of workers in any number of processes can pick at once:

- SQLite runs writes one at a time, and the ``UPDATE`` is the first write of its transaction,
  so it reads the latest rows.
- PostgreSQL: two workers after the same oldest job meet on its row lock, and the loser's next
  ``UPDATE`` sees the winner's running job. Workers whose candidate lists differ (a job claimed
  and committed between one worker's read and its claims) could still each count the other's
  job as not yet running, so a claim first locks the tenant's row (``FOR NO KEY UPDATE``, which
  does not block new model rows of that tenant): claims for one tenant take turns. Each tenant
  is tried in its own transaction (one lock at a time: no deadlocks).

``claim_job`` serves a queue whose messages name a job (Celery): the same tenant's row lock and
conditional ``UPDATE``, on the OLDEST queued job of the named job's tenant and backend (the
named job when it is the oldest), so a tenant's jobs of one backend start oldest first whichever
message arrives first (jobs of one backend are routed alike, so a message never starts a job
its queue should not run, such as a GPU job before its wait for a GPU worker is over); the
caller keeps the named job's message going when another job was claimed. Across a tenant's
backends the order is the messages' order, about the order of submission. It tells a job
taken by someone else (or cancelled, or deleted) from one whose tenant is at its limit, so the
caller can try again later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from sqlalchemy import Engine, case, func, select, update
from sqlalchemy.orm import Session, aliased

from core.db import session_scope, utcnow
from core.tables import Model, Tenant

__all__ = ["Claim", "TenantTurn", "claim_job", "claim_next_job", "tenants_in_turn"]

# Queued jobs of the chosen tenant tried before giving up on it (others may be claiming them).
_CANDIDATES = 5


@dataclass(frozen=True)
class TenantTurn:
    """One tenant waiting for a worker, as the pick sees it."""

    tenant_id: str
    running: int
    last_started: datetime | None
    oldest_queued: datetime


def tenants_in_turn(engine: Engine, *, per_tenant_concurrency: int | None) -> list[TenantTurn]:
    """Tenants with queued jobs and room to run one, in the order they are served.

    ``per_tenant_concurrency`` None means no per-tenant limit (the order is still round-robin).
    """
    waiting = select(Model.tenant_id).where(Model.status == "queued").distinct()
    query = (
        select(
            Model.tenant_id,
            func.sum(case((Model.status == "running", 1), else_=0)),
            func.max(Model.started_at),
            func.min(case((Model.status == "queued", Model.created_at), else_=None)),
        )
        .where(Model.tenant_id.in_(waiting))
        .group_by(Model.tenant_id)
    )
    with session_scope(engine) as session:
        rows = session.execute(query).all()
    turns = []
    for tenant_id, running, last, oldest in rows:
        oldest_queued = _aware(oldest)
        if oldest_queued is None:  # its last queued job was taken since the subquery ran
            continue
        if per_tenant_concurrency is None or int(running or 0) < per_tenant_concurrency:
            turns.append(TenantTurn(tenant_id, int(running or 0), _aware(last), oldest_queued))
    # Never served first (oldest backlog first), then the least recently served.
    return sorted(
        turns,
        key=lambda t: (
            t.last_started is not None,
            t.last_started or t.oldest_queued,
            t.oldest_queued,
            t.tenant_id,
        ),
    )


def claim_next_job(
    engine: Engine, *, worker: str, per_tenant_concurrency: int | None
) -> str | None:
    """Claim the next job for ``worker`` (status ``running``, attempts + 1); its id, or None."""
    for turn in tenants_in_turn(engine, per_tenant_concurrency=per_tenant_concurrency):
        model_id = _claim_for_tenant(
            engine, turn.tenant_id, worker=worker, per_tenant_concurrency=per_tenant_concurrency
        )
        if model_id is not None:
            return model_id
    return None


class Claim(Enum):
    """What ``claim_job`` did with the job it was asked for."""

    CLAIMED = "claimed"
    """now ``running`` for this worker"""
    TENANT_BUSY = "tenant_busy"
    """still ``queued``: its tenant already runs ``per_tenant_concurrency`` jobs"""
    NOT_QUEUED = "not_queued"
    """taken by another worker, cancelled, finished or deleted: nothing to do"""


def claim_job(
    engine: Engine, model_id: str, *, worker: str, per_tenant_concurrency: int | None
) -> tuple[Claim, str | None]:
    """Claim, for ``worker`` (status ``running``, attempts + 1), the oldest queued job of
    ``model_id``'s tenant and backend if that tenant is under its limit; ``(CLAIMED, the job
    claimed)``, which is ``model_id`` or an older job of the same tenant and backend;
    ``(TENANT_BUSY, None)`` when ``model_id`` stays queued, ``(NOT_QUEUED, None)`` when it is no
    longer queued."""
    with session_scope(engine) as session:
        named = session.execute(
            select(Model.tenant_id, Model.backend).where(
                Model.id == model_id, Model.status == "queued"
            )
        ).first()
        if named is None:
            return Claim.NOT_QUEUED, None
        tenant_id, backend = named
        _lock_tenant(session, engine, tenant_id)
        candidates = list(_oldest_queued(session, tenant_id, backend=backend))
        if model_id not in candidates:
            candidates.append(model_id)
        for candidate in candidates:
            if _try_claim(session, candidate, tenant_id, worker, per_tenant_concurrency):
                return Claim.CLAIMED, candidate
        still_queued = session.scalar(
            select(Model.id).where(Model.id == model_id, Model.status == "queued")
        )
        return (Claim.TENANT_BUSY if still_queued is not None else Claim.NOT_QUEUED), None


def _oldest_queued(
    session: Session, tenant_id: str, *, backend: str | None = None
) -> Sequence[str]:
    """The tenant's oldest queued jobs (of ``backend``; a few: others may be claiming them)."""
    query = select(Model.id).where(Model.tenant_id == tenant_id, Model.status == "queued")
    if backend is not None:
        query = query.where(Model.backend == backend)
    return session.scalars(query.order_by(Model.created_at, Model.id).limit(_CANDIDATES)).all()


def _claim_for_tenant(
    engine: Engine, tenant_id: str, *, worker: str, per_tenant_concurrency: int | None
) -> str | None:
    with session_scope(engine) as session:
        _lock_tenant(session, engine, tenant_id)
        for model_id in _oldest_queued(session, tenant_id):
            if _try_claim(session, model_id, tenant_id, worker, per_tenant_concurrency):
                return model_id
    return None


def _lock_tenant(session: Session, engine: Engine, tenant_id: str) -> None:
    """PostgreSQL: claims for one tenant take turns (see the module's docstring)."""
    if engine.dialect.name == "postgresql":
        session.execute(
            select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
        )


def _try_claim(
    session: Session,
    model_id: str,
    tenant_id: str,
    worker: str,
    per_tenant_concurrency: int | None,
) -> bool:
    """The conditional ``UPDATE``: the job is still queued and its tenant under its limit."""
    conditions = [Model.id == model_id, Model.status == "queued"]
    if per_tenant_concurrency is not None:
        running = aliased(Model)
        conditions.append(
            select(func.count())
            .select_from(running)
            .where(running.tenant_id == tenant_id, running.status == "running")
            .scalar_subquery()
            < per_tenant_concurrency
        )
    now = utcnow()
    claimed = session.execute(
        update(Model)
        .where(*conditions)
        .values(
            status="running",
            started_at=now,
            attempts=Model.attempts + 1,
            worker=worker,
            progress=0.0,
            heartbeat_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return claimed.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def _aware(value: datetime | None) -> datetime | None:
    """Aggregates bypass the column type: SQLite hands back naive (UTC) datetimes or strings."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
