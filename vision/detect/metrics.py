"""Object-detection metrics: average precision per label (VOC-style, all-point interpolated),
COCO-style mean AP over IoU 0.50:0.05:0.95, and precision / recall of confident detections.

Matching, for one label and one IoU threshold: the label's detections, most probable first,
each take the unmatched true box of the same label in the same image that they overlap most,
when that overlap reaches the threshold (a true positive); otherwise they are false positives.
True boxes left unmatched are misses. A detection of the wrong label is a false positive of
its label and leaves the true box a miss of its own.

Boxes are ``{"x_min", "y_min", "x_max", "y_max"}`` in pixels, continuous coordinates (a box's
width is ``x_max - x_min``). Truth rows are lists of ``{"label", "x_min", ...}``; predicted rows
lists of ``Detection.to_dict()``: ``{"label", "probability", "box": {...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["COCO_THRESHOLDS", "CONFIDENT", "average_precision", "detection_metrics", "iou"]

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""IoU thresholds of COCO's mAP: 0.50, 0.55, ..., 0.95."""
CONFIDENT = 0.5
"""Detections at least this probable count for precision and recall."""


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of boxes ``a`` (n x 4) and ``b`` (m x 4), each row
    ``x_min, y_min, x_max, y_max``: an n x m array."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def average_precision(matched: Sequence[bool], n_truth: int) -> float:
    """Area under the precision-recall curve of detections sorted most probable first
    (``matched[i]``: the i-th is a true positive), with precision made monotone (VOC 2010+
    all-point interpolation). 0.0 when there is no true box."""
    if n_truth == 0:
        return 0.0
    hits = np.asarray(matched, dtype=np.float64)
    if hits.size == 0:
        return 0.0
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, hits.size + 1)
    recall = tp / n_truth
    precision = np.concatenate([[0.0], precision, [0.0]])
    recall = np.concatenate([[0.0], recall, [recall[-1]]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _box(row: Mapping[str, Any]) -> list[float]:
    return [float(row["x_min"]), float(row["y_min"]), float(row["x_max"]), float(row["y_max"])]


def _match(
    truth: Sequence[np.ndarray],
    found: Sequence[tuple[float, int, np.ndarray]],
    threshold: float,
) -> list[bool]:
    """Greedy matching of one label's detections ``(probability, image, box)``, most probable
    first, against its true boxes per image: whether each detection (in that order) matched."""
    taken = [np.zeros(len(t), dtype=bool) for t in truth]
    out: list[bool] = []
    for _, image, box in found:
        boxes = truth[image]
        if len(boxes) == 0:
            out.append(False)
            continue
        overlaps = iou(box[None, :], boxes)[0]
        overlaps[taken[image]] = -1.0
        best = int(np.argmax(overlaps))
        if overlaps[best] >= threshold:
            taken[image][best] = True
            out.append(True)
        else:
            out.append(False)
    return out


def _ratio(num: int, den: int) -> float:
    return round(num / den, 6) if den else 0.0


def detection_metrics(
    truth: Sequence[Sequence[Mapping[str, Any]]],
    predicted: Sequence[Sequence[Mapping[str, Any]]],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Per-label and overall detection quality of ``predicted`` against ``truth`` (one row
    per image, in the same order).

    Per label: ``ap50`` (VOC all-point AP at IoU 0.5, every detection counted whatever its
    probability), ``ap`` (mean AP over IoU 0.50:0.05:0.95), and at IoU 0.5 for detections of
    probability >= 0.5: ``precision``, ``recall``, ``true_positives``, ``false_positives``,
    ``false_negatives``, ``support`` (true boxes) and ``detections`` (confident ones).
    Overall: ``map50`` and ``map`` (means over the labels that have true boxes; ``None`` when
    none has), micro-averaged ``precision`` and ``recall``, and the summed counts. Labels found
    in ``truth`` or ``predicted`` but not in ``labels`` are reported too (and count).
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} truth rows but {len(predicted)} predicted rows")
    names = sorted(
        set(labels)
        | {str(b["label"]) for row in truth for b in row}
        | {str(d["label"]) for row in predicted for d in row}
    )
    per_label: dict[str, dict[str, Any]] = {}
    for name in names:
        boxes = [
            np.array([_box(b) for b in row if b["label"] == name]).reshape(-1, 4) for row in truth
        ]
        found = sorted(
            (
                (float(d["probability"]), image, np.array(_box(d["box"]), dtype=np.float64))
                for image, row in enumerate(predicted)
                for d in row
                if d["label"] == name
            ),
            key=lambda item: -item[0],
        )
        n_truth = sum(len(b) for b in boxes)
        aps = [average_precision(_match(boxes, found, t), n_truth) for t in COCO_THRESHOLDS]
        confident = [f for f in found if f[0] >= CONFIDENT]
        tp = sum(_match(boxes, confident, 0.5))
        per_label[name] = {
            "ap50": round(aps[0], 6) if n_truth else None,
            "ap": round(float(np.mean(aps)), 6) if n_truth else None,
            "precision": _ratio(tp, len(confident)),
            "recall": _ratio(tp, n_truth),
            "true_positives": tp,
            "false_positives": len(confident) - tp,
            "false_negatives": n_truth - tp,
            "support": n_truth,
            "detections": len(confident),
        }
    scored = [m for m in per_label.values() if m["support"]]
    tp = sum(m["true_positives"] for m in per_label.values())
    fp = sum(m["false_positives"] for m in per_label.values())
    fn = sum(m["false_negatives"] for m in per_label.values())
    return {
        "per_label": per_label,
        "map50": round(float(np.mean([m["ap50"] for m in scored])), 6) if scored else None,
        "map": round(float(np.mean([m["ap"] for m in scored])), 6) if scored else None,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "support": tp + fn,
        "detections": tp + fp,
        "num_images": len(truth),
    }
