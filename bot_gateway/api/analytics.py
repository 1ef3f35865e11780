"""Analytics: ``GET /v1/analytics`` (conversations, messages, containment, handoff and fallback
rates, top intents, average confidence, per period and channel) and its charts
``GET /v1/analytics/plots/{kind}.{svg|png}``. Train scope; every time is UTC. What each number
counts: ``bot_gateway.services.analytics``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from bot_gateway.charts import CHART_RESPONSES, chart_response
from bot_gateway.conversations.bots import get_bot
from bot_gateway.deps import GatewayDep, TrainDep
from bot_gateway.schemas import AnalyticsPublic
from bot_gateway.services import analytics as service
from core import plots
from core.db import session_scope

router = APIRouter(prefix="/analytics", tags=["analytics"])


BotQuery = Annotated[str | None, Query(description="one bot (default: all the tenant's bots)")]
FromQuery = Annotated[
    str | None,
    Query(alias="from", description="ISO date or date-time, UTC (default: 30 days before to)"),
]
ToQuery = Annotated[
    str | None,
    Query(alias="to", description="ISO date (included) or date-time (excluded); default: now"),
]
GranularityQuery = Annotated[str, Query(description="hour, day or week (ISO weeks, Monday)")]


async def _report(
    gateway: GatewayDep,
    tenant_id: str,
    bot_id: str | None,
    start: str | None,
    end: str | None,
    granularity: str,
) -> service.Analytics:
    win = service.window(start, end, granularity)

    def read() -> service.Analytics:
        with session_scope(gateway.engine) as session:
            if bot_id is not None:
                get_bot(session, tenant_id, bot_id)  # another tenant's bot: 404
            return service.analytics(session, tenant_id=tenant_id, bot_id=bot_id, win=win)

    return await run_in_threadpool(read)


@router.get("", response_model=AnalyticsPublic, response_model_by_alias=True)
async def get_analytics(
    principal: TrainDep,
    gateway: GatewayDep,
    bot_id: BotQuery = None,
    start: FromQuery = None,
    end: ToQuery = None,
    granularity: GranularityQuery = "day",
) -> dict[str, Any]:
    """How the tenant's bots did: conversations and customers' messages per period,
    containment (conversations that ended or are idle without a person), handoff and fallback
    rates, top intents, average confidence, and the same per channel. Times are UTC."""
    report = await _report(gateway, principal.tenant_id, bot_id, start, end, granularity)
    return {
        "bot_id": report.bot_id,
        "from": report.window.start.isoformat(),
        "to": report.window.end.isoformat(),
        "timezone": "UTC",
        "granularity": report.window.granularity,
        "totals": report.totals,
        "series": report.series,
        "top_intents": report.top_intents,
        "channels": report.channels,
    }


@router.get("/plots/{kind}.{fmt}", response_class=Response, responses=CHART_RESPONSES)
async def get_analytics_plot(
    kind: str,
    fmt: str,
    principal: TrainDep,
    gateway: GatewayDep,
    bot_id: BotQuery = None,
    start: FromQuery = None,
    end: ToQuery = None,
    granularity: GranularityQuery = "day",
) -> Response:
    """A chart of ``GET /v1/analytics`` as SVG or PNG; kinds: ``conversations``
    (conversations and messages per period), ``rates`` (containment, handoff, fallback),
    ``top-intents``, ``channels``."""
    chart_format = plots.parse_format(fmt)
    service.check_plot_kind(kind)
    report = await _report(gateway, principal.tenant_id, bot_id, start, end, granularity)
    data = await run_in_threadpool(service.plot, report, kind, chart_format)
    return chart_response(data, chart_format)
