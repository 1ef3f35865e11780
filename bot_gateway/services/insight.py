"""Model insight: a model's charts, the held-out examples behind its confusion matrix, and a
dataset's label distribution.

Charts are drawn from the metrics the job stored (``core.charts``) and kept per model: a
succeeded model's metrics change only when its out-of-scope threshold is moved, so the
cache key holds that threshold. Which charts a model has follows from what its metrics hold
(a confusion matrix, an out-of-scope curve, per-label average precision), not from its task's
name. Held-out predictions are a file in a classifier's artifact (``training.jobs``); the
examples' texts and images are read from the dataset when asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from bot_gateway.deps import Gateway
from core import charts
from core.db import session_scope
from core.errors import Conflict, InvalidInput, NotFound, NotReady
from core.lru import Lru
from core.plots import PlotFormat, render
from core.remote_models import BACKEND as REMOTE_BACKEND
from core.tables import Example, Model
from training import registry
from training.datasets import service as datasets
from training.jobs import HELD_OUT_FILE

__all__ = [
    "MAX_MATRIX_LABELS",
    "MODEL_PLOTS",
    "HeldOutExample",
    "HeldOutPage",
    "available_plots",
    "dataset_plot",
    "held_out",
    "model_plot",
]

CACHE_BYTES = 64 * 1024 * 1024
"""The most chart bytes kept in memory per gateway process (least recently used go first)."""
MAX_MATRIX_LABELS = 150
"""The most labels a confusion-matrix chart draws: its cells grow with the square of the labels
(150 are 22,500 cells, tens of seconds of drawing and megabytes of SVG), so a larger
``max_labels`` for a model with more labels is refused rather than left to tie up a worker."""

Metrics = Mapping[str, Any]


def _per_label(metrics: Metrics) -> Mapping[str, Mapping[str, Any]]:
    """Per-label scores: classifiers' and detectors' ``per_label``, entity models'
    ``per_entity``."""
    return metrics.get("per_label") or metrics.get("per_entity") or {}


def _has_ap(metrics: Metrics) -> bool:
    return any(
        key in scores
        for scores in _per_label(metrics).values()
        for key in ("ap50", "average_precision")
    )


@dataclass(frozen=True)
class _Plot:
    """One kind of chart: whether a model has it, and how it is drawn."""

    applies: Callable[[Model], bool]
    draw: Callable[[Model, int], Any]


MODEL_PLOTS: dict[str, _Plot] = {
    "confusion-matrix": _Plot(
        lambda m: bool((m.metrics or {}).get("confusion_matrix")),
        lambda m, n: charts.confusion_matrix((m.metrics or {})["confusion_matrix"], max_labels=n),
    ),
    "learning-curve": _Plot(
        lambda m: bool(m.learning_curve),
        lambda m, n: charts.learning_curve(m.learning_curve or []),
    ),
    "out-of-scope": _Plot(
        lambda m: bool(((m.metrics or {}).get("out_of_scope") or {}).get("curve")),
        lambda m, n: charts.out_of_scope((m.metrics or {})["out_of_scope"]),
    ),
    "per-label": _Plot(
        lambda m: bool(_per_label(m.metrics or {})),
        lambda m, n: charts.per_label(_per_label(m.metrics or {}), max_labels=n),
    ),
    "ap-per-label": _Plot(
        lambda m: _has_ap(m.metrics or {}),
        lambda m, n: charts.ap_per_label(_per_label(m.metrics or {}), max_labels=n),
    ),
}


def _remote(model: Model) -> bool:
    return model.backend == REMOTE_BACKEND


def _why_no_charts(model: Model) -> str:
    if _remote(model):  # POST /v1/models/remote: trained and scored elsewhere
        return "it runs on your own model server; Parley did not train or score it"
    return "it was trained without a held-out split"


def available_plots(model: Model) -> list[str]:
    """The chart kinds ``model``'s metrics can draw."""
    return [kind for kind, plot in MODEL_PLOTS.items() if plot.applies(model)]


_cache: Lru[tuple[Any, ...], bytes] = Lru(CACHE_BYTES, size=len)


def _succeeded(session: Any, tenant_id: str, model_id: str, what: str) -> Model:
    model = registry.resolve(session, tenant_id, model_id)
    if model.status != "succeeded":
        raise NotReady(
            f"model {model.id} is {model.status}; {what} come when it succeeds",
            status=model.status,
        )
    return model


def model_plot(
    gateway: Gateway,
    tenant_id: str,
    model_id: str,
    kind: str,
    fmt: PlotFormat,
    *,
    max_labels: int = charts.DEFAULT_MAX_LABELS,
) -> bytes:
    """A succeeded model's chart of ``kind`` as SVG or PNG bytes."""
    plot = MODEL_PLOTS.get(kind)
    if plot is None:
        raise NotFound(f"no chart kind {kind!r}; kinds: {', '.join(MODEL_PLOTS)}")
    with session_scope(gateway.engine) as session:
        model = _succeeded(session, tenant_id, model_id, "its charts")
        if not plot.applies(model):
            kinds = available_plots(model)
            raise InvalidInput(
                f"model {model.id} ({model.task}) has no {kind} chart; its charts: "
                + (", ".join(kinds) if kinds else f"none ({_why_no_charts(model)})")
            )
        if kind == "confusion-matrix":
            _check_matrix_labels(model, max_labels)
        threshold = ((model.metrics or {}).get("out_of_scope") or {}).get("threshold")
        key = (model.id, model.finished_at, threshold, kind, fmt, max_labels)
        cached = _cache.get(key)
        if cached is not None:
            return cached
        session.expunge(model)  # drawn outside the transaction, from what was read
    data = render(plot.draw(model, max_labels), fmt)
    _cache.put(key, data)
    return data


def _check_matrix_labels(model: Model, max_labels: int) -> None:
    """``InvalidInput`` when the confusion matrix would draw more than ``MAX_MATRIX_LABELS``."""
    labels = len((model.metrics or {})["confusion_matrix"]["labels"])
    if min(labels, max_labels) > MAX_MATRIX_LABELS:
        message = (
            f"a confusion matrix draws at most {MAX_MATRIX_LABELS} of the model's {labels} "
            f"labels; ask for max_labels={MAX_MATRIX_LABELS} or fewer (the most confused stay)"
        )
        raise InvalidInput(message, details=[{"field": "max_labels", "message": message}])


def dataset_plot(
    gateway: Gateway,
    tenant_id: str,
    dataset_id: str,
    fmt: PlotFormat,
    *,
    max_labels: int = charts.DEFAULT_MAX_LABELS,
) -> bytes:
    """A dataset's label distribution (examples per label) as SVG or PNG bytes."""
    with session_scope(gateway.engine) as session:
        counts = dict(datasets.get_dataset(session, tenant_id, dataset_id).label_counts or {})
    key = ("dataset-labels", dataset_id, tuple(sorted(counts.items())), fmt, max_labels)
    cached = _cache.get(key)  # the chart is drawn from the counts alone
    if cached is None:
        cached = render(charts.label_distribution(counts, max_labels=max_labels), fmt)
        _cache.put(key, cached)
    return cached


@dataclass(frozen=True)
class HeldOutExample:
    example_id: int
    text: str | None
    label: str
    predicted: str
    confidence: float
    image_url: str | None


@dataclass(frozen=True)
class HeldOutPage:
    total: int
    offset: int
    limit: int
    examples: list[HeldOutExample]


def held_out(
    gateway: Gateway,
    tenant_id: str,
    model_id: str,
    *,
    label: str | None = None,
    predicted: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> HeldOutPage:
    """The held-out examples a classifier was scored on, with what it predicted; ``label``
    and ``predicted`` pick one confusion-matrix cell (or row, or column). Texts and images
    come from the dataset as it is now: an example deleted since has neither."""
    with session_scope(gateway.engine) as session:
        model = _succeeded(session, tenant_id, model_id, "its held-out examples")
        metrics = model.metrics or {}
        if not metrics.get("confusion_matrix"):
            raise InvalidInput(
                f"held-out examples are kept for single-label classifiers (intent, "
                f"image-classification) trained with a held-out split; {model.id} is a "
                f"{model.task} model"
                + ("" if metrics and not _remote(model) else f" ({_why_no_charts(model)})")
            )
        model_key, dataset_id = model.artifact_key, model.dataset_id
    key = f"{model_key}/{HELD_OUT_FILE}"
    if not model_key or not gateway.store.exists(key):
        raise Conflict(
            f"model {model_id} was trained before held-out examples were kept; "
            "retrain to see held-out examples"
        )
    rows = json.loads(gateway.store.get_bytes(key))["examples"]
    chosen = [
        r
        for r in rows
        if (label is None or r["label"] == label)
        and (predicted is None or r["predicted"] == predicted)
    ]
    page = chosen[offset : offset + limit]
    with session_scope(gateway.engine) as session:
        found = {
            e.id: (e.text, e.blob_key)
            for e in session.execute(
                select(Example).where(
                    Example.dataset_id == dataset_id,
                    Example.id.in_([r["example_id"] for r in page]),
                )
            ).scalars()
        }
    examples = []
    for r in page:
        text, blob = found.get(r["example_id"], (None, None))
        examples.append(
            HeldOutExample(
                example_id=r["example_id"],
                text=text,
                label=r["label"],
                predicted=r["predicted"],
                confidence=r["confidence"],
                image_url=f"/v1/datasets/{dataset_id}/examples/{r['example_id']}/image"
                if blob
                else None,
            )
        )
    return HeldOutPage(total=len(chosen), offset=offset, limit=limit, examples=examples)
