"""The shared EfficientNet-Lite0 feature extractor: images → pooled 1,280-d features.

One extractor per process, device, cache folder and thread count (an entry of
``core.shared_models``); every tenant's image head reads the same features, so
the micro-batcher featurises concurrent requests for different tenants in one pass
(``FEATURE_KEY``). Augmented views for training come from ``augment``.
"""

from __future__ import annotations

import random
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from core.backends import BackendContext
from core.logging import log_event
from core.onnx import onnx_session, write_atomically
from core.shared_models import SharedKey, files_nbytes, shared_models, torch_nbytes
from vision.backbone import FEATURES, IMAGE_SIZE, WEIGHTS_SHA256, lite0, prepare

__all__ = [
    "FEATURES",
    "FEATURE_KEY",
    "LiteFeatures",
    "as_image",
    "augment",
    "features_graph",
    "get_features",
]

FEATURE_KEY = f"lite0:{WEIGHTS_SHA256[:16]}"
BATCH = 16


def as_image(item: Any) -> Image.Image:
    """A PIL image from what serving passes around (a ``DecodedImage`` or a PIL image)."""
    return item.image if hasattr(item, "image") else item


class LiteFeatures:
    """Pooled Lite0 features (before the ImageNet classifier) and, for ``prebuilt-image``,
    the classifier's logits. On CPU the feature network runs in ONNX Runtime (exported once
    into the cache folder: 20 ms an image on one thread here, against 46 ms in PyTorch); on a
    GPU in PyTorch. Thread-safe."""

    def __init__(self, *, device: str = "cpu", cache_dir: Path, threads: int = 1) -> None:
        self.device = device
        self._lock = threading.Lock()
        self._session: Any = None
        self._torch: Any = None
        self._onnx_path: Path | None = None
        path = _graph_path(cache_dir)
        head = cache_dir / f"lite0-classifier-{WEIGHTS_SHA256[:16]}.npz"
        if not device.startswith("cuda") and path.is_file() and head.is_file():
            # both derived once into the cache: serving on CPU needs no torch (about 470 MB)
            with np.load(head, allow_pickle=False) as saved:
                self._weight, self._bias = saved["weight"], saved["bias"]
            self._onnx_path = path
            self._session = onnx_session(path, threads)
            return
        import torch

        model = lite0()
        classifier = model.get_classifier()
        self._weight = classifier.weight.detach().numpy().astype(np.float32).T.copy()
        self._bias = classifier.bias.detach().numpy().astype(np.float32)
        if device.startswith("cuda"):
            self._torch = _pooled(model).to(torch.device(device)).eval()
            return
        if not path.is_file():
            _export_graph(model, path)
        write_atomically(head, lambda tmp: _save_npz(tmp, self._weight, self._bias))
        self._onnx_path = path
        self._session = onnx_session(path, threads)

    @property
    def nbytes(self) -> int:
        """Bytes of weights it holds: the ONNX graph's file or the PyTorch tensors, and the
        ImageNet classifier."""
        network = (
            files_nbytes([self._onnx_path])
            if self._onnx_path is not None
            else torch_nbytes(self._torch)
        )
        return network + self._weight.nbytes + self._bias.nbytes

    def features(self, images: Sequence[Any]) -> np.ndarray:
        """``n x 1280`` float32 pooled features."""
        out = []
        for start in range(0, len(images), BATCH):
            x = np.stack([prepare(as_image(im)) for im in images[start : start + BATCH]])
            if self._session is not None:
                out.append(self._session.run(None, {"images": x})[0])
                continue
            import torch

            with self._lock, torch.inference_mode():
                feats = self._torch(torch.from_numpy(x).to(self.device))
            out.append(feats.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURES), dtype=np.float32)

    def classify_features(self, features: np.ndarray) -> np.ndarray:
        """ImageNet logits from pooled features (the model's own classifier layer)."""
        return np.asarray(features, dtype=np.float32) @ self._weight + self._bias


def _graph_path(cache_dir: Path) -> Path:
    return cache_dir / f"lite0-features-{WEIGHTS_SHA256[:16]}.onnx"


def _export_graph(model: Any, path: Path) -> None:
    """Export Lite0's feature part (``images`` ``[batch, 3, 224, 224]`` → ``features``
    ``[batch, 1280]``) to ONNX at ``path`` (atomic write)."""
    import torch

    log_event("vision.lite0.export_onnx", path=str(path))
    pooled = _pooled(model).eval()
    example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)

    def write(tmp: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes; outputs checked in tests
            torch.onnx.export(
                pooled,
                (example,),
                tmp,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )

    write_atomically(path, write)


def features_graph(cache_dir: Path) -> Path:
    """The feature graph the CPU runtime serves (``images`` → ``features``), exported from
    the shipped weights into ``cache_dir`` once."""
    path = _graph_path(cache_dir)
    if not path.is_file():
        _export_graph(lite0(), path)
    return path


def _save_npz(path: str, weight: np.ndarray, bias: np.ndarray) -> None:
    """The classifier to ``path`` as an uncompressed .npz (under that exact name; no pickle)."""
    with open(path, "wb") as f:
        np.savez(f, weight=weight, bias=bias)


def _pooled(model: Any) -> Any:
    """The feature part of Lite0 as a module: images → pooled features."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    return Pooled()


def get_features(context: BackendContext, device: str | None = None) -> LiteFeatures:
    """The process's extractor for the context's device, cache and threads (built once)."""
    device = device or context.device
    key = SharedKey(
        "image-features",
        FEATURE_KEY,
        device=device,
        threads=context.threads,
        cache_dir=str(context.cache_dir),
    )
    return shared_models.get(
        key,
        lambda: LiteFeatures(device=device, cache_dir=context.cache_dir, threads=context.threads),
        size=lambda features: features.nbytes,
    )


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
