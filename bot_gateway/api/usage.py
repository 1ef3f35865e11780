"""Usage: ``GET /v1/usage?from=&to=&granularity=day|hour`` — what the calling tenant used.

Admin scope: usage is the tenant's bill (every model, channel and device it used), not
something an application's predict key needs. The operator reads any tenant's with
``parley usage --tenant T``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from bot_gateway.deps import AdminDep, GatewayDep
from bot_gateway.schemas import UsageEntryPublic, UsagePublic
from core.db import session_scope
from core.usage import Granularity, entries_as_dicts, stored_bytes, usage_report

router = APIRouter(tags=["usage"])


@router.get("/usage", response_model=UsagePublic)
async def get_usage(
    principal: AdminDep,
    gateway: GatewayDep,
    start: Annotated[
        datetime | None,
        Query(
            alias="from",
            description="first hour or day (ISO 8601, UTC); default 30 days "
            "(day) or 24 hours (hour) before `to`",
        ),
    ] = None,
    end: Annotated[
        datetime | None, Query(alias="to", description="end, exclusive (default: now)")
    ] = None,
    granularity: Granularity = "day",
) -> UsagePublic:
    """Predictions by model and kind, OCR pages, training seconds by device, new
    conversations and customers' messages by channel — per hour or day — and the tenant's
    stored bytes now. Usage shows here within a second of the request that used it."""

    def read() -> UsagePublic:
        gateway.usage.flush()  # this process's last second of usage too
        with session_scope(gateway.engine) as session:
            report = usage_report(
                session, principal.tenant_id, start=start, end=end, granularity=granularity
            )
        return UsagePublic(
            tenant_id=report.tenant_id,
            start=report.start,
            end=report.end,
            granularity=report.granularity,
            entries=[UsageEntryPublic(**e) for e in entries_as_dicts(report.entries)],
            totals=report.totals,
            storage_bytes=stored_bytes(gateway.store, principal.tenant_id),
        )

    return await run_in_threadpool(read)
