"""The held-out split a train job evaluates on, and the metrics it reports."""

from __future__ import annotations

from collections import Counter

import pytest

from core.evaluation import classification_metrics, stratified_split

LABELS = ["a"] * 10 + ["b"] * 5 + ["c"] + ["d"] * 2 + ["a", "b", "e", "e", "e"]


def by_label(indices: list[int], labels: list[str]) -> Counter[str]:
    return Counter(labels[i] for i in indices)


# --- stratified_split -------------------------------------------------------------------------


def test_split_is_deterministic_for_a_seed() -> None:
    first = stratified_split(LABELS, 0.8, seed=7)

    assert stratified_split(LABELS, 0.8, seed=7) == first
    others = {tuple(stratified_split(LABELS, 0.8, seed=s)[1]) for s in range(1, 6)}
    assert len(others | {tuple(first[1])}) > 1, "the seed must change which examples are held out"


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("train_fraction", [0.0, 0.5, 0.8, 1.0])
def test_split_loses_and_duplicates_no_index(train_fraction: float, seed: int) -> None:
    train, held = stratified_split(LABELS, train_fraction, seed=seed)

    assert train == sorted(train)
    assert held == sorted(held)
    assert not set(train) & set(held)
    assert sorted(train + held) == list(range(len(LABELS)))


@pytest.mark.parametrize("train_fraction", [0.0, 0.3, 0.8, 1.0])
def test_every_label_keeps_a_training_example(train_fraction: float) -> None:
    train, _ = stratified_split(LABELS, train_fraction, seed=3)

    assert set(by_label(train, LABELS)) == set(LABELS)


def test_all_but_one_held_out_when_train_fraction_is_zero() -> None:
    train, _ = stratified_split(LABELS, 0.0, seed=3)

    assert by_label(train, LABELS) == {label: 1 for label in set(LABELS)}


def test_single_example_label_goes_only_to_training() -> None:
    for seed in range(10):
        train, held = stratified_split(LABELS, 0.5, seed=seed)
        c = LABELS.index("c")
        assert c in train
        assert c not in held


def test_held_out_counts_per_label() -> None:
    _, held = stratified_split(LABELS, 0.8, seed=0)

    # round(n * 0.2), at most n - 1: a 11 -> 2, b 6 -> 1, c 1 -> 0, d 2 -> 0, e 3 -> 1
    assert by_label(held, LABELS) == {"a": 2, "b": 1, "e": 1}


@pytest.mark.parametrize("train_fraction", [0.5, 0.7, 0.8, 0.9])
def test_held_out_share_per_label_is_one_minus_train_fraction(train_fraction: float) -> None:
    labels = [label for label, n in (("x", 100), ("y", 40), ("z", 25)) for _ in range(n)]
    labels = labels[::2] + labels[1::2]  # labels interleaved, not in blocks

    _, held = stratified_split(labels, train_fraction, seed=11)

    counts = Counter(labels)
    for label, n_held in by_label(held, labels).items():
        assert abs(n_held / counts[label] - (1 - train_fraction)) <= 1 / counts[label]
    assert set(by_label(held, labels)) == {"x", "y", "z"}


def test_split_of_nothing_is_empty() -> None:
    assert stratified_split([], 0.8, seed=0) == ([], [])


# --- classification_metrics -------------------------------------------------------------------


def test_metrics_on_a_hand_computed_example() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]

    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])

    # a: tp 2, predicted 2, support 3 -> p 1, r 2/3, f1 0.8
    # b: tp 1, predicted 2, support 2 -> p 1/2, r 1/2, f1 1/2
    # c: tp 1, predicted 2, support 1 -> p 1/2, r 1, f1 2/3
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["num_evaluated"] == 6
    assert m["per_label"] == {
        "a": {"precision": 1.0, "recall": 0.666667, "f1": 0.8, "support": 3},
        "b": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "c": {"precision": 0.5, "recall": 1.0, "f1": 0.666667, "support": 1},
    }
    # rows are the truth, columns the prediction
    assert m["confusion_matrix"] == {
        "labels": ["a", "b", "c"],
        "matrix": [
            [2, 1, 0],
            [0, 1, 1],
            [0, 0, 1],
        ],
    }


def test_confusion_matrix_follows_the_given_label_order() -> None:
    m = classification_metrics(["a", "b"], ["b", "b"], ["b", "a"])

    assert m["confusion_matrix"] == {"labels": ["b", "a"], "matrix": [[1, 0], [1, 0]]}


def test_labels_absent_from_the_held_out_set_are_left_out_of_macro_f1() -> None:
    y_true = ["a", "a", "b"]
    y_pred = ["a", "a", "a"]

    m = classification_metrics(y_true, y_pred, ["a", "b", "unseen"])

    # a: p 2/3, r 1, f1 0.8; b: f1 0; "unseen" has no support and is not averaged in
    assert m["macro_f1"] == pytest.approx(0.4)
    assert m["per_label"]["unseen"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_predicting_an_absent_label_costs_precision_but_it_stays_out_of_macro() -> None:
    m = classification_metrics(["a", "b"], ["a", "d"], ["a", "b", "d"])

    assert m["macro_f1"] == pytest.approx(0.5)  # mean of a (1.0) and b (0.0), not of three
    assert m["per_label"]["d"]["support"] == 0
    assert m["confusion_matrix"]["matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_perfect_predictions() -> None:
    m = classification_metrics(["x", "y", "y"], ["x", "y", "y"], ["x", "y"])

    assert m["accuracy"] == 1.0
    assert m["macro_f1"] == 1.0


def test_no_held_out_examples_gives_no_scores() -> None:
    m = classification_metrics([], [], ["a", "b"])

    assert m["accuracy"] is None
    assert m["macro_f1"] is None
    assert m["num_evaluated"] == 0
    assert m["confusion_matrix"]["matrix"] == [[0, 0], [0, 0]]


def test_metrics_are_plain_python_values() -> None:
    m = classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])

    assert type(m["accuracy"]) is float
    assert type(m["macro_f1"]) is float
    assert type(m["per_label"]["a"]["support"]) is int
    assert type(m["confusion_matrix"]["matrix"][0][0]) is int


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        classification_metrics(["a", "b"], ["a"], ["a", "b"])
