"""Evaluation every backend and the job runner share, in the shape the API returns.

- the held-out split, stratified by label (``stratified_split``);
- classification: accuracy, macro-F1, per-label precision / recall / F1, confusion matrix;
- entity spans: exact-match precision / recall / F1 per type and micro-averaged;
- multi-label classification: per-label average precision at each label's threshold, mean
  AP, micro and macro F1;
- intent models' out-of-scope threshold (``calibrate_out_of_scope``);
- OCR's edit distance (``levenshtein``).

Backends use these for their learning curves, the task bases (``core.backends``) for the
held-out metrics of a finished job.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "OUT_OF_SCOPE",
    "stratified_split",
    "accuracy_and_macro_f1",
    "average_precision",
    "calibrate_out_of_scope",
    "classification_metrics",
    "entity_metrics",
    "levenshtein",
    "multilabel_metrics",
]

OUT_OF_SCOPE = "out_of_scope"
"""The intent label of inputs the bot should not answer (examples may carry it; low
confidence maps to it)."""


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Metrics in the shape the API returns (``labels`` fixes the order)."""
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    matrix = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[index[t], index[p]] += 1
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0  # macro over labels that occur in the held-out split
    total = int(support.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else None,
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "num_evaluated": total,
        "per_label": {
            label: {
                "precision": round(float(precision[i]), 6),
                "recall": round(float(recall[i]), 6),
                "f1": round(float(f1[i]), 6),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {"labels": list(labels), "matrix": matrix.tolist()},
    }


def accuracy_and_macro_f1(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> tuple[float | None, float | None]:
    m = classification_metrics(y_true, y_pred, labels)
    return m["accuracy"], m["macro_f1"]


def entity_metrics(
    gold: Sequence[Sequence[Mapping[str, Any]]], predicted: Sequence[Sequence[Mapping[str, Any]]]
) -> dict[str, Any]:
    """Exact-span precision / recall / F1 per entity type and micro-averaged.

    A predicted entity counts only when its start, end and type all match a gold one.
    """
    tp: dict[str, int] = {}
    n_gold: dict[str, int] = {}
    n_pred: dict[str, int] = {}
    for g_row, p_row in zip(gold, predicted, strict=True):
        g = {(e["start"], e["end"], e["entity"]) for e in g_row}
        p = {(e["start"], e["end"], e["entity"]) for e in p_row}
        for _, _, t in g:
            n_gold[t] = n_gold.get(t, 0) + 1
        for _, _, t in p:
            n_pred[t] = n_pred.get(t, 0) + 1
        for _, _, t in g & p:
            tp[t] = tp.get(t, 0) + 1

    def prf(t: int, np_: int, ng: int) -> dict[str, float]:
        precision = t / np_ if np_ else 0.0
        recall = t / ng if ng else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6)}

    types = sorted(set(n_gold) | set(n_pred))
    return {
        "per_entity": {
            t: {
                **prf(tp.get(t, 0), n_pred.get(t, 0), n_gold.get(t, 0)),
                "support": n_gold.get(t, 0),
            }
            for t in types
        },
        "micro": prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values())),
        "num_evaluated": len(gold),
    }


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the precision-recall curve of one label (all-point interpolation); None
    when the label has no positive example."""
    positives = int(truth.sum())
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    hits = truth[order].astype(float)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / positives
    # precision envelope, then the area under the step curve
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * envelope))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def multilabel_metrics(
    truth: Sequence[Sequence[str]],
    probs: np.ndarray,
    labels: Sequence[str],
    thresholds: Sequence[float],
) -> dict[str, Any]:
    """Multi-label metrics: per-label precision / recall / F1 at each label's threshold and
    average precision; ``map`` (mean AP), micro and macro F1, exact-match accuracy."""
    k = len(labels)
    index = {label: i for i, label in enumerate(labels)}
    y = np.zeros((len(truth), k), dtype=bool)
    for row, names in enumerate(truth):
        for name in names:
            if name in index:
                y[row, index[name]] = True
    predicted = probs >= np.asarray(thresholds, dtype=float)[None, :]
    tp = (predicted & y).sum(axis=0).astype(float)
    fp = (predicted & ~y).sum(axis=0).astype(float)
    fn = (~predicted & y).sum(axis=0).astype(float)
    precision = np.divide(tp, tp + fp, out=np.zeros(k), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(k), where=(tp + fn) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    aps = [average_precision(probs[:, i], y[:, i]) for i in range(k)]
    present = [i for i in range(k) if y[:, i].any()]
    micro_p = tp.sum() / max(tp.sum() + fp.sum(), 1)
    micro_r = tp.sum() / max(tp.sum() + fn.sum(), 1)
    return {
        "map": float(np.mean([aps[i] for i in present])) if present else None,
        "macro_f1": float(f1[present].mean()) if present else None,
        "micro_f1": float(2 * micro_p * micro_r / (micro_p + micro_r))
        if micro_p + micro_r > 0
        else 0.0,
        "exact_match": float((predicted == y).all(axis=1).mean()) if len(y) else None,
        "num_evaluated": len(truth),
        "per_label": {
            label: {
                "precision": round(float(precision[i]), 6),
                "recall": round(float(recall[i]), 6),
                "f1": round(float(f1[i]), 6),
                "average_precision": _rounded(aps[i]),
                "threshold": round(float(thresholds[i]), 6),
                "support": int(y[:, i].sum()),
            }
            for i, label in enumerate(labels)
        },
    }


def stratified_split(
    labels: Sequence[str], train_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices), per label; every label keeps at least one for training.

    A label with a single example goes to training only.
    """
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    train, held = [], []
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        n_held = min(len(idx) - 1, round(len(idx) * (1 - train_fraction)))
        held.extend(idx[:n_held])
        train.extend(idx[n_held:])
    return sorted(train), sorted(held)


def calibrate_out_of_scope(
    y_true: Sequence[str],
    probs: np.ndarray,
    labels: Sequence[str],
    *,
    in_scope_quantile: float = 0.05,
    fixed: float | None = None,
) -> dict[str, Any]:
    """A confidence threshold below which an input counts as out of scope, and its effect.

    With ``out_of_scope`` examples in the held-out split, the threshold maximises the mean of
    in-scope accuracy and out-of-scope recall; without them, it is the ``in_scope_quantile``
    of the top probability of correctly classified in-scope examples (so about that share of
    in-scope inputs would be flagged). ``fixed`` skips calibration.
    """
    labels = list(labels)
    top = probs.max(axis=1)
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    truth = list(y_true)
    has_oos = any(t == OUT_OF_SCOPE for t in truth)

    def evaluate(threshold: float) -> tuple[float | None, float | None]:
        final = [
            OUT_OF_SCOPE if p == OUT_OF_SCOPE or c < threshold else p
            for p, c in zip(predicted, top, strict=True)
        ]
        ins = [(t, f) for t, f in zip(truth, final, strict=True) if t != OUT_OF_SCOPE]
        oos = [f for t, f in zip(truth, final, strict=True) if t == OUT_OF_SCOPE]
        in_acc = sum(t == f for t, f in ins) / len(ins) if ins else None
        oos_recall = sum(f == OUT_OF_SCOPE for f in oos) / len(oos) if oos else None
        return in_acc, oos_recall

    if fixed is not None:
        threshold, method = float(fixed), "fixed"
    elif has_oos:
        best, threshold = -1.0, 0.0
        for candidate in sorted({0.0, *np.round(top, 4).tolist()}):
            in_acc, oos_recall = evaluate(candidate)
            score = ((in_acc or 0.0) + (oos_recall or 0.0)) / 2
            if score > best + 1e-9:
                best, threshold = score, float(candidate)
        method = "balanced_on_out_of_scope_examples"
    else:
        correct = [c for t, p, c in zip(truth, predicted, top, strict=True) if t == p]
        threshold = float(np.quantile(correct, in_scope_quantile)) if correct else 0.0
        method = f"in_scope_quantile_{in_scope_quantile:g}"
    in_acc, oos_recall = evaluate(threshold)
    return {
        "threshold": round(threshold, 6),
        "method": method,
        "in_scope_accuracy": in_acc,
        "out_of_scope_recall": oos_recall,
        "num_out_of_scope": sum(t == OUT_OF_SCOPE for t in truth),
    }


def levenshtein(a: str, b: str) -> int:
    """The edit distance between ``a`` and ``b`` (insertions, deletions, substitutions); the
    numerator of OCR's character error rate."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
