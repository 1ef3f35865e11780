"""How the gateway answers with a chart (``core.plots``): SVG or PNG bytes, private to the
caller, never sniffed or run as a page, and the ``max_labels`` query every chart route takes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Response

from core.charts import DEFAULT_MAX_LABELS
from core.plots import PlotFormat, media_type

__all__ = ["CHART_RESPONSES", "DEFAULT_MAX_LABELS", "MaxLabels", "chart_response"]

MaxLabels = Annotated[
    int,
    Query(
        ge=1,
        le=500,
        description="past this many labels, the chart keeps the most telling ones "
        "(most confused, lowest scores, most frequent)",
    ),
]
CHART_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/svg+xml": {}, "image/png": {}}, "description": "the chart"}
}
_HEADERS = {
    "Cache-Control": "private",
    "X-Content-Type-Options": "nosniff",
    # an SVG opened on its own is a document: no scripts, nothing fetched
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def chart_response(data: bytes, fmt: PlotFormat) -> Response:
    return Response(data, media_type=media_type(fmt), headers=_HEADERS)
