"""``setfit``: few-shot intent classification that fine-tunes the encoder contrastively
(SetFit-style), then trains the ``embedding-head`` softmax head on the tuned embeddings.

Stage 1, contrastive: each batch holds groups of ``per_label`` examples of one intent; a
supervised contrastive loss (temperature ``temperature``) pulls the embeddings of one intent
together and pushes the others apart. Every pair in a batch counts, which is SetFit's pair
generation without materialising pairs. Word embeddings stay frozen (fewer weights to move,
less over-fitting on a few examples); texts of a batch run through the encoder in length-sorted
chunks so short texts are not padded to the longest. Stage 2: the softmax head, trained on the
tuned encoder's embeddings; the learning curve numbers its epochs after the contrastive ones.

``objective: "cross-entropy"`` fine-tunes through a temporary linear layer over the pooled
embedding instead (plain end-to-end fine-tuning, random batches), for datasets with many
examples per intent; the head is then trained the same way.

Slower to train than ``embedding-head`` (minutes on CPU instead of seconds) and bigger: the
tuned encoder is part of the model (an ONNX graph of about 90 MB, served fp32 by its own ONNX
Runtime session, so it does not share the common encoder pass at serving time). Better with
5-10 examples per intent; uses CUDA for training when present. ``encoder`` picks the encoder
that is tuned (``all-MiniLM-L6-v2`` or ``all-mpnet-base-v2``: about 5x slower, a 440 MB graph).
"""

from __future__ import annotations

import math
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from core.backends import (
    BackendConfig,
    EpochRecord,
    IntentBackend,
    Progress,
    TextsBackend,
    backends,
    unreadable_model,
)
from core.errors import InvalidInput, ModelLoadError
from core.onnx import OnnxExport
from nlu.encoder import (
    SentenceEncoder,
    accepts_token_types,
    export_onnx,
    load_tokenizer,
    load_torch_encoder,
    mean_pool,
    pooled_encoder,
    resolve_device,
)
from nlu.intent.embedding_head import (
    EmbeddingHeadConfig,
    EmbeddingHeadModel,
    EncoderChoice,
    read_head,
    train_head,
)

ENCODER_FILE = "encoder.onnx"
CHUNK = 16  # texts per forward pass inside a batch (length-sorted)


class SetFitConfig(EncoderChoice):
    objective: Literal["contrastive", "cross-entropy"] = Field(
        default="contrastive",
        description="contrastive (SetFit; few examples per intent) or cross-entropy through a "
        "temporary linear layer (end-to-end fine-tuning; many examples)",
    )
    contrastive_epochs: int = Field(
        default=10, ge=0, le=200, description="fine-tuning epochs (whichever the objective)"
    )
    max_steps: int = Field(
        default=400, ge=1, le=100_000, description="cap on fine-tuning steps (large datasets)"
    )
    learning_rate: float = Field(default=3e-5, gt=0, le=1e-2)
    batch_size: int = Field(default=64, ge=4, le=1024)
    per_label: int = Field(default=4, ge=2, le=256)
    temperature: float = Field(default=0.05, gt=0, le=10)
    max_tokens: int = Field(default=64, ge=8, le=256)
    head_epochs: int = Field(default=30, ge=1, le=500)
    head_learning_rate: float = Field(default=0.02, gt=0, le=10)


class SetFitModel(EmbeddingHeadModel):
    """The softmax head over this model's own tuned encoder."""

    def __init__(
        self,
        labels: list[str],
        weight: np.ndarray,
        bias: np.ndarray,
        featurizer: Callable[[Sequence[str]], np.ndarray],
        *,
        max_tokens: int,
        encoder_name: str,
        encoder: Any = None,
        encoder_bytes: int = 0,
    ) -> None:
        super().__init__(
            labels,
            weight,
            bias,
            featurizer,
            "fp32",
            encoder=encoder_name,
            feature_key=f"setfit:{uuid.uuid4().hex}",
        )
        self.max_tokens = max_tokens
        self._torch_encoder = encoder  # set while training; saved as ONNX
        self._encoder_bytes = encoder_bytes

    @property
    def nbytes(self) -> int:
        return super().nbytes + self._encoder_bytes

    backend = "setfit"

    def predict_features(self, features: Any) -> np.ndarray:
        """Probabilities from embeddings, or from texts (what this backend's ``featurize``
        gives the job runner): those go through the tuned encoder first."""
        if not isinstance(features, np.ndarray):
            features = self.featurize(features)
        return super().predict_features(features)

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "encoder_file": ENCODER_FILE,
            "max_tokens": self.max_tokens,
            "encoder_tuned": True,
        }

    def save(self, directory: Path) -> None:
        if self._torch_encoder is None:
            raise RuntimeError("a loaded setfit model is saved by copying its folder")
        super().save(directory)
        export_onnx(
            pooled_encoder(self._torch_encoder),
            directory / ENCODER_FILE,
            output="embedding",
            output_axes={0: "batch"},
        )


def supervised_contrastive_loss(embeddings: Any, targets: Any, temperature: float) -> Any:
    """Khosla et al.'s SupCon loss over L2-normalised embeddings: for each anchor with at least
    one positive (same label) in the batch, the mean log-probability of its positives."""
    import torch

    n = len(targets)
    sim = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    sim = sim.masked_fill(self_mask, -1e9)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (targets[:, None] == targets[None, :]) & ~self_mask
    counts = positives.sum(1)
    has = counts > 0
    if not bool(has.any()):
        return embeddings.sum() * 0.0
    per_anchor = -(log_prob * positives).sum(1)[has] / counts[has]
    return per_anchor.mean()


def contrastive_batches(
    targets: Sequence[int], per_label: int, batch_size: int, rng: random.Random
) -> list[list[int]]:
    """One epoch's batches: every example once, in groups of ``per_label`` of one label."""
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(targets):
        by_label[t].append(i)
    groups = []
    for members in by_label.values():
        members = members[:]
        rng.shuffle(members)
        groups += [members[s : s + per_label] for s in range(0, len(members), per_label)]
    rng.shuffle(groups)
    batches, current = [], []
    for group in groups:
        current += group
        if len(current) >= batch_size:
            batches.append(current)
            current = []
    if current and batches and len(current) < batch_size // 2:
        batches[-1] += current  # a small remainder joins the last batch
    elif current:
        batches.append(current)
    return batches


def _embed(model: Any, ids: Sequence[Sequence[int]], device: str) -> Any:
    """Pooled embeddings of token-id lists, length-sorted chunks, in the input order."""
    import torch

    types = accepts_token_types(model)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    parts, positions = [], []
    for start in range(0, len(order), CHUNK):
        idx = order[start : start + CHUNK]
        width = max(len(ids[i]) for i in idx)
        tokens = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for row, i in enumerate(idx):
            tokens[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        tokens, mask = tokens.to(device), mask.to(device)
        extra = {"token_type_ids": torch.zeros_like(tokens)} if types else {}
        hidden = model(input_ids=tokens, attention_mask=mask, **extra).last_hidden_state
        parts.append(mean_pool(hidden, mask))
        positions += idx
    stacked = torch.cat(parts)
    inverse = torch.empty(len(positions), dtype=torch.long)
    inverse[torch.tensor(positions)] = torch.arange(len(positions))
    return stacked[inverse.to(stacked.device)]


@backends.register("setfit")
class SetFitBackend(TextsBackend, IntentBackend[list[str]]):
    """Features are the texts themselves: fine-tuning needs them, not fixed embeddings."""

    name: ClassVar[str] = "setfit"
    version: ClassVar[str] = "1"
    Config: ClassVar[type[BackendConfig]] = SetFitConfig
    prefers_gpu: ClassVar[bool] = True

    def train(
        self,
        features: Sequence[str],
        labels: Sequence[str],
        config: BackendConfig,
        *,
        seed: int,
        validation: tuple[Sequence[str], Sequence[str]] | None,
        on_epoch: Callable[[EpochRecord], None] | None,
        progress: Progress,
        extras: dict[str, Any] | None = None,
    ) -> SetFitModel:
        import torch

        assert isinstance(config, SetFitConfig)
        texts = list(features)
        names = sorted(set(labels))
        if len(names) < 2:
            raise InvalidInput("setfit needs at least 2 labels")
        index = {label: i for i, label in enumerate(names)}
        targets = [index[label] for label in labels]
        device = resolve_device(self.context.device)
        if device == "cpu":
            torch.set_num_threads(max(1, self.context.threads))
        torch.manual_seed(seed)
        rng = random.Random(seed)
        cache_dir = self.context.cache_dir
        model = load_torch_encoder(device, encoder=config.encoder, cache_dir=cache_dir)
        model.embeddings.word_embeddings.weight.requires_grad_(False)
        tokenizer = load_tokenizer(
            config.max_tokens, padding=False, encoder=config.encoder, cache_dir=cache_dir
        )
        ids = [e.ids for e in tokenizer.encode_batch(texts)]
        y = torch.tensor(targets, device=device)

        classifier = None
        if config.objective == "cross-entropy":
            classifier = torch.nn.Linear(model.config.hidden_size, len(names)).to(device)

        def epoch_batches() -> list[list[int]]:
            if classifier is None:
                return contrastive_batches(targets, config.per_label, config.batch_size, rng)
            order = list(range(len(targets)))
            rng.shuffle(order)
            return [
                order[s : s + config.batch_size] for s in range(0, len(order), config.batch_size)
            ]

        def loss_of(emb: Any, batch: list[int]) -> Any:
            if classifier is None:
                return supervised_contrastive_loss(emb, y[batch], config.temperature)
            logits = classifier(emb) / config.temperature
            return torch.nn.functional.cross_entropy(logits, y[batch])

        per_epoch = len(epoch_batches())
        total = min(config.max_steps, config.contrastive_epochs * per_epoch)
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": params, "lr": config.learning_rate}]
        if classifier is not None:  # a fresh layer learns faster than the pre-trained encoder
            groups.append({"params": list(classifier.parameters()), "lr": 1e-3})
            params = params + list(classifier.parameters())
        optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
        warmup = max(1, total // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: min(
                (step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))
            ),
        )
        step, epoch = 0, 0
        while step < total:
            epoch += 1
            model.train()
            losses = []
            for batch in epoch_batches():
                if step >= total:
                    break
                emb = _embed(model, [ids[i] for i in batch], device)
                loss = loss_of(emb, batch)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                losses.append(float(loss.item()))
                step += 1
                progress(0.85 * step / total)
            if on_epoch is not None:
                loss_value = sum(losses) / len(losses) if losses else math.nan
                on_epoch(EpochRecord(epoch, loss_value, None, None))
        model.eval()

        def featurize(batch_texts: Sequence[str]) -> np.ndarray:
            batch_ids = [e.ids for e in tokenizer.encode_batch(list(batch_texts))]
            out = np.zeros((len(batch_ids), model.config.hidden_size), dtype=np.float32)
            with torch.inference_mode():
                for start in range(0, len(batch_ids), 256):
                    chunk = batch_ids[start : start + 256]
                    out[start : start + len(chunk)] = _embed(model, chunk, device).float().cpu()
            return out

        head_config = EmbeddingHeadConfig(
            epochs=config.head_epochs,
            learning_rate=config.head_learning_rate,
            encoder_precision="fp32",
            encoder=config.encoder,
        )
        val = None
        if validation is not None and len(validation[1]):
            val = (featurize(validation[0]), validation[1])
        encoder_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        return train_head(
            featurize(texts),
            labels,
            head_config,
            seed=seed,
            validation=val,
            on_epoch=on_epoch,
            progress=lambda f: progress(0.85 + 0.15 * f),
            build=lambda n, w, b: SetFitModel(
                n,
                w,
                b,
                featurize,
                max_tokens=config.max_tokens,
                encoder_name=config.encoder,
                encoder=model,
                encoder_bytes=encoder_bytes,
            ),
            first_epoch=epoch + 1,
        )

    exports_onnx: ClassVar[bool] = True

    def export_onnx(self, directory: Path, target: Path) -> OnnxExport:
        """The model's own tuned encoder graph (fp32, as served) and the head, as one graph
        (``nlu.intent.export``)."""
        from nlu.intent.export import export_intent

        labels, weight, bias, meta = read_head(directory, self.name)
        path, max_tokens = _tuned_encoder(directory, meta)
        return export_intent(
            target,
            labels=labels,
            weight=weight,
            bias=bias,
            encoder_graph=path,
            encoder=meta["encoder"],
            precision="fp32",
            max_tokens=max_tokens,
            cache_dir=self.context.cache_dir,
        )

    def load(self, directory: Path) -> SetFitModel:
        labels, weight, bias, meta = read_head(directory, self.name)
        path, max_tokens = _tuned_encoder(directory, meta)
        try:
            encoder = SentenceEncoder(
                cache_dir=self.context.cache_dir,
                threads=self.context.threads,
                onnx_file=path,
                max_tokens=max_tokens,
                encoder=meta["encoder"],
            )
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own error types
            raise unreadable_model(
                f"cannot load the tuned encoder of the model in {directory.name}: {e}"
            ) from e
        return SetFitModel(
            labels,
            weight,
            bias,
            encoder.encode,
            max_tokens=max_tokens,
            encoder_name=meta["encoder"],
            encoder_bytes=path.stat().st_size,
        )


def _tuned_encoder(directory: Path, meta: dict[str, Any]) -> tuple[Path, int]:
    """A saved setfit model's tuned encoder graph and its token limit (``ModelLoadError``
    when the artifact lacks them)."""
    path = directory / str(meta.get("encoder_file") or ENCODER_FILE)
    max_tokens = meta.get("max_tokens")
    if not path.is_file() or not isinstance(max_tokens, int):
        raise ModelLoadError(
            f"the setfit model in {directory.name} has no tuned encoder ({ENCODER_FILE}); "
            "the artifact is incomplete, retrain the model"
        )
    return path, max_tokens
