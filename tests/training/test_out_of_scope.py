"""Out-of-scope threshold calibration and ranking."""

from __future__ import annotations

import numpy as np

from bot_gateway.services.predictions import rank
from core.evaluation import OUT_OF_SCOPE, calibrate_out_of_scope

LABELS = ["greet", OUT_OF_SCOPE, "refund"]


def test_balanced_threshold_uses_out_of_scope_examples() -> None:
    truth = ["greet", "refund", "greet", OUT_OF_SCOPE, OUT_OF_SCOPE]
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # confident greet
            [0.1, 0.1, 0.8],  # confident refund
            [0.6, 0.1, 0.3],  # less sure greet
            [0.5, 0.2, 0.3],  # out of scope, looks like greet at 0.5
            [0.2, 0.7, 0.1],  # out of scope, predicted so
        ]
    )
    result = calibrate_out_of_scope(truth, probs, LABELS)
    assert result["method"] == "balanced_on_out_of_scope_examples"
    assert 0.5 < result["threshold"] <= 0.6
    assert result["in_scope_accuracy"] == 1.0 and result["out_of_scope_recall"] == 1.0
    assert result["num_out_of_scope"] == 2


def test_quantile_threshold_without_out_of_scope_examples() -> None:
    truth = ["greet"] * 20
    probs = np.array([[p, 0.0, 1 - p] for p in np.linspace(0.55, 0.99, 20)])
    result = calibrate_out_of_scope(truth, probs, LABELS, in_scope_quantile=0.1)
    assert result["out_of_scope_recall"] is None
    assert abs(result["threshold"] - np.quantile(probs[:, 0], 0.1)) < 1e-4
    assert 0.85 <= result["in_scope_accuracy"] <= 0.95


def test_fixed_threshold_and_zero_disables() -> None:
    truth = ["greet", "refund"]
    probs = np.array([[0.6, 0.1, 0.3], [0.2, 0.1, 0.7]])
    assert calibrate_out_of_scope(truth, probs, LABELS, fixed=0.65)["in_scope_accuracy"] == 0.5
    assert calibrate_out_of_scope(truth, probs, LABELS, fixed=0.0)["in_scope_accuracy"] == 1.0


def test_rank_flags_low_confidence_and_explicit_label() -> None:
    preds, oos = rank(np.array([0.5, 0.1, 0.4]), LABELS, 2, threshold=0.6)
    assert oos and [p.label for p in preds] == [OUT_OF_SCOPE, "greet"]
    assert preds[0].probability == 0.5
    preds, oos = rank(np.array([0.2, 0.7, 0.1]), LABELS, 3, threshold=None)
    assert oos and preds[0].label == OUT_OF_SCOPE
    preds, oos = rank(np.array([0.8, 0.1, 0.1]), LABELS, 1, threshold=0.6)
    assert not oos and [p.label for p in preds] == ["greet"]
