"""``toy-bow``: a tiny but genuine intent classifier for fast tests (milliseconds, numpy only).

Features are bag-of-words counts: lowercase word tokens hashed (crc32, stable across processes)
into ``BUCKETS`` buckets. The model is a softmax regression trained by full-batch gradient
descent, one step per epoch; it is saved as JSON (labels, weights, bias) and loaded back.

Test hooks in the config: ``fail`` makes ``train`` raise ``RuntimeError("toy failure")``;
``sleep_per_epoch`` slows training down so a test can cancel a running job.

Importing this module registers the backend (``import tests.support.toy_backend``).
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from core.backends import (
    BackendConfig,
    EpochRecord,
    IntentBackend,
    Progress,
    backends,
    unreadable_model,
)
from core.errors import ModelLoadError
from core.evaluation import accuracy_and_macro_f1

__all__ = ["BUCKETS", "ToyBowBackend", "ToyBowConfig", "ToyBowModel", "bag_of_words"]

BUCKETS = 64
FORMAT_VERSION = 1
_TOKEN = re.compile(r"[a-z0-9']+")


def bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """(len(texts), BUCKETS) token counts over a fixed hashing of lowercase tokens."""
    out = np.zeros((len(texts), BUCKETS), dtype=np.float64)
    for row, text in enumerate(texts):
        for token in _TOKEN.findall(text.lower()):
            out[row, zlib.crc32(token.encode()) % BUCKETS] += 1.0
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


class ToyBowConfig(BackendConfig):
    epochs: int = Field(default=5, ge=1, le=10_000)
    learning_rate: float = Field(default=0.5, gt=0)
    fail: bool = False
    sleep_per_epoch: float = Field(default=0.0, ge=0)


class ToyBowModel:
    """Softmax(W x + b) over hashed bag-of-words counts."""

    feature_key = f"toy-bow:{BUCKETS}"

    def __init__(
        self, labels: list[str], weight: np.ndarray, bias: np.ndarray, num_examples: int
    ) -> None:
        self.labels = labels
        self.weight = np.asarray(weight, dtype=np.float64)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.num_examples = num_examples  # how many examples it was trained on

    def featurize(self, texts: Sequence[str]) -> np.ndarray:
        return bag_of_words(texts)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        return _softmax(np.asarray(features) @ self.weight.T + self.bias)

    def predict(self, texts: Sequence[str]) -> list[str]:
        probs = self.predict_features(self.featurize(texts))
        return [self.labels[i] for i in probs.argmax(axis=1)]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "backend": ToyBowBackend.name,
            "buckets": BUCKETS,
            "labels": self.labels,
            "weight": self.weight.tolist(),
            "bias": self.bias.tolist(),
            "num_examples": self.num_examples,
        }
        (directory / "model.json").write_text(json.dumps(meta))


@backends.register("toy-bow")
class ToyBowBackend(IntentBackend[np.ndarray]):
    name: ClassVar[str] = "toy-bow"
    version: ClassVar[str] = "1"
    Config: ClassVar[type[BackendConfig]] = ToyBowConfig

    def featurize(
        self,
        texts: Sequence[str],
        progress: Progress | None = None,
        *,
        config: BackendConfig | None = None,
    ) -> np.ndarray:
        features = bag_of_words(texts)
        if progress is not None:
            progress(1.0)
        return features

    def train(
        self,
        features: np.ndarray,
        labels: Sequence[str],
        config: BackendConfig,
        *,
        seed: int,
        validation: tuple[np.ndarray, Sequence[str]] | None,
        on_epoch: Callable[[EpochRecord], None] | None,
        progress: Progress,
        extras: dict[str, Any] | None = None,
    ) -> ToyBowModel:
        assert isinstance(config, ToyBowConfig)
        if config.fail:
            raise RuntimeError("toy failure")
        label_names = sorted(set(labels))
        index = {label: i for i, label in enumerate(label_names)}
        x = np.asarray(features, dtype=np.float64)
        y = np.zeros((len(labels), len(label_names)))
        y[np.arange(len(labels)), [index[label] for label in labels]] = 1.0
        rng = np.random.default_rng(seed)
        weight = rng.normal(0.0, 0.01, size=(len(label_names), x.shape[1]))
        bias = np.zeros(len(label_names))
        n = len(x)
        for epoch in range(1, config.epochs + 1):
            probs = _softmax(x @ weight.T + bias)
            loss = float(-np.log(np.clip((probs * y).sum(axis=1), 1e-12, None)).mean())
            grad = (probs - y) / n
            weight -= config.learning_rate * grad.T @ x
            bias -= config.learning_rate * grad.sum(axis=0)
            if config.sleep_per_epoch:
                time.sleep(config.sleep_per_epoch)
            if on_epoch is not None:
                acc = f1 = None
                if validation is not None and len(validation[1]):
                    model = ToyBowModel(label_names, weight, bias, n)
                    val_probs = model.predict_features(np.asarray(validation[0]))
                    predicted = [label_names[i] for i in val_probs.argmax(axis=1)]
                    acc, f1 = accuracy_and_macro_f1(
                        validation[1], predicted, sorted(set(label_names) | set(validation[1]))
                    )
                on_epoch(EpochRecord(epoch, loss, acc, f1))
            progress(epoch / config.epochs)
        return ToyBowModel(label_names, weight.copy(), bias.copy(), n)

    def load(self, directory: Path) -> ToyBowModel:
        try:
            meta = json.loads((directory / "model.json").read_text())
        except (OSError, ValueError) as e:
            raise unreadable_model(f"cannot read the model in {directory.name}: {e}") from e
        if meta.get("format_version") != FORMAT_VERSION or meta.get("backend") != self.name:
            raise ModelLoadError(
                f"model format {meta.get('backend')}/{meta.get('format_version')} is not "
                f"{self.name}/{FORMAT_VERSION}; retrain the model"
            )
        labels = list(meta["labels"])
        weight, bias = np.asarray(meta["weight"]), np.asarray(meta["bias"])
        if weight.shape != (len(labels), BUCKETS) or bias.shape != (len(labels),):
            raise unreadable_model(f"model weights have shape {weight.shape}; the file is corrupt")
        return ToyBowModel(labels, weight, bias, int(meta["num_examples"]))
