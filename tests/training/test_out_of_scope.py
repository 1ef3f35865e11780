"""Out-of-scope threshold calibration and ranking."""

from __future__ import annotations

import numpy as np
import pytest

from bot_gateway.services.predictions import rank
from core.evaluation import OUT_OF_SCOPE, calibrate_out_of_scope, curve_point

LABELS = ["greet", OUT_OF_SCOPE, "refund"]


def test_threshold_with_out_of_scope_examples_maximises_overall_accuracy() -> None:
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
    assert result["method"] == "overall_accuracy_on_out_of_scope_examples"
    assert 0.5 < result["threshold"] <= 0.6
    assert result["in_scope_accuracy"] == 1.0 and result["out_of_scope_recall"] == 1.0
    assert result["overall_accuracy"] == 1.0 and result["out_of_scope_share"] == 0.4
    assert result["raw_top1_accuracy"] == 1.0 and result["in_scope_flagged"] == 0.0
    assert result["num_out_of_scope"] == 2


def greet_at(tops: np.ndarray) -> np.ndarray:
    """Rows whose top label is ``greet`` at confidence ``tops`` (only the top counts)."""
    return np.array([[p, 0.0, 0.0] for p in tops])


def overlapping_split(n_in: int = 80, n_oos: int = 20) -> tuple[list[str], np.ndarray]:
    """In-scope inputs answered right with confidences spread over 0.30..0.95, out-of-scope
    ones over 0.30..0.60: no threshold separates them cleanly."""
    truth = ["greet"] * n_in + [OUT_OF_SCOPE] * n_oos
    tops = np.concatenate([np.linspace(0.3, 0.95, n_in), np.linspace(0.3, 0.6, n_oos)])
    return truth, greet_at(tops)


def test_the_share_is_the_prior_of_overall_accuracy() -> None:
    truth, probs = overlapping_split()
    held_out = calibrate_out_of_scope(truth, probs, LABELS)
    assert held_out["out_of_scope_share"] == 0.2  # 20 of 100 held-out inputs
    rare = calibrate_out_of_scope(truth, probs, LABELS, share=0.02)
    common = calibrate_out_of_scope(truth, probs, LABELS, share=0.6)
    assert rare["out_of_scope_share"] == 0.02 and common["out_of_scope_share"] == 0.6
    # off-topic messages rare: turn away nobody; common: catch them all at in-scope's cost
    assert rare["threshold"] == 0.0 and rare["in_scope_accuracy"] == 1.0
    assert common["out_of_scope_recall"] == 1.0 and common["in_scope_accuracy"] < 0.6
    assert rare["threshold"] <= held_out["threshold"] <= common["threshold"]
    for result in (rare, held_out, common):
        s = result["out_of_scope_share"]
        best = max(
            (1 - s) * p["in_scope_accuracy"] + s * p["out_of_scope_recall"] for p in result["curve"]
        )
        assert result["overall_accuracy"] >= best - 1e-6  # no point of the curve does better


def test_without_examples_in_scope_accuracy_stays_within_two_points_of_raw() -> None:
    n = 2000
    rng = np.random.default_rng(0)
    right = rng.random(n) < 0.9  # raw top-1: 90 % right
    tops = np.where(right, rng.uniform(0.3, 1.0, n), rng.uniform(0.1, 0.6, n))
    probs = greet_at(tops)
    truth = ["greet" if r else "refund" for r in right]
    result = calibrate_out_of_scope(truth, probs, LABELS)
    assert result["method"] == "in_scope_within_2_points_of_raw_top1"
    assert result["out_of_scope_recall"] is None and result["overall_accuracy"] is None
    assert result["out_of_scope_share"] is None
    raw, kept = result["raw_top1_accuracy"], result["in_scope_accuracy"]
    assert raw == round(right.mean(), 6)
    # the budget: half of 2 points, less one standard error at 2,000 inputs (0.31 points)
    assert 0.005 <= raw - kept <= 0.0069
    # the highest such threshold: the next right answer up would cost one more
    above = np.sort(tops[right])
    assert (above < result["threshold"]).sum() == round((raw - kept) * n)
    # wrong answers below it are turned away for free: more flagged than the accuracy lost
    assert result["in_scope_flagged"] > raw - kept + 0.01


def test_without_examples_a_small_split_keeps_every_right_answer() -> None:
    truth = ["greet"] * 20
    probs = np.array([[p, 0.0, 1 - p] for p in np.linspace(0.55, 0.99, 20)])
    result = calibrate_out_of_scope(truth, probs, LABELS)
    assert result["threshold"] == 0.55  # the least confident right answer still answered
    assert result["in_scope_accuracy"] == result["raw_top1_accuracy"] == 1.0


def test_the_curve_has_twenty_sorted_points_that_trade_in_scope_for_recall() -> None:
    truth, probs = overlapping_split()
    result = calibrate_out_of_scope(truth, probs, LABELS)
    curve = result["curve"]
    assert len(curve) >= 20
    thresholds = [p["threshold"] for p in curve]
    assert thresholds == sorted(set(thresholds)) and thresholds[0] == 0.0 and thresholds[-1] == 1.0
    assert result["threshold"] in thresholds
    in_acc = [p["in_scope_accuracy"] for p in curve]
    recall = [p["out_of_scope_recall"] for p in curve]
    assert in_acc == sorted(in_acc, reverse=True) and recall == sorted(recall)
    assert in_acc[0] == 1.0 and recall[0] == 0.0 and recall[-1] == 1.0
    assert all(p["in_scope_flagged"] == round(1 - p["in_scope_accuracy"], 6) for p in curve)
    # without out-of-scope examples: no recall, but the in-scope side is there
    no_oos = calibrate_out_of_scope(truth[:80], probs[:80], LABELS)["curve"]
    assert len(no_oos) >= 20 and all(p["out_of_scope_recall"] is None for p in no_oos)
    assert all(p["in_scope_flagged"] is not None for p in no_oos)


def test_curve_point_reads_the_trade_off_at_any_threshold() -> None:
    truth, probs = overlapping_split()
    result = calibrate_out_of_scope(truth, probs, LABELS)
    exact = calibrate_out_of_scope(truth, probs, LABELS, fixed=0.5)
    read = curve_point(result["curve"], 0.5)
    assert abs(read["in_scope_accuracy"] - exact["in_scope_accuracy"]) <= 0.02
    assert abs(read["out_of_scope_recall"] - exact["out_of_scope_recall"]) <= 0.06
    at_chosen = curve_point(result["curve"], result["threshold"])
    assert at_chosen["in_scope_accuracy"] == result["in_scope_accuracy"]
    assert at_chosen["overall_accuracy"] is None  # no share given
    weighed = calibrate_out_of_scope(truth, probs, LABELS, share=0.3)
    overall = curve_point(weighed["curve"], weighed["threshold"], share=0.3)["overall_accuracy"]
    assert abs(overall - weighed["overall_accuracy"]) <= 1e-3


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


def test_job_params_take_an_out_of_scope_share_strictly_between_0_and_1() -> None:
    from core.errors import InvalidInput
    from nlu.intent.embedding_head import EmbeddingHeadBackend
    from training.registry import parse_params

    job, _ = parse_params(EmbeddingHeadBackend, {"out_of_scope_share": 0.2})
    assert job.out_of_scope_share == 0.2
    assert parse_params(EmbeddingHeadBackend, {})[0].out_of_scope_share is None
    for bad in (0, 1, -0.1, 1.5, "a lot"):
        with pytest.raises(InvalidInput, match="out_of_scope_share"):
            parse_params(EmbeddingHeadBackend, {"out_of_scope_share": bad})
