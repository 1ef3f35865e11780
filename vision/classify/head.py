"""``lite0-head`` and ``lite0-multi-label``: a head trained on frozen, augmented EfficientNet-Lite0
features — seconds of training, a few kB per model, and one shared feature pass for every
tenant's model at serving time (``feature_key``).

Training features are ``n x (1 + augment_views) x 1280``: each image and that many randomly
altered views of it (crop, flip, rotation, colour), all labelled like the image; validation and
prediction use the image alone. Single-label heads are softmax; multi-label heads are one
sigmoid per label with a threshold per label tuned on held-out data for the best F1.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from core.backends import (
    BackendConfig,
    BackendContext,
    EpochRecord,
    ImageClassificationBackend,
    MultiLabelImageBackend,
    Progress,
    backends,
    read_artifact,
    resolve_device,
)
from core.errors import ModelLoadError
from core.evaluation import accuracy_and_macro_f1, classification_metrics, multilabel_metrics
from core.onnx import OnnxExport
from vision.backbone import WEIGHTS_SHA256
from vision.classify.features import FEATURE_KEY, FEATURES, as_image, augment, get_features

FORMAT_VERSION = 1
THRESHOLD_SPLIT = 0.2  # multi-label without validation: share held out to tune thresholds


class ImageHeadConfig(BackendConfig):
    epochs: int = Field(default=60, ge=1, le=1000)
    learning_rate: float = Field(default=0.003, gt=0, le=10)
    batch_size: int = Field(default=64, ge=1, le=4096)
    weight_decay: float = Field(default=1e-3, ge=0, le=1)
    augment_views: int = Field(
        default=4, ge=0, le=32, description="augmented views per training image"
    )


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _first_view(features: np.ndarray) -> np.ndarray:
    return features[:, 0] if features.ndim == 3 else features


class ImageHeadModel:
    """A linear head over L2-normalised Lite0 features; numpy at inference."""

    def __init__(
        self,
        backend: str,
        labels: list[str],
        weight: np.ndarray,
        bias: np.ndarray,
        *,
        multi_label: bool,
        thresholds: list[float] | None,
        context: BackendContext,
        device: str,
    ) -> None:
        self.backend, self.labels, self.multi_label = backend, labels, multi_label
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.thresholds = thresholds or [0.5] * len(labels)
        self.feature_key = FEATURE_KEY
        self.context, self.device = context, device

    @property
    def nbytes(self) -> int:
        return int(self.weight.nbytes + self.bias.nbytes + sum(len(x) + 50 for x in self.labels))

    def featurize(self, images: Sequence[Any]) -> np.ndarray:
        return get_features(self.context, self.device).features(images)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        logits = _normalise(_first_view(features)) @ self.weight.T + self.bias
        if self.multi_label:
            return 1.0 / (1.0 + np.exp(-logits))
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return self.predict_features(features)

    def evaluate(self, features: np.ndarray, targets: Sequence[Any]) -> dict[str, Any]:
        """Held-out metrics: accuracy, macro-F1, per label, confusion matrix (single label);
        per-label P/R/F1 at the thresholds, average precision and mAP (multi-label)."""
        probs = self.predict_features(features)
        if self.multi_label:
            return multilabel_metrics(targets, probs, self.labels, self.thresholds)
        predicted = [self.labels[i] for i in probs.argmax(axis=1)]
        return classification_metrics(
            list(targets), predicted, sorted(set(self.labels) | set(targets))
        )

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight, "bias": self.bias}, str(directory / "head.safetensors"))
        meta = {
            "format_version": FORMAT_VERSION,
            "backend": self.backend,
            "labels": self.labels,
            "multi_label": self.multi_label,
            "thresholds": self.thresholds,
            "backbone_sha256": WEIGHTS_SHA256,
        }
        (directory / "head.json").write_text(json.dumps(meta, indent=2))


def _fit(
    x: np.ndarray,
    y: np.ndarray,
    config: ImageHeadConfig,
    *,
    multi_label: bool,
    seed: int,
    on_epoch: Callable[[int, float, Any], None] | None,
    progress: Progress,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights of a linear head on ``x`` (AdamW, one-cycle); ``y`` is class indices or a 0/1
    matrix (multi-label). ``on_epoch(epoch, loss, (weight, bias))`` after each epoch."""
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(_normalise(x).astype(np.float32))
    yt = torch.from_numpy(y)
    head = torch.nn.Linear(FEATURES, y.shape[1] if multi_label else int(y.max()) + 1)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    n = len(xt)
    batch = min(config.batch_size, n)
    steps = (n + batch - 1) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps
    )
    # logits of normalised features are small: scale them so softmax can become confident
    scale = 16.0
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            logits = head(xt[idx]) * scale
            if multi_label:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt[idx].float())
            else:
                loss = torch.nn.functional.cross_entropy(logits, yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        if on_epoch is not None:
            weights = (head.weight.detach().numpy() * scale, head.bias.detach().numpy() * scale)
            on_epoch(epoch, total / n, weights)
        progress(epoch / config.epochs)
    return head.weight.detach().numpy() * scale, head.bias.detach().numpy() * scale


def tune_thresholds(probs: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per label, the threshold with the best F1 on held-out data (0.5 without positives)."""
    thresholds = []
    for j in range(truth.shape[1]):
        best, best_f1 = 0.5, -1.0
        if truth[:, j].any():
            for t in np.unique(np.concatenate([probs[:, j], [0.5]])):
                pred = probs[:, j] >= t
                tp = float((pred & truth[:, j]).sum())
                f1 = 2 * tp / max(float(pred.sum() + truth[:, j].sum()), 1.0)
                if f1 > best_f1 or (f1 == best_f1 and abs(t - 0.5) < abs(best - 0.5)):
                    best, best_f1 = float(t), f1
        thresholds.append(min(max(best, 0.05), 0.95))
    return thresholds


class _Lite0Head:
    """What the single- and multi-label heads share: the backbone's features, load, save."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Config: ClassVar[type[BackendConfig]] = ImageHeadConfig
    multi_label: ClassVar[bool] = False

    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self.device = resolve_device(context.device)

    @classmethod
    def warm_up(cls, context: BackendContext) -> None:
        """Load the backbone at server start, so the first image prediction is fast."""
        get_features(context, resolve_device(context.device))

    def featurize(
        self,
        images: Sequence[Any],
        progress: Progress | None = None,
        *,
        config: BackendConfig | None = None,
    ) -> np.ndarray:
        """``n x (1 + augment_views) x 1280``: each image, then its augmented views."""
        views = config.augment_views if isinstance(config, ImageHeadConfig) else 0
        extractor = get_features(self.context, self.device)
        out = np.zeros((len(images), 1 + views, FEATURES), dtype=np.float32)
        for i in range(len(images)):
            image = as_image(images[i])
            rng = random.Random(i)
            batch = [image, *(augment(image, rng) for _ in range(views))]
            out[i] = extractor.features(batch)
            if progress is not None:
                progress((i + 1) / len(images))
        return out

    def _model(
        self, labels: list[str], weight: np.ndarray, bias: np.ndarray, thresholds: Any = None
    ) -> ImageHeadModel:
        return ImageHeadModel(
            self.name,
            labels,
            weight,
            bias,
            multi_label=self.multi_label,
            thresholds=thresholds,
            context=self.context,
            device=self.device,
        )

    def load(self, directory: Path) -> ImageHeadModel:
        meta, labels, tensors = read_artifact(
            directory,
            meta_file="head.json",
            tensors_file="head.safetensors",
            backend=self.name,
            format_version=FORMAT_VERSION,
        )
        if meta.get("backbone_sha256") != WEIGHTS_SHA256:
            raise ModelLoadError("the model was trained on another backbone; retrain it")
        weight, bias = tensors.get("weight"), tensors.get("bias")
        if (
            weight is None
            or bias is None
            or weight.shape != (len(labels), FEATURES)
            or bias.shape != (len(labels),)
        ):
            raise ModelLoadError(f"the model in {directory.name} has corrupt weights; retrain it")
        thresholds = meta.get("thresholds")
        if self.multi_label and (
            not isinstance(thresholds, list) or len(thresholds) != len(labels)
        ):
            raise ModelLoadError(f"the model in {directory.name} has no thresholds; retrain it")
        return self._model(labels, weight, bias, thresholds)

    exports_onnx: ClassVar[bool] = True

    def export_onnx(self, directory: Path, target: Path) -> OnnxExport:
        """The shared feature graph and the head, as one graph (``vision.classify.export``)."""
        from vision.classify.export import export_head

        model = self.load(directory)
        return export_head(
            target,
            labels=model.labels,
            weight=model.weight,
            bias=model.bias,
            multi_label=model.multi_label,
            thresholds=model.thresholds,
            cache_dir=self.context.cache_dir,
        )


@backends.register("lite0-head")
class ImageHeadBackend(_Lite0Head, ImageClassificationBackend[np.ndarray]):
    name: ClassVar[str] = "lite0-head"

    def train(
        self,
        features: np.ndarray,
        labels: Sequence[Any],
        config: BackendConfig,
        *,
        seed: int,
        validation: tuple[np.ndarray, Sequence[Any]] | None,
        on_epoch: Callable[[EpochRecord], None] | None,
        progress: Progress,
        extras: dict[str, Any] | None = None,
    ) -> ImageHeadModel:
        assert isinstance(config, ImageHeadConfig)
        views = features.shape[1] if features.ndim == 3 else 1
        flat = features.reshape(-1, FEATURES)
        names = sorted({str(label) for label in labels})
        index = {label: i for i, label in enumerate(names)}
        y = np.repeat(np.array([index[str(label)] for label in labels]), views)

        def record(epoch: int, loss: float, weights: Any) -> None:
            if on_epoch is None:
                return
            acc = f1 = None
            if validation is not None and len(validation[1]):
                probs = self._model(names, *weights).predict_features(validation[0])
                predicted = [names[i] for i in probs.argmax(axis=1)]
                acc, f1 = accuracy_and_macro_f1(
                    validation[1], predicted, sorted(set(names) | set(validation[1]))
                )
            on_epoch(EpochRecord(epoch, loss, acc, f1))

        weight, bias = _fit(
            flat, y, config, multi_label=False, seed=seed, on_epoch=record, progress=progress
        )
        return self._model(names, weight, bias)


@backends.register("lite0-multi-label")
class MultiLabelHeadBackend(_Lite0Head, MultiLabelImageBackend[np.ndarray]):
    name: ClassVar[str] = "lite0-multi-label"
    multi_label: ClassVar[bool] = True

    def train(
        self,
        features: np.ndarray,
        labels: Sequence[Any],
        config: BackendConfig,
        *,
        seed: int,
        validation: tuple[np.ndarray, Sequence[Any]] | None,
        on_epoch: Callable[[EpochRecord], None] | None,
        progress: Progress,
        extras: dict[str, Any] | None = None,
    ) -> ImageHeadModel:
        """One sigmoid per label; thresholds tuned on ``validation`` or, without it, on a
        held-out fifth of the training images (then the head is trained on all of them)."""
        assert isinstance(config, ImageHeadConfig)
        names = sorted({str(x) for row in labels for x in row})
        index = {label: i for i, label in enumerate(names)}

        def matrix(rows: Sequence[Sequence[str]]) -> np.ndarray:
            y = np.zeros((len(rows), len(names)), dtype=np.int64)
            for r, row in enumerate(rows):
                for label in row:
                    if label in index:
                        y[r, index[label]] = 1
            return y

        views = features.shape[1] if features.ndim == 3 else 1

        def fit(idx: np.ndarray, prog: Progress, record: Any) -> tuple[np.ndarray, np.ndarray]:
            x = features[idx].reshape(-1, FEATURES)
            y = np.repeat(matrix([labels[i] for i in idx]), views, axis=0)
            return _fit(x, y, config, multi_label=True, seed=seed, on_epoch=record, progress=prog)

        everything = np.arange(len(features))
        if validation is not None and len(validation[1]):
            val_x, val_y = validation[0], matrix(validation[1])

            def record(epoch: int, loss: float, weights: Any) -> None:
                if on_epoch is not None:
                    probs = self._model(names, *weights).predict_features(val_x)
                    score = multilabel_metrics(validation[1], probs, names, [0.5] * len(names))
                    on_epoch(EpochRecord(epoch, loss, score["exact_match"], score["macro_f1"]))

            weight, bias = fit(everything, progress, record)
        else:
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(features))
            cut = max(1, int(len(order) * THRESHOLD_SPLIT)) if len(order) >= 5 else 0
            if cut:
                held, kept = order[:cut], order[cut:]
                w, b = fit(kept, lambda f: progress(f / 2), None)
                val_x, val_y = features[held], matrix([labels[i] for i in held])
                probs = self._model(names, w, b).predict_features(val_x)
                thresholds = tune_thresholds(probs, val_y.astype(bool))
            else:
                thresholds = [0.5] * len(names)
            weight, bias = fit(everything, lambda f: progress(0.5 + f / 2), None)
            return self._model(names, weight, bias, thresholds)
        probs = self._model(names, weight, bias).predict_features(val_x)
        return self._model(names, weight, bias, tune_thresholds(probs, val_y.astype(bool)))
