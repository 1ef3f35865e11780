"""Job-level evaluation: the out-of-scope threshold an intent job calibrates on its held-out
split, and OCR's edit distance. The metrics backends share live in ``core.evaluation``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.evaluation import OUT_OF_SCOPE

__all__ = ["calibrate_out_of_scope", "levenshtein"]


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
