"""Registers ``prebuilt-image``: the EfficientNet-Lite0 ImageNet classifier itself (1,000 labels),
so a tenant gets a first image prediction without training anything. It reads the same shared
features as every tenant's image head, so its requests batch with theirs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.backends import BackendContext, BuiltinModel, builtin_models, resolve_device
from vision.backbone import imagenet_labels
from vision.classify.features import FEATURE_KEY, get_features


class ImageNetClassifier:
    multi_label = False

    def __init__(self, context: BackendContext) -> None:
        self.device = resolve_device(context.device)
        self.labels = list(imagenet_labels())
        self.feature_key = FEATURE_KEY
        self._features = get_features(context, self.device)

    def featurize(self, images: Sequence[Any]) -> np.ndarray:
        return self._features.features(images)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        logits = self._features.classify_features(features)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def _load(context: BackendContext) -> ImageNetClassifier:
    return ImageNetClassifier(context)


PREBUILT_IMAGE = builtin_models.register("prebuilt-image")(
    BuiltinModel(
        name="prebuilt-image",
        task="image-classification",
        backend="efficientnet-lite0-imagenet",
        description="the 1,000 ImageNet classes (EfficientNet-Lite0); no training",
        load=_load,
    )
)
