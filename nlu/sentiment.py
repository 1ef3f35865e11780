"""Registers ``prebuilt-sentiment``: English sentiment (positive, neutral, negative) with VADER.

VADER (``vaderSentiment``, MIT) is a rule-based scorer whose lexicon and emoji table ship inside
its wheel: nothing is downloaded, nothing is trained, and a text takes microseconds, so the
conversation engine scores every customer message with it (``score``) without a model load.

VADER's ``compound`` score lies in [-1, 1]. The label uses VADER's standard thresholds::

    compound >= 0.05   positive
    compound <= -0.05  negative
    otherwise          neutral

``score`` is the confidence in that label, in [0, 1], a piecewise-linear map of ``|compound|``
that is 0.5 exactly at the thresholds (the text sits on the border of two labels) and grows to
1.0 away from them: for positive and negative, ``0.5 + 0.5 * (|c| - 0.05) / 0.95`` (1.0 at
``|c| = 1``); for neutral, ``1 - 0.5 * |c| / 0.05`` (1.0 at ``c = 0``). The three probabilities
(``probabilities``) give the label its score, the neighbouring label the rest, and the opposite
label 0, so they sum to 1 and the most probable label is always the label.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from core.backends import BackendContext, BuiltinModel, builtin_models

__all__ = [
    "LABELS",
    "PREBUILT_SENTIMENT",
    "THRESHOLD",
    "Sentiment",
    "SentimentModel",
    "from_probabilities",
    "probabilities",
    "score",
    "score_texts",
]

NAME = "prebuilt-sentiment"
THRESHOLD = 0.05
"""VADER's standard border between neutral and positive / negative (on ``|compound|``)."""
LABELS = ["negative", "neutral", "positive"]
_NEG, _NEU, _POS = range(3)


@dataclass(frozen=True)
class Sentiment:
    """One text's sentiment: the label, its confidence and VADER's compound score."""

    label: str
    score: float
    compound: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _analyzer() -> SentimentIntensityAnalyzer:
    """VADER's analyzer (reads its lexicon from the installed package, once per process)."""
    return SentimentIntensityAnalyzer()


def compounds(texts: Sequence[str]) -> np.ndarray:
    """VADER's compound score of each text, in [-1, 1]."""
    with _lock:  # the analyzer is built once; building it twice at once wastes the lexicon read
        analyzer = _analyzer()
    return np.array(
        [float(analyzer.polarity_scores(t)["compound"]) for t in texts], dtype=np.float64
    )


def probabilities(compound: float) -> np.ndarray:
    """The three labels' probabilities (``LABELS`` order) of a compound score (module doc)."""
    c = min(1.0, max(-1.0, float(compound)))
    out = np.zeros(3)
    polar = _POS if c > 0 else _NEG
    if abs(c) >= THRESHOLD:
        out[polar] = 0.5 + 0.5 * (abs(c) - THRESHOLD) / (1.0 - THRESHOLD)
        out[_NEU] = 1.0 - out[polar]
    else:
        out[_NEU] = 1.0 - 0.5 * abs(c) / THRESHOLD
        out[polar] = 1.0 - out[_NEU]
    return out


def from_probabilities(row: np.ndarray) -> tuple[str, float]:
    """The label and score of a row of ``probabilities``: neutral when it has more than half,
    else the more probable polar label (at exactly 0.5 the polar label wins, as ``>= 0.05``
    does)."""
    if row[_NEU] > 0.5:
        return LABELS[_NEU], round(float(row[_NEU]), 6)
    polar = _POS if row[_POS] >= row[_NEG] else _NEG
    return LABELS[polar], round(float(row[polar]), 6)


def score(text: str) -> Sentiment:
    """The sentiment of one text."""
    return score_texts([text])[0]


def score_texts(texts: Sequence[str]) -> list[Sentiment]:
    """The sentiment of each text (see the module docstring for label and score)."""
    out = []
    for c in compounds(texts):
        label, confidence = from_probabilities(probabilities(c))
        out.append(Sentiment(label=label, score=confidence, compound=round(float(c), 4)))
    return out


class SentimentModel:
    """``prebuilt-sentiment`` as a text classifier: the gateway's micro-batcher calls
    ``featurize`` (VADER's compound scores) and ``predict_features`` (the three probabilities),
    so predictions come back in the shape of every text model's."""

    labels = LABELS
    feature_key = "vader-sentiment"

    def featurize(self, texts: Sequence[Any]) -> np.ndarray:
        return compounds([str(t) for t in texts])

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        return np.stack([probabilities(c) for c in features]) if len(features) else np.zeros((0, 3))

    def save(self, directory: Path) -> None:
        raise NotImplementedError("prebuilt-sentiment is built in; there is nothing to save")


def _load(context: BackendContext) -> SentimentModel:
    compounds(["warm up"])  # read the lexicon now, not on the first request
    return SentimentModel()


PREBUILT_SENTIMENT = builtin_models.register(NAME)(
    BuiltinModel(
        name=NAME,
        task="sentiment",
        backend="vadersentiment-3.3.2",
        description="positive, neutral or negative (VADER's English lexicon, shipped in its "
        "package); no training",
        load=_load,
    )
)
