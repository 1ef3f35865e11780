"""``faster-rcnn-lite0``: object detection with torchvision's Faster R-CNN on an
EfficientNet-Lite0 feature pyramid, fine-tuned per dataset from the shipped ImageNet weights.

The network: Lite0's stem and seven stages (:func:`vision.backbone.lite0`, sha256-checked
weights; batch-norm frozen, the stem and the first ``frozen_stages`` stages not trained), an
FPN over the stride-8, 16 and 32 stages (40, 112 and 320 channels) plus a max-pooled stride-64
level, ``FPN_CHANNELS`` wide; an RPN with two anchor sizes and three aspect ratios a level; a
two-layer box head over 7 x 7 RoI-aligned features. Images are resized (Pillow, before they
become tensors) so that the shorter side is ``min_size`` unless the longer would pass
``max_size`` (by default both 320: the longer side is 320 px), normalised as the backbone was
trained, ``(x - 127) / 128``; boxes come back in the input image's pixels.

Training: AdamW, a linear warm-up then cosine decay; horizontal flips and mild
colour jitter; images without boxes are background examples. With a validation split the
weights of the best epoch (validation mAP50, then mAP) are kept and training stops after
``patience`` epochs without improvement.

Measured on 2 shared CPU cores, one torch thread (``bench/detection.py``: 100 synthetic product
photos of six kinds, 320 x 240, the default 7 epochs): trained in 248 s to test mAP50 0.949
(mAP 0.576); one image predicted in 93 ms (p50). Two threads fighting another process for the
two cores made a training step 6x slower than one thread.

Saved as ``detector.safetensors`` (every tensor) and ``detector.json`` (format version,
backend, labels, config, the network's shape, the weights' sha256, the feature key); loading
checks all of it and raises ``ModelLoadError`` naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image
from pydantic import Field, ValidationError, model_validator

from core.backends import (
    BackendConfig,
    BackendContext,
    Box,
    BoxAnnotation,
    Detection,
    EpochRecord,
    ObjectDetectionBackend,
    Progress,
    backends,
    resolve_device,
    unreadable_model,
)
from core.errors import InvalidInput, ModelLoadError
from core.logging import log_event
from vision.backbone import WEIGHTS_SHA256, lite0
from vision.detect.metrics import detection_metrics

__all__ = ["Box", "Detection", "DetectionBackend", "DetectionConfig", "DetectionModel"]

FORMAT_VERSION = 1
WEIGHTS_FILE = "detector.safetensors"
META_FILE = "detector.json"
BACKBONE = "tf_efficientnet_lite0"
RETURN_STAGES = (2, 4, 6)  # Lite0 stages feeding the FPN: strides 8, 16, 32
STAGE_CHANNELS = (40, 112, 320)
FPN_CHANNELS = 128
ANCHOR_SIZES = ((24, 36), (48, 72), (96, 144), (192, 288))  # per FPN level, at 320 px
ASPECT_RATIOS = (0.5, 1.0, 2.0)
REPRESENTATION = 256  # width of the box head's two fully connected layers
MEAN = 127.0 / 255.0  # pixels in [0, 1] -> (x * 255 - 127) / 128, the backbone's normalisation
STD = 128.0 / 255.0
DETECT_BATCH = 8


def _architecture() -> dict[str, Any]:
    """The fixed shape of the network, recorded in ``detector.json`` and checked at load."""
    return {
        "backbone": BACKBONE,
        "return_stages": list(RETURN_STAGES),
        "fpn_channels": FPN_CHANNELS,
        "anchor_sizes": [list(s) for s in ANCHOR_SIZES],
        "aspect_ratios": list(ASPECT_RATIOS),
        "box_head": REPRESENTATION,
        "normalisation": [127.0, 128.0],
    }


class DetectionConfig(BackendConfig):
    epochs: int = Field(default=7, ge=1, le=300)
    learning_rate: float = Field(default=5e-4, gt=0, le=0.1)
    batch_size: int = Field(default=4, ge=1, le=64)
    min_steps: int = Field(
        default=150,
        ge=0,
        le=100_000,
        description="train at least this many updates: more epochs on a small dataset",
    )
    warmup_steps: int = Field(default=30, ge=0, le=10_000)
    weight_decay: float = Field(default=1e-4, ge=0, le=0.1)
    min_size: int = Field(default=320, ge=64, le=1333, description="shorter side, in pixels")
    max_size: int = Field(default=320, ge=64, le=1333, description="longer side at most")
    frozen_stages: int = Field(
        default=3, ge=0, le=7, description="Lite0 stages (after the stem) left as shipped"
    )
    flip: bool = True
    color_jitter: float = Field(default=0.2, ge=0, lt=1)
    patience: int | None = Field(
        default=None,
        ge=1,
        le=300,
        description="with a validation split, stop after this many epochs without a better mAP",
    )
    score_threshold: float = Field(
        default=0.05, ge=0, lt=1, description="candidates less probable than this are dropped"
    )
    max_detections: int = Field(default=100, ge=1, le=1000)

    @model_validator(mode="after")
    def _sizes(self) -> DetectionConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} is over max_size {self.max_size}")
        return self


# --- sizes ----------------------------------------------------------------------------------


def scaled_size(width: int, height: int, *, min_size: int, max_size: int) -> tuple[int, int]:
    """The size an image is resized to: shorter side ``min_size`` unless the longer side
    would pass ``max_size`` (then the longer side is ``max_size``)."""
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(image: Image.Image, config: DetectionConfig) -> Image.Image:
    size = scaled_size(*image.size, min_size=config.min_size, max_size=config.max_size)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb if size == rgb.size else rgb.resize(size, Image.Resampling.BILINEAR)


def _to_tensor(image: Image.Image) -> Any:
    """An RGB image as a ``3 x h x w`` uint8 tensor."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


# --- torch pieces (torch is imported only when a model is trained or loaded) ---------------


def _backbone(*, pretrained: bool, frozen_stages: int) -> Any:
    """Lite0's stem and stages with frozen batch-norm under an FPN (``out_channels`` wide)."""
    import torch
    from timm.layers import freeze_batch_norm_2d
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    net = lite0(pretrained=pretrained)

    class Lite0FPN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_stem = net.conv_stem
            self.bn1 = net.bn1
            self.blocks = net.blocks
            self.fpn = FeaturePyramidNetwork(
                list(STAGE_CHANNELS), FPN_CHANNELS, extra_blocks=LastLevelMaxPool()
            )
            self.out_channels = FPN_CHANNELS

        def forward(self, x: Any) -> Any:
            x = self.bn1(self.conv_stem(x))
            features: OrderedDict[str, Any] = OrderedDict()
            for i, stage in enumerate(self.blocks):
                x = stage(x)
                if i in RETURN_STAGES:
                    features[str(len(features))] = x
            return self.fpn(features)

    body = freeze_batch_norm_2d(Lite0FPN())
    frozen = [body.conv_stem, body.bn1, *body.blocks[:frozen_stages]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return body


def _detector(num_classes: int, config: DetectionConfig, *, pretrained: bool) -> Any:
    """Faster R-CNN over :func:`_backbone` for ``num_classes`` object classes (+ background)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = _backbone(pretrained=pretrained, frozen_stages=config.frozen_stages)
    anchors = AnchorGenerator(ANCHOR_SIZES, (ASPECT_RATIOS,) * len(ANCHOR_SIZES))
    per_location = len(ANCHOR_SIZES[0]) * len(ASPECT_RATIOS)
    return FasterRCNN(
        backbone,
        num_classes=None,
        min_size=config.min_size,
        max_size=config.max_size,
        image_mean=[MEAN] * 3,
        image_std=[STD] * 3,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(FPN_CHANNELS, per_location),
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(FPN_CHANNELS * 7 * 7, REPRESENTATION),
        box_predictor=FastRCNNPredictor(REPRESENTATION, num_classes + 1),
        box_score_thresh=config.score_threshold,
        box_detections_per_img=config.max_detections,
        box_batch_size_per_image=64,
    )


# --- the model ------------------------------------------------------------------------------


class DetectionModel:
    """Finds objects in images. Thread-safe (one forward pass at a time)."""

    def __init__(
        self,
        network: Any,
        labels: list[str],
        config: DetectionConfig,
        *,
        device: str,
        feature_key: str | None = None,
    ) -> None:
        self.network = network.eval()
        self.labels = labels
        self.config = config
        self.device = device
        self.feature_key = feature_key or f"detect:{uuid.uuid4().hex}"
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Memory the model's tensors hold."""
        tensors = [*self.network.parameters(), *self.network.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def detect(
        self, images: Sequence[Image.Image], *, min_score: float = 0.5
    ) -> list[list[Detection]]:
        """The objects in each image, most probable first, with probability >= ``min_score``
        (and >= the config's ``score_threshold``), boxes in the image's own pixels."""
        images = list(images)
        out: list[list[Detection]] = []
        for start in range(0, len(images), DETECT_BATCH):
            out.extend(self._detect(images[start : start + DETECT_BATCH], min_score))
        return out

    def evaluate(
        self, images: Sequence[Image.Image], truth: Sequence[list[BoxAnnotation]]
    ) -> dict[str, Any]:
        """Held-out metrics (``detection_metrics``) over every candidate box: AP50 per label,
        ``map50``, ``map`` (IoU 0.50:0.95), precision and recall at probability 0.5."""
        found = self.detect(images, min_score=self.config.score_threshold)
        predicted = [[d.to_dict() for d in row] for row in found]
        return detection_metrics(list(truth), predicted, self.labels)

    def _detect(self, images: Sequence[Image.Image], min_score: float) -> list[list[Detection]]:
        import torch

        resized = [_resized(im, self.config) for im in images]
        dev = torch.device(self.device)
        batch = [_to_tensor(im).to(dev).float().div_(255.0) for im in resized]
        with self._lock, torch.inference_mode():
            results = self.network(batch) if batch else []
        out: list[list[Detection]] = []
        for image, small, result in zip(images, resized, results, strict=True):
            sx, sy = image.width / small.width, image.height / small.height
            boxes = result["boxes"].float().cpu().tolist()
            scores = result["scores"].float().cpu().tolist()
            classes = result["labels"].cpu().tolist()
            found = []
            for (x0, y0, x1, y1), score, cls in zip(boxes, scores, classes, strict=True):
                if score < min_score:
                    continue
                box = Box(
                    x_min=round(min(max(x0 * sx, 0.0), image.width), 2),
                    y_min=round(min(max(y0 * sy, 0.0), image.height), 2),
                    x_max=round(min(max(x1 * sx, 0.0), image.width), 2),
                    y_max=round(min(max(y1 * sy, 0.0), image.height), 2),
                )
                found.append(Detection(self.labels[cls - 1], round(score, 6), box))
            found.sort(key=lambda d: -d.probability)
            out.append(found)
        return out

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        path = directory / WEIGHTS_FILE
        save_file(weights, str(path))
        meta = {
            "format_version": FORMAT_VERSION,
            "backend": DetectionBackend.name,
            "backend_version": DetectionBackend.version,
            "labels": self.labels,
            "feature_key": self.feature_key,
            "config": self.config.model_dump(),
            "architecture": _architecture(),
            "backbone_sha256": WEIGHTS_SHA256,
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))

    def state_dict(self) -> dict[str, Any]:
        return dict(self.network.state_dict())


# --- training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Example:
    image: Any  # 3 x h x w uint8 tensor, resized
    boxes: Any  # k x 4 float32, in the resized image's pixels
    classes: Any  # k int64, 1-based (0 is background)


def _is_label(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _label_names(labels: Sequence[Sequence[BoxAnnotation]]) -> list[str]:
    bad = [i for i, row in enumerate(labels) for b in row if not _is_label(b.get("label"))]
    if bad:
        raise InvalidInput(f"image {bad[0]}: every box needs a label (a non-empty string)")
    names = sorted({box["label"] for row in labels for box in row})
    if not names:
        raise InvalidInput(
            "the dataset has no boxes to learn from; annotate objects as "
            "label, x_min, y_min, x_max, y_max"
        )
    return names


def _example(
    image: Image.Image,
    boxes: Sequence[BoxAnnotation],
    index: dict[str, int],
    config: DetectionConfig,
    position: int,
) -> _Example:
    import torch

    small = _resized(image, config)
    sx, sy = small.width / image.width, small.height / image.height
    rows: list[list[float]] = []
    classes: list[int] = []
    for box in boxes:
        try:
            x0, y0 = float(box["x_min"]), float(box["y_min"])
            x1, y1 = float(box["x_max"]), float(box["y_max"])
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(
                f"image {position}: a box needs numeric x_min, y_min, x_max, y_max"
            ) from e
        x0, x1 = max(0.0, x0), min(float(image.width), x1)
        y0, y1 = max(0.0, y0), min(float(image.height), y1)
        if not (x1 > x0 and y1 > y0):
            raise InvalidInput(
                f"image {position} ({image.width}x{image.height}): the {box['label']!r} box "
                f"({box['x_min']}, {box['y_min']}, {box['x_max']}, {box['y_max']}) is empty or "
                "outside the image; x_max must be over x_min and y_max over y_min"
            )
        rows.append([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
        classes.append(index[box["label"]])
    return _Example(
        image=_to_tensor(small),
        boxes=torch.tensor(rows, dtype=torch.float32).reshape(-1, 4),
        classes=torch.tensor(classes, dtype=torch.int64),
    )


def _augment(example: _Example, config: DetectionConfig, rng: random.Random) -> tuple[Any, Any]:
    """A float image in [0, 1] and its boxes, maybe flipped, colours jittered."""
    image = example.image.float().div_(255.0)
    boxes = example.boxes.clone()
    if config.flip and rng.random() < 0.5:
        image = image.flip(-1)
        width = image.shape[-1]
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    j = config.color_jitter
    if j > 0:
        weights = image.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        image = image * rng.uniform(1 - j, 1 + j)
        mean = (image * weights).sum(0).mean()
        image = (image - mean) * rng.uniform(1 - j, 1 + j) + mean
        gray = (image * weights).sum(0, keepdim=True)
        image = (image - gray) * rng.uniform(1 - j, 1 + j) + gray
        image = image.clamp_(0.0, 1.0)
    return image, boxes


def _schedule(total: int, warmup: int) -> Callable[[int], float]:
    """Learning-rate factor of update ``step``: linear warm-up from 0.1, then cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        done = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


# --- the backend ----------------------------------------------------------------------------


@backends.register("faster-rcnn-lite0")
class DetectionBackend(ObjectDetectionBackend[Sequence[Image.Image]]):
    name: ClassVar[str] = "faster-rcnn-lite0"
    version: ClassVar[str] = "1"
    Config: ClassVar[type[BackendConfig]] = DetectionConfig
    prefers_gpu: ClassVar[bool] = True

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    def featurize(
        self,
        images: Sequence[Image.Image],
        progress: Progress | None = None,
        *,
        config: BackendConfig | None = None,
    ) -> list[Image.Image]:
        """The images themselves: the detector learns from pixels."""
        if progress is not None:
            progress(1.0)
        return list(images)

    def train(
        self,
        features: Sequence[Image.Image],
        labels: Sequence[list[BoxAnnotation]],
        config: BackendConfig,
        *,
        seed: int,
        validation: tuple[Sequence[Image.Image], Sequence[list[BoxAnnotation]]] | None,
        on_epoch: Callable[[EpochRecord], None] | None,
        progress: Progress,
        extras: dict[str, Any] | None = None,
    ) -> DetectionModel:
        assert isinstance(config, DetectionConfig)
        import torch

        if len(features) != len(labels):
            raise InvalidInput(f"{len(features)} images but {len(labels)} box lists")
        names = _label_names(labels)
        index = {name: i + 1 for i, name in enumerate(names)}
        device = resolve_device(self.context.device)
        torch.set_num_threads(self.context.threads)
        torch.manual_seed(seed)
        rng = random.Random(seed)

        examples = [
            _example(image, boxes, index, config, i)
            for i, (image, boxes) in enumerate(zip(features, labels, strict=True))
        ]
        network = _detector(len(names), config, pretrained=True).to(device)
        model = DetectionModel(network, names, config, device=device)
        params = [p for p in network.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        per_epoch = math.ceil(len(examples) / config.batch_size)
        epochs = max(config.epochs, math.ceil(config.min_steps / per_epoch))
        total = epochs * per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _schedule(total, min(config.warmup_steps, total // 3))
        )
        dev = torch.device(device)
        best: tuple[tuple[float, float], int, dict[str, Any]] | None = None
        step = 0
        for epoch in range(1, epochs + 1):
            network.train()
            order = list(range(len(examples)))
            rng.shuffle(order)
            loss_sum = 0.0
            for start in range(0, len(order), config.batch_size):
                batch = [examples[i] for i in order[start : start + config.batch_size]]
                images, targets = [], []
                for ex in batch:
                    image, boxes = _augment(ex, config, rng)
                    images.append(image.to(dev))
                    targets.append({"boxes": boxes.to(dev), "labels": ex.classes.to(dev)})
                losses = network(images, targets)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise InvalidInput(
                        f"training diverged at epoch {epoch} (loss {loss.item()}); "
                        f"lower learning_rate (now {config.learning_rate})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach().item() * len(batch)
                step += 1
                progress(step / total)
            network.eval()
            record = EpochRecord(epoch, loss_sum / len(examples), None, None)
            if validation is not None and len(validation[0]):
                found = model.detect(validation[0], min_score=0.0)
                scores = detection_metrics(
                    validation[1], [[d.to_dict() for d in row] for row in found], names
                )
                key = (scores["map50"] or 0.0, scores["map"] or 0.0)
                log_event("vision.detect.epoch", epoch=epoch, map50=key[0], map=key[1])
                record = dataclasses.replace(record, validation_map50=scores["map50"])
                if best is None or key > best[0]:
                    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                    best = (key, epoch, state)
            if on_epoch is not None:
                on_epoch(record)
            progress(epoch / epochs)
            if (
                best is not None
                and config.patience is not None
                and epoch - best[1] >= config.patience
            ):
                break
        if best is not None:
            network.load_state_dict(best[2])
        progress(1.0)
        log_event(
            "vision.detect.trained",
            images=len(examples),
            boxes=sum(len(ex.classes) for ex in examples),
            epochs=epoch,
            steps=step,
            best_epoch=best[1] if best is not None else None,
        )
        return model

    def load(self, directory: Path) -> DetectionModel:
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        where = directory.name
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, ValueError) as e:
            raise unreadable_model(f"cannot read the detection model in {where}: {e}") from e
        if not isinstance(meta, dict) or meta.get("backend") != self.name:
            found = meta.get("backend") if isinstance(meta, dict) else None
            raise unreadable_model(
                f"the model in {where} was saved by backend {found!r}, not {self.name!r}; "
                "load it with its own backend"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise unreadable_model(
                f"the detection model in {where} has format version "
                f"{meta.get('format_version')!r}; this Parley reads {FORMAT_VERSION}"
            )
        labels = meta.get("labels")
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(x, str) for x in labels)
            or labels != sorted(set(labels))
        ):
            raise unreadable_model(f"the detection model in {where} has no valid label list")
        if meta.get("architecture") != _architecture():
            raise ModelLoadError(
                f"the detection model in {where} was saved with another network "
                f"({meta.get('architecture')!r}); retrain it with this Parley"
            )
        key = meta.get("feature_key")
        if not isinstance(key, str) or not key.startswith("detect:"):
            raise unreadable_model(f"the detection model in {where} has no feature key")
        try:
            config = DetectionConfig(**(meta.get("config") or {}))
        except (TypeError, ValidationError) as e:
            raise unreadable_model(
                f"the detection model in {where} has an invalid config: {e}"
            ) from e
        path = directory / WEIGHTS_FILE
        try:
            data = path.read_bytes()
        except OSError as e:
            raise unreadable_model(
                f"cannot read the detection model's weights in {where}: {e}"
            ) from e
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta.get("weights_sha256"):
            raise ModelLoadError(
                f"the detection model's weights in {where} have sha256 {digest[:16]}..., not "
                f"the {str(meta.get('weights_sha256'))[:16]}... that was saved: the file is "
                "corrupt or was replaced; retrain the model"
            )
        try:
            weights = load_file(str(path))
        except (OSError, SafetensorError) as e:
            raise unreadable_model(
                f"cannot read the detection model's weights in {where}: {e}"
            ) from e
        torch.set_num_threads(self.context.threads)
        network = _detector(len(labels), config, pretrained=False)
        expected = network.state_dict()
        if set(weights) != set(expected):
            raise ModelLoadError(
                f"the detection model's weights in {where} do not fit the network "
                f"({len(set(weights) ^ set(expected))} tensors differ); retrain it"
            )
        wrong = [k for k, v in weights.items() if tuple(v.shape) != tuple(expected[k].shape)]
        if wrong:
            raise ModelLoadError(
                f"the detection model's weights in {where} have the wrong shapes "
                f"({', '.join(wrong[:3])}); retrain it"
            )
        network.load_state_dict(weights)
        device = resolve_device(self.context.device)
        return DetectionModel(network.to(device), labels, config, device=device, feature_key=key)
