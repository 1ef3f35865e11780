"""The shared EfficientNet-Lite0 feature extractor: images → pooled 1,280-d features.

One extractor per process and device; every tenant's image head reads the same features, so
the micro-batcher featurises concurrent requests for different tenants in one pass
(``FEATURE_KEY``). Augmented views for training come from ``augment``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from vision.backbone import FEATURES, WEIGHTS_SHA256, lite0, prepare

__all__ = ["FEATURES", "FEATURE_KEY", "LiteFeatures", "as_image", "augment", "get_features"]

FEATURE_KEY = f"lite0:{WEIGHTS_SHA256[:16]}"
BATCH = 16


def as_image(item: Any) -> Image.Image:
    """A PIL image from what serving passes around (a ``DecodedImage`` or a PIL image)."""
    return item.image if hasattr(item, "image") else item


class LiteFeatures:
    """Pooled Lite0 features (before the ImageNet classifier) and, for ``prebuilt-image``,
    the classifier's logits. Thread-safe."""

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        self._model = lite0().to(self.device)
        self._lock = threading.Lock()

    def _run(self, images: Sequence[Any], logits: bool) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(images), BATCH):
            chunk = [prepare(as_image(im)) for im in images[start : start + BATCH]]
            x = torch.from_numpy(np.stack(chunk)).to(self.device)
            with self._lock, torch.inference_mode():
                feats = self._model.forward_head(
                    self._model.forward_features(x), pre_logits=not logits
                )
            out.append(feats.float().cpu().numpy())
        width = 1000 if logits else FEATURES
        return np.concatenate(out) if out else np.zeros((0, width), dtype=np.float32)

    def features(self, images: Sequence[Any]) -> np.ndarray:
        """``n x 1280`` float32 pooled features."""
        return self._run(images, logits=False)

    def logits(self, images: Sequence[Any]) -> np.ndarray:
        """``n x 1000`` ImageNet logits."""
        return self._run(images, logits=True)

    def classify_features(self, features: np.ndarray) -> np.ndarray:
        """ImageNet logits from pooled features (the model's own classifier layer)."""
        import torch

        with self._lock, torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
            return self._model.get_classifier()(x.to(self.device)).float().cpu().numpy()


_extractors: dict[str, LiteFeatures] = {}
_extractors_lock = threading.Lock()


def get_features(device: str = "cpu") -> LiteFeatures:
    """The process's extractor for ``device`` (built once)."""
    with _extractors_lock:
        if device not in _extractors:
            _extractors[device] = LiteFeatures(device)
        return _extractors[device]


def augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """A randomly altered view: crop 60-100 % of the area, flip, small rotation, colour."""
    w, h = image.size
    scale = rng.uniform(0.6, 1.0)
    cw, ch = max(1, int(w * scale**0.5)), max(1, int(h * scale**0.5))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    view = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    angle = rng.uniform(-10, 10)
    view = view.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(127, 127, 127))
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.8, 1.2))
    view = ImageEnhance.Contrast(view).enhance(rng.uniform(0.8, 1.2))
    return ImageEnhance.Color(view).enhance(rng.uniform(0.8, 1.2))
