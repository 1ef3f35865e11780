"""``lite0-finetune``: EfficientNet-Lite0 trained end to end on the tenant's images — for when a
head on frozen features is not enough (fine-grained classes, unusual photos). Slower: about a
minute per 100 images and epoch on one CPU core; uses CUDA when present.

Batch-norm layers stay frozen (their ImageNet statistics and affine weights): small batches of
a few classes would otherwise wreck them. Every epoch sees randomly augmented views; the epoch
with the best held-out accuracy is kept and training stops after ``patience`` epochs without
improvement. Without a validation split (the final refit) a sixth of the images is held out
for the same purpose. The network is saved whole (safetensors, about 14 MB), so each model is
served by its own network (its own ``feature_key``).
"""

from __future__ import annotations

import json
import math
import random
import threading
import uuid
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
    Progress,
    backends,
    read_artifact,
    resolve_device,
)
from core.errors import ModelLoadError
from core.evaluation import accuracy_and_macro_f1, classification_metrics
from core.onnx import OnnxExport
from vision.backbone import RESIZE, lite0, prepare
from vision.classify.features import as_image, augment

FORMAT_VERSION = 1
INTERNAL_HOLDOUT = 6  # without validation: a sixth of each label's images is held out


class FineTuneConfig(BackendConfig):
    epochs: int = Field(default=12, ge=1, le=200)
    patience: int = Field(default=3, ge=1, le=50, description="epochs without improvement")
    learning_rate: float = Field(default=3e-4, gt=0, le=1)
    batch_size: int = Field(default=16, ge=2, le=256)
    weight_decay: float = Field(default=1e-4, ge=0, le=1)
    image_size: int = Field(default=224, ge=96, le=512)


def _shrink(image: Any) -> Any:
    """A working copy no bigger than needed (shorter side ``RESIZE``)."""
    image = as_image(image)
    w, h = image.size
    scale = RESIZE / min(w, h)
    if scale < 1:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))))
    return image.convert("RGB")


class FineTunedModel:
    backend = "lite0-finetune"

    def __init__(
        self, network: Any, labels: list[str], *, image_size: int, key: str, device: str
    ) -> None:
        self.labels, self.image_size, self.device = labels, image_size, device
        self.network = network.eval()
        self.feature_key = f"lite0-finetune:{key}"
        self.key = key
        self._lock = threading.Lock()
        self.nbytes = int(sum(p.numel() * p.element_size() for p in network.state_dict().values()))

    def featurize(self, images: Sequence[Any]) -> np.ndarray:
        """Logits of the fine-tuned network."""
        import torch

        out = []
        for start in range(0, len(images), 16):
            x = np.stack(
                [
                    prepare(
                        as_image(im), size=self.image_size, resize=round(self.image_size * 8 / 7)
                    )
                    for im in images[start : start + 16]
                ]
            )
            with self._lock, torch.inference_mode():
                out.append(self.network(torch.from_numpy(x).to(self.device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        logits = features - features.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def probabilities(self, images: Sequence[Any]) -> np.ndarray:
        return self.predict_features(self.featurize(images))

    def evaluate(self, images: Sequence[Any], targets: Sequence[str]) -> dict[str, Any]:
        probs = self.probabilities(images)
        predicted = [self.labels[i] for i in probs.argmax(axis=1)]
        return classification_metrics(
            list(targets), predicted, sorted(set(self.labels) | set(targets))
        )

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        save_file(state, str(directory / "network.safetensors"))
        meta = {
            "format_version": FORMAT_VERSION,
            "backend": self.backend,
            "labels": self.labels,
            "image_size": self.image_size,
            "key": self.key,
        }
        (directory / "network.json").write_text(json.dumps(meta, indent=2))


def _network(num_labels: int, *, pretrained: bool) -> Any:
    import torch

    network = lite0(pretrained=pretrained)
    network.reset_classifier(num_labels)
    torch.nn.init.zeros_(network.get_classifier().bias)
    return network


def _freeze_batch_norm(network: Any) -> None:
    import torch

    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)


@backends.register("lite0-finetune")
class FineTuneBackend(ImageClassificationBackend[Sequence[Any]]):
    name: ClassVar[str] = "lite0-finetune"
    version: ClassVar[str] = "1"
    Config: ClassVar[type[BackendConfig]] = FineTuneConfig
    prefers_gpu: ClassVar[bool] = True

    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self.device = resolve_device(context.device)

    def featurize(
        self,
        images: Sequence[Any],
        progress: Progress | None = None,
        *,
        config: BackendConfig | None = None,
    ) -> Sequence[Any]:
        """The images themselves (decoded when training reads them)."""
        if progress is not None:
            progress(1.0)
        return images

    def train(
        self,
        features: Sequence[Any],
        labels: Sequence[str],
        config: BackendConfig,
        *,
        seed: int,
        validation: tuple[Sequence[Any], Sequence[str]] | None,
        on_epoch: Callable[[EpochRecord], None] | None,
        progress: Progress,
        extras: dict[str, Any] | None = None,
    ) -> FineTunedModel:
        import torch

        assert isinstance(config, FineTuneConfig)
        torch.manual_seed(seed)
        rng = random.Random(seed)
        names = sorted(set(labels))
        index = {label: i for i, label in enumerate(names)}
        images = [_shrink(features[i]) for i in range(len(features))]
        targets = [index[label] for label in labels]
        if validation is not None and len(validation[1]):
            val_images = [_shrink(validation[0][i]) for i in range(len(validation[1]))]
            val_labels = list(validation[1])
            train_idx = list(range(len(images)))
        else:  # hold out a sixth of each label (of 3 or more images) to pick the epoch
            by_label: dict[int, list[int]] = {}
            for i, t in enumerate(targets):
                by_label.setdefault(t, []).append(i)
            held = [
                i
                for members in by_label.values()
                if len(members) >= 3
                for i in members[-math.ceil(len(members) / INTERNAL_HOLDOUT) :]
            ]
            val_images = [images[i] for i in held]
            val_labels = [labels[i] for i in held]
            train_idx = [i for i in range(len(images)) if i not in set(held)]
        network = _network(len(names), pretrained=True).to(self.device)
        key = uuid.uuid4().hex[:16]
        model = FineTunedModel(
            network, names, image_size=config.image_size, key=key, device=self.device
        )
        trainable = [p for p in network.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        steps = max(1, (len(train_idx) + config.batch_size - 1) // config.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps
        )
        size, resize = config.image_size, round(config.image_size * 8 / 7)
        best: tuple[float, dict[str, Any]] | None = None
        stale = 0
        for epoch in range(1, config.epochs + 1):
            network.train()
            _freeze_batch_norm(network)
            order = train_idx[:]
            rng.shuffle(order)
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                x = np.stack(
                    [prepare(augment(images[i], rng), size=size, resize=resize) for i in batch]
                )
                y = torch.tensor([targets[i] for i in batch], device=self.device)
                logits = network(torch.from_numpy(x).to(self.device))
                loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(batch)
                progress(((epoch - 1) + (start + len(batch)) / len(order)) / config.epochs)
            network.eval()
            acc = f1 = None
            if val_labels:
                probs = model.predict_features(model.featurize(val_images))
                predicted = [names[i] for i in probs.argmax(axis=1)]
                acc, f1 = accuracy_and_macro_f1(
                    val_labels, predicted, sorted(set(names) | set(val_labels))
                )
            if on_epoch is not None:
                on_epoch(EpochRecord(epoch, total / max(len(order), 1), acc, f1))
            score = acc if acc is not None else -total
            if best is None or score > best[0]:
                state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                best, stale = (score, state), 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
        assert best is not None
        network.load_state_dict(best[1])
        progress(1.0)
        return FineTunedModel(
            network.eval(), names, image_size=config.image_size, key=key, device=self.device
        )

    def load(self, directory: Path) -> FineTunedModel:
        import torch

        meta, labels, tensors = _read(directory)
        network = _network(len(labels), pretrained=False)
        try:
            network.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
        except RuntimeError as e:
            raise ModelLoadError(
                f"the network in {directory.name} does not fit EfficientNet-Lite0 with "
                f"{len(labels)} labels; the file is corrupt, retrain the model"
            ) from e
        size = meta.get("image_size")
        if not isinstance(size, int) or not isinstance(meta.get("key"), str):
            raise ModelLoadError(f"the model in {directory.name} lacks its image size; retrain it")
        return FineTunedModel(
            network.to(self.device), labels, image_size=size, key=meta["key"], device=self.device
        )

    exports_onnx: ClassVar[bool] = True

    def export_onnx(self, directory: Path, target: Path) -> OnnxExport:
        """The tuned network with softmax, as one graph (``vision.classify.export``)."""
        from vision.classify.export import export_finetuned

        cpu = BackendContext(self.context.cache_dir, device="cpu", threads=self.context.threads)
        model = FineTuneBackend(cpu).load(directory)
        return export_finetuned(
            target, network=model.network, labels=model.labels, image_size=model.image_size
        )


def _read(directory: Path) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray]]:
    return read_artifact(
        directory,
        meta_file="network.json",
        tensors_file="network.safetensors",
        backend=FineTuneBackend.name,
        format_version=FORMAT_VERSION,
    )
