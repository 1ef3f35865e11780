"""``prebuilt-sentiment``: VADER's compound score mapped to a label and a confidence, with the
real lexicon from the installed ``vaderSentiment`` wheel (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import vaderSentiment

from core.backends import builtin_models
from nlu import sentiment
from nlu.sentiment import LABELS, SentimentModel, from_probabilities, probabilities, score_texts

POSITIVE = "I love it, thank you so much! Great service."
NEGATIVE = "This is terrible, I hate your awful service."
NEUTRAL = "The parcel arrives on Tuesday."


def test_the_lexicon_ships_inside_the_package() -> None:
    package = Path(vaderSentiment.__file__).parent
    assert (package / "vader_lexicon.txt").stat().st_size > 100_000
    assert (package / "emoji_utf8_lexicon.txt").is_file()


@pytest.mark.parametrize(
    ("text", "label"), [(POSITIVE, "positive"), (NEGATIVE, "negative"), (NEUTRAL, "neutral")]
)
def test_clear_sentences_get_their_label(text: str, label: str) -> None:
    (found,) = score_texts([text])
    assert found.label == label
    assert 0.5 <= found.score <= 1.0
    if label != "neutral":
        assert found.score > 0.8  # clearly so
        assert (found.compound > 0) == (label == "positive")


def test_a_batch_keeps_its_order() -> None:
    found = score_texts([NEGATIVE, NEUTRAL, POSITIVE, NEGATIVE])
    assert [s.label for s in found] == ["negative", "neutral", "positive", "negative"]
    assert found[0] == found[3]


@pytest.mark.parametrize(
    ("compound", "label", "score"),
    [
        (0.0, "neutral", 1.0),
        (0.025, "neutral", 0.75),
        (-0.025, "neutral", 0.75),
        (0.05, "positive", 0.5),  # on the threshold: VADER's >= 0.05 is positive
        (-0.05, "negative", 0.5),
        (0.0499, "neutral", 0.501),
        (0.525, "positive", 0.75),
        (-1.0, "negative", 1.0),
        (1.0, "positive", 1.0),
    ],
)
def test_compound_to_label_and_score(compound: float, label: str, score: float) -> None:
    row = probabilities(compound)
    assert row.sum() == pytest.approx(1.0) and (row >= 0).all()
    got_label, got_score = from_probabilities(row)
    assert got_label == label
    assert got_score == pytest.approx(score, abs=1e-6)
    assert row[LABELS.index(label)] == pytest.approx(score, abs=1e-6)
    opposite = {"positive": "negative", "negative": "positive"}.get(label)
    if opposite is not None:
        assert row[LABELS.index(opposite)] == 0.0


def test_the_score_grows_away_from_the_thresholds() -> None:
    positive = [from_probabilities(probabilities(c))[1] for c in np.linspace(0.05, 1.0, 20)]
    neutral = [from_probabilities(probabilities(c))[1] for c in np.linspace(0.049, 0.0, 20)]
    assert positive == sorted(positive) and neutral == sorted(neutral)


def test_the_built_in_model_is_a_text_classifier_for_the_batcher() -> None:
    builtin = builtin_models.get("prebuilt-sentiment")
    assert builtin.task == "sentiment" and builtin is sentiment.PREBUILT_SENTIMENT
    model = builtin.load(None)  # type: ignore[arg-type]  # VADER needs no context
    assert isinstance(model, SentimentModel) and model.labels == LABELS
    probs = model.predict_features(model.featurize([POSITIVE, NEGATIVE]))
    assert probs.shape == (2, 3)
    assert [LABELS[i] for i in probs.argmax(axis=1)] == ["positive", "negative"]
    assert model.predict_features(model.featurize([])).shape == (0, 3)
