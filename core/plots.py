"""Charts drawn on the server with matplotlib: one house style, SVG or PNG bytes.

The Studio shows these images (and inlines the confusion matrix's SVG to make its cells
clickable); ``parley models plot`` saves the same files. Drawing on the server keeps the
Studio free of a JavaScript build chain and gives API and CLI users the very same charts.
matplotlib is imported on first use (about 0.3 s), never at import time, and only the
non-interactive Agg/SVG canvases are used, so any thread may draw.
"""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Any, Literal

from core.errors import InvalidInput

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FORMATS",
    "PlotFormat",
    "counts_axis",
    "figure",
    "media_type",
    "parse_format",
    "render",
]

PlotFormat = Literal["svg", "png"]
FORMATS: dict[str, str] = {"svg": "image/svg+xml", "png": "image/png"}
PALETTE = ("#3056d3", "#e8590c", "#2b8a3e", "#c2255c", "#5f3dc4", "#1098ad", "#f59f00")
_lock = threading.Lock()  # matplotlib's font cache and rcParams are process-wide
_configured = False


def _configure() -> None:
    global _configured
    with _lock:
        if _configured:
            return
        import matplotlib
        from cycler import cycler  # matplotlib's own dependency

        matplotlib.use("Agg", force=True)
        matplotlib.rcParams.update(
            {
                "svg.fonttype": "none",  # text stays text: selectable, searchable, small
                "svg.hashsalt": "parley",  # the same chart gives the same bytes
                "text.parse_math": False,  # a tenant's label ("$5 off", "a_b") is text, not TeX
                "font.size": 10,
                "axes.spines.top": False,
                "axes.spines.right": False,
                "axes.prop_cycle": cycler(color=PALETTE),
                "figure.dpi": 100,
            }
        )
        _configured = True


def figure(width: float = 7.0, height: float = 4.0) -> Figure:
    """A new figure (inches at 100 dpi) in the house style; not tied to pyplot's state, so
    it is freed when dropped."""
    _configure()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def counts_axis(axis: Any) -> None:
    """Ticks at whole numbers only on an axis that counts things (no "0.25 conversations")."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def render(fig: Figure, fmt: PlotFormat, *, metadata: dict[str, Any] | None = None) -> bytes:
    """``fig`` as SVG or PNG bytes. SVGs carry no date, so a chart is byte-for-byte
    reproducible and cacheable."""
    buf = io.BytesIO()
    meta: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
    meta.update(metadata or {})
    fig.savefig(buf, format=fmt, metadata=meta)
    return buf.getvalue()


def parse_format(name: str) -> PlotFormat:
    """``svg`` or ``png`` from a file name or extension; ``InvalidInput`` otherwise."""
    ext = name.rsplit(".", 1)[-1].lower()
    if ext not in FORMATS:
        raise InvalidInput(f"charts are drawn as svg or png, not {ext!r}")
    return ext  # type: ignore[return-value]


def media_type(fmt: PlotFormat) -> str:
    return FORMATS[fmt]
