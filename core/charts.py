"""The charts of a model's metrics and a dataset's labels, drawn with ``core.plots``.

Each function takes the metrics in the shape the API returns (``core.evaluation``, the task
bases' ``evaluate``) and returns a matplotlib figure; ``core.plots.render`` turns it into SVG
or PNG. The confusion matrix draws every cell as its own rectangle with the SVG id
``cell-{i}-{j}`` (``i`` the true label's index, ``j`` the predicted one's, in
``confusion_matrix.labels`` order), so a page that inlines the SVG can make cells clickable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from core.plots import PALETTE, counts_axis, figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_MAX_LABELS",
    "ap_per_label",
    "confusion_matrix",
    "label_distribution",
    "learning_curve",
    "most_confused",
    "out_of_scope",
    "per_label",
]

DEFAULT_MAX_LABELS = 80
"""Labels a chart shows by default: past this many, the most confused (or least accurate,
or most frequent) are kept and the title says how many were left out."""
_LABEL_CHARS = 28
_CURVE_SERIES = (
    ("validation_accuracy", "held-out accuracy"),
    ("validation_macro_f1", "held-out macro-F1"),
    ("validation_entity_f1", "held-out entity F1"),
    ("validation_map50", "held-out mAP50"),
)


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def _left_out(shown: int, total: int) -> str:
    return "" if shown == total else f" ({shown} of {total} labels shown)"


def _values(points: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """``key`` of each point, NaN (a gap in the line) where it is missing."""
    return [np.nan if p.get(key) is None else float(p[key]) for p in points]


def most_confused(matrix: np.ndarray, max_labels: int) -> list[int]:
    """Indices (in order) of the ``max_labels`` labels with the most errors, as the true or
    the predicted label; all of them when there are no more than that."""
    n = len(matrix)
    if n <= max_labels:
        return list(range(n))
    errors = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * np.diag(matrix)
    ranked = sorted(range(n), key=lambda i: (-int(errors[i]), i))
    return sorted(ranked[:max_labels])


def _cells(cells: list[tuple[int, int, str, tuple[float, float, float, float]]]) -> Any:
    """One artist drawing unit squares ``(x, y, id, colour)`` in data coordinates, each in
    its own SVG group with that id (thousands of ``Rectangle`` patches take seconds to lay
    out and draw; these take milliseconds)."""
    from matplotlib.artist import Artist
    from matplotlib.path import Path
    from matplotlib.transforms import IdentityTransform

    class Cells(Artist):
        def draw(self, renderer: Any) -> None:
            if not self.get_visible() or self.axes is None:
                return
            gc = renderer.new_gc()
            gc.set_foreground("white")
            gc.set_linewidth(0.5)
            identity = IdentityTransform()
            corners = np.array([(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)], dtype=float)
            origins = np.array([(x, y) for x, y, _, _ in cells], dtype=float).reshape(-1, 1, 2)
            shape = (len(cells), len(corners), 2)
            squares = self.axes.transData.transform((origins + corners).reshape(-1, 2))
            for (_, _, gid, colour), square in zip(cells, squares.reshape(shape), strict=True):
                renderer.open_group("cell", gid=gid)
                renderer.draw_path(gc, Path(square, closed=True), identity, colour)
                renderer.close_group("cell")
            gc.restore()

    artist = Cells()
    artist.set_in_layout(False)
    artist.set_zorder(0.5)
    return artist


def confusion_matrix(
    matrix_metrics: Mapping[str, Any], *, max_labels: int = DEFAULT_MAX_LABELS
) -> Figure:
    """A heat map of ``metrics.confusion_matrix``: rows are true labels, columns predicted
    ones, the colour a cell's share of its row, the count written in every non-empty cell."""
    labels: list[str] = list(matrix_metrics["labels"])
    matrix = np.asarray(matrix_metrics["matrix"], dtype=np.int64).reshape(len(labels), len(labels))
    keep = most_confused(matrix, max_labels)
    n = len(keep)
    side = min(26.0, max(5.0, 2.5 + 0.26 * n))
    fig = figure(side + 1.0, side)
    ax = fig.add_subplot()
    rows = matrix.sum(axis=1)
    import matplotlib

    cmap = matplotlib.colormaps["Blues"]
    font = max(4.0, min(10.0, 180.0 / max(n, 1)))
    cells: list[tuple[int, int, str, tuple[float, float, float, float]]] = []
    for r, i in enumerate(keep):
        for c, j in enumerate(keep):
            count = int(matrix[i, j])
            share = count / rows[i] if rows[i] else 0.0
            cells.append((c, r, f"cell-{i}-{j}", cmap(share)))
            if count:
                ax.text(
                    c + 0.5,
                    r + 0.5,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if share > 0.55 else "#1b1b1b",
                ).set_in_layout(False)
    ax.add_artist(_cells(cells))
    ax.set_xlim(0, n)
    ax.set_ylim(n, 0)
    ticks = [k + 0.5 for k in range(n)]
    names = [_short(labels[i]) for i in keep]
    tick_font = max(5.0, min(10.0, 220.0 / max(n, 1)))
    ax.set_xticks(ticks, names, rotation=90, fontsize=tick_font)
    ax.set_yticks(ticks, names, fontsize=tick_font)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_aspect("equal")
    ax.spines[:].set_visible(False)
    ax.tick_params(length=0)
    ax.set_title("Confusion matrix (held-out split)" + _left_out(n, len(labels)))
    norm = matplotlib.colors.Normalize(0, 1)
    fig.colorbar(
        matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap),
        ax=ax,
        shrink=0.6,
        label="share of the true label",
    )
    return fig


def learning_curve(points: Sequence[Mapping[str, Any]]) -> Figure:
    """Training loss (left axis) and the held-out metrics the backend recorded (right axis)
    per epoch."""
    fig = figure(7.5, 4.2)
    ax = fig.add_subplot()
    epochs = [p["epoch"] for p in points]
    ax.plot(epochs, _values(points, "train_loss"), color=PALETTE[0], label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    handles, names = ax.get_legend_handles_labels()
    series = [
        (key, name) for key, name in _CURVE_SERIES if any(p.get(key) is not None for p in points)
    ]
    if series:
        right: Axes = ax.twinx()
        right.spines["right"].set_visible(True)
        for colour, (key, name) in zip(PALETTE[1:], series, strict=False):
            right.plot(
                epochs,
                _values(points, key),
                color=colour,
                label=name,
            )
        right.set_ylim(0, 1.02)
        right.set_ylabel("held-out metric")
        more_handles, more_names = right.get_legend_handles_labels()
        handles, names = handles + more_handles, names + more_names
    ax.legend(handles, names, loc="center right", frameon=False)
    ax.set_title("Learning curve")
    return fig


def out_of_scope(oos: Mapping[str, Any]) -> Figure:
    """The out-of-scope trade-off over thresholds (``metrics.out_of_scope.curve``): held-out
    in-scope accuracy, out-of-scope recall (with out-of-scope examples) and the share of
    in-scope messages turned away; the current threshold marked (and the calibrated one,
    when it was moved by hand)."""
    curve = list(oos.get("curve") or [])
    fig = figure(7.5, 4.2)
    ax = fig.add_subplot()
    x = [p["threshold"] for p in curve]
    for colour, (key, name) in zip(
        PALETTE,
        (
            ("in_scope_accuracy", "in-scope accuracy"),
            ("out_of_scope_recall", "out-of-scope recall"),
            ("in_scope_flagged", "in-scope turned away"),
        ),
        strict=False,
    ):
        if any(p.get(key) is not None for p in curve):
            style = ":" if key == "in_scope_flagged" else "-"
            ax.plot(x, _values(curve, key), style, color=colour, label=name)
    threshold = float(oos.get("threshold") or 0.0)
    ax.axvline(threshold, color="#1b1b1b", linestyle="--", linewidth=1)
    ax.annotate(
        f"threshold {threshold:.3f}",
        (threshold, 1.0),
        xytext=(4, -4),
        textcoords="offset points",
        va="top",
        fontsize=9,
    )
    calibrated = oos.get("calibrated_threshold")
    if calibrated is not None and abs(float(calibrated) - threshold) > 1e-9:
        ax.axvline(float(calibrated), color="#868e96", linestyle=":", linewidth=1)
        ax.annotate(
            f"calibrated {float(calibrated):.3f}",
            (float(calibrated), 0.05),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=8,
            color="#495057",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence threshold (below it: out of scope)")
    ax.set_ylabel("share of held-out messages")
    ax.legend(frameon=False, loc="lower left")
    note = "" if oos.get("num_out_of_scope") else " — no out_of_scope examples held out"
    ax.set_title("Out-of-scope trade-off" + note)
    return fig


def _bars(
    names: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    title: str,
    xlabel: str,
    xlim: tuple[float, float] | None = (0.0, 1.0),
) -> Figure:
    """Horizontal grouped bars, one group per name (top to bottom in ``names`` order)."""
    n = len(names)
    fig = figure(7.5, min(40.0, max(2.5, 1.0 + n * (0.16 + 0.1 * len(series)))))
    ax = fig.add_subplot()
    height = 0.8 / len(series)
    y = np.arange(n)
    for k, ((label, values), colour) in enumerate(zip(series, PALETTE, strict=False)):
        ax.barh(
            y + (k - (len(series) - 1) / 2) * height,
            [np.nan if v is None else v for v in values],
            height=height,
            color=colour,
            label=label,
        )
    ax.set_yticks(y, [_short(s) for s in names], fontsize=max(5.0, min(10.0, 400.0 / max(n, 1))))
    ax.set_ylim(max(n, 1) - 0.5, -0.5)  # an empty dataset: no bars, no singular axis
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    if len(series) > 1:
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    return fig


def per_label(
    scores: Mapping[str, Mapping[str, Any]], *, max_labels: int = DEFAULT_MAX_LABELS
) -> Figure:
    """Precision, recall and F1 (where the task has it) per label; past ``max_labels``, the
    labels with the lowest F1 (or recall)."""
    key = "f1" if any("f1" in s for s in scores.values()) else "recall"
    names = sorted(scores, key=lambda name: (scores[name].get(key) or 0.0, name))[:max_labels]
    names.sort()
    series = [
        (metric, [scores[name].get(metric) for name in names])
        for metric in ("precision", "recall", "f1")
        if any(metric in s for s in scores.values())
    ]
    return _bars(
        names,
        series,
        title="Per-label scores (held-out split)" + _left_out(len(names), len(scores)),
        xlabel="score",
    )


def ap_per_label(
    scores: Mapping[str, Mapping[str, Any]], *, max_labels: int = DEFAULT_MAX_LABELS
) -> Figure:
    """Average precision per label: AP50 and AP over IoU 0.50:0.95 (detectors) or AP at
    the label's threshold (multi-label classifiers); past ``max_labels``, the lowest."""
    keys = [k for k in ("ap50", "ap", "average_precision") if any(k in s for s in scores.values())]
    names = sorted(scores, key=lambda name: (scores[name].get(keys[0]) or 0.0, name))[:max_labels]
    names.sort()
    titles = {"ap50": "AP50", "ap": "AP (IoU 0.50:0.95)", "average_precision": "AP"}
    return _bars(
        names,
        [(titles[k], [scores[name].get(k) for name in names]) for k in keys],
        title="Average precision per label (held-out split)" + _left_out(len(names), len(scores)),
        xlabel="average precision",
    )


def label_distribution(
    counts: Mapping[str, int], *, max_labels: int = DEFAULT_MAX_LABELS
) -> Figure:
    """Examples per label, most frequent first; past ``max_labels``, the most frequent."""
    names = sorted(counts, key=lambda name: (-counts[name], name))[:max_labels]
    fig = _bars(
        names,
        [("examples", [counts[name] for name in names])],
        title="Examples per label" + _left_out(len(names), len(counts)),
        xlabel="examples",
        xlim=None,
    )
    ax = fig.axes[0]
    counts_axis(ax.xaxis)
    for y, name in enumerate(names):
        ax.annotate(
            str(counts[name]),
            (counts[name], y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    return fig
