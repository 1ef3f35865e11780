"""The tenant's audit log (admin scope): every write to its data, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from bot_gateway.deps import AdminDep, GatewayDep
from core import audit
from core.db import session_scope
from core.tables import AuditEntry

router = APIRouter(tags=["audit"])

MAX_CURSOR = 2**63 - 1


class AuditEntryPublic(BaseModel):
    id: int = Field(description="pass the last one as `before` for the next page")
    actor: str = Field(description="key:<id>, agent:<id>, operator, widget:<bot id> or anonymous")
    action: str = Field(description="method and route: `DELETE /v1/bots/{bot_id}`")
    target_id: str | None = Field(description="the ids in the path, then the created id, `/`")
    status: int = Field(description="the HTTP status the request was answered with")
    address: str | None = Field(description="the client's address")
    created_at: datetime

    @classmethod
    def of(cls, row: AuditEntry) -> AuditEntryPublic:
        return cls.model_validate(row, from_attributes=True)


class AuditPage(BaseModel):
    entries: list[AuditEntryPublic]
    next_before: int | None = Field(description="`before` for the next (older) page; null: none")


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@router.get("/audit", response_model=AuditPage)
async def list_audit(
    principal: AdminDep,
    gateway: GatewayDep,
    start: Annotated[
        datetime | None, Query(alias="from", description="from this time (ISO 8601; UTC if naive)")
    ] = None,
    end: Annotated[datetime | None, Query(alias="to", description="before this time")] = None,
    actor: Annotated[str | None, Query(max_length=100, description="key:<id>, ...")] = None,
    action: Annotated[str | None, Query(max_length=200, description="`POST /v1/keys`")] = None,
    target_id: Annotated[str | None, Query(max_length=100)] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_CURSOR, description="a page cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 100,
) -> AuditPage:
    """Who (API key, agent, operator, widget) wrote what to which id, when, from which
    address, with which status; failed attempts too. Entries are kept
    ``PARLEY_AUDIT__RETENTION_DAYS`` days."""

    def rows() -> list[AuditEntry]:
        gateway.audit.flush()  # the caller's own writes of a moment ago are in the page
        with session_scope(gateway.engine) as session:
            return audit.query(
                session,
                tenant_id=principal.tenant_id,
                start=_utc(start),
                end=_utc(end),
                actor=actor,
                action=action,
                target_id=target_id,
                before=before,
                limit=limit,
            )

    found = await run_in_threadpool(rows)
    return AuditPage(
        entries=[AuditEntryPublic.of(r) for r in found],
        next_before=found[-1].id if len(found) == limit else None,
    )
