"""``encoder-ner``: a per-dataset entity model that fine-tunes the shared MiniLM encoder
(all-MiniLM-L6-v2) for token classification, plus the dataset's Rasa extras (regexes,
lookups and synonyms, applied as :mod:`nlu.entities.extras` describes).

The tagger: BIO tags on WordPiece words (the tokenizer's pre-tokenised words: whitespace and
punctuation split), predicted on each word's first sub-token by a linear head over the
transformer's last hidden state. The whole transformer is fine-tuned (AdamW, linear warm-up
then decay) except its word-embedding table, which stays the shipped one; batches hold
sentences of similar length. Decoding turns tags back into character spans: ``B-x`` opens an
entity, ``I-x`` continues an open ``x`` and otherwise opens one (a stray ``I-`` after ``O`` is
read as ``B-``); an entity's ``confidence`` is the mean probability of its words' tags.

Saved as ``entities.safetensors`` (the weights that training changed: everything but the
word-embedding table and the unused pooler, 43 MB in fp32) and ``entities.json`` (format
version, backend, tags, extras, the encoder's sha256). Loading puts them on a copy of the
shipped encoder whose word-embedding table every loaded model shares (47 MB once per process
and device), so a model holds 44 MB and a cold load is a file read and a copy: 0.07-0.13 s on
a busy 2-core machine, after the process's first load has read the shipped encoder (seconds).
Served in PyTorch: about 7 ms a text in batches of 64, 30 ms for a single text there. (An ONNX
export of encoder + head was measured too: 11 ms for a single text and 5 ms a text in
batches, but 1.8 s to export at save, 0.45 s to open a session, 90 MB a model on disk.)

SNIPS (``bench/entities.py``, 3 epochs, learning rate 1e-4, no refit): test slot F1 0.943
(P 0.937, R 0.950) against ``spacy-ner``'s 0.902; about 270 s an epoch on 10k sentences.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from core.backends import (
    BackendConfig,
    Entity,
    EntityAnnotation,
    EpochRecord,
    Progress,
    backends,
    unreadable_model,
)
from core.errors import ModelLoadError
from core.evaluation import entity_metrics
from core.logging import log_event
from core.shared_models import SharedKey, shared_models, torch_nbytes
from nlu.encoder import (
    ENCODER_NAME,
    ENCODER_SHA256,
    load_tokenizer,
    load_torch_encoder,
    resolve_device,
)
from nlu.entities.extras import EntityExtras
from nlu.entities.trainable import TextEntityBackend, TextEntityModel

__all__ = ["EncoderNerBackend", "EncoderNerConfig", "EncoderNerModel"]

FORMAT_VERSION = 1
WEIGHTS_FILE = "entities.safetensors"
META_FILE = "entities.json"
EXTRACTOR = "encoder-ner"
IGNORE = -100  # label of sub-tokens that are not a word's first one (no loss, no prediction)
_SHARED = "encoder.embeddings.word_embeddings.weight"
_NOT_SAVED = (_SHARED, "encoder.pooler.")
INFER_BATCH = 64


class EncoderNerConfig(BackendConfig):
    epochs: int = Field(default=3, ge=1, le=100)
    learning_rate: float = Field(default=1e-4, gt=0, le=1e-2)
    head_learning_rate: float = Field(default=1e-3, gt=0, le=1e-1)
    batch_size: int = Field(default=16, ge=1, le=512)
    min_steps: int = Field(
        default=100,
        ge=0,
        le=100_000,
        description="train at least this many updates: more epochs on a small dataset",
    )
    warmup: float = Field(default=0.1, ge=0, lt=1, description="fraction of updates warming up")
    weight_decay: float = Field(default=0.01, ge=0, le=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    max_tokens: int = Field(default=128, ge=8, le=512)


# --- torch pieces (torch is imported only when a model is trained or loaded) ---------------


def _tagger(encoder: Any, n_tags: int, dropout: float) -> Any:
    """``encoder`` (a BERT model) with a dropout + linear tag head over its last hidden state."""
    import torch

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.dropout = torch.nn.Dropout(dropout)
            self.head = torch.nn.Linear(encoder.config.hidden_size, n_tags)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            return self.head(self.dropout(hidden))

    return Tagger()


def _load_base(device: str) -> Any:
    base = load_torch_encoder(device)
    for p in base.parameters():
        p.requires_grad_(False)
    return base


def _base_encoder(device: str) -> Any:
    """The shipped encoder on ``device``, loaded once per process (in ``shared_models``); its
    word-embedding table is shared (read-only) by every tagger made from it."""
    key = SharedKey("encoder-ner-base", ENCODER_NAME, device=device)
    return shared_models.get(key, lambda: _load_base(device), size=torch_nbytes)


def _fresh_encoder(device: str) -> Any:
    """A copy of the shipped encoder that shares the base's word-embedding table."""
    base = _base_encoder(device)
    table = base.embeddings.word_embeddings.weight
    return copy.deepcopy(base, memo={id(table): table})


@functools.lru_cache(maxsize=8)
def _tokenizer(max_tokens: int) -> Any:
    """The encoder's tokenizer without padding, one per length limit (read-only, shared).

    Not in ``shared_models``, which never evicts: ``max_tokens`` is a tenant's setting (505
    possible values), and a model keeps its own tokenizer, so at most 8 wait here unused.
    """
    return load_tokenizer(max_tokens, padding=False)


# --- tags and alignment ---------------------------------------------------------------------


def _tag_names(types: Sequence[str]) -> list[str]:
    return ["O", *(f"{p}-{t}" for t in types for p in ("B", "I"))]


def _words(encoding: Any) -> list[tuple[int, int, int]]:
    """(first token index, start char, end char) of each word an encoding kept, in order."""
    words: dict[int, list[int]] = {}
    for i, (word, (start, end)) in enumerate(zip(encoding.word_ids, encoding.offsets, strict=True)):
        if word is None:
            continue
        entry = words.get(word)
        if entry is None:
            words[word] = [i, start, end]
        else:
            entry[2] = end
    return [(i, s, e) for i, s, e in words.values()]


def _word_tags(
    words: Sequence[tuple[int, int, int]],
    spans: Sequence[EntityAnnotation],
    tag_ids: dict[str, int],
) -> list[int]:
    """The tag id of each word: ``B-x`` on the first word a span of type x overlaps, ``I-x``
    on the others it overlaps, ``O`` elsewhere (spans that overlap an earlier one are skipped)."""
    tags = [0] * len(words)
    taken: list[tuple[int, int]] = []
    for span in sorted(spans, key=lambda s: (s["start"], s["end"])):
        start, end = int(span["start"]), int(span["end"])
        if any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        inside = [k for k, (_, ws, we) in enumerate(words) if ws < end and start < we]
        for n, k in enumerate(inside):
            tags[k] = tag_ids[f"{'B' if n == 0 else 'I'}-{span['entity']}"]
    return tags


def _decode(
    words: Sequence[tuple[int, int, int]],
    tags: Sequence[str],
    probs: Sequence[float],
) -> list[tuple[str, int, int, float]]:
    """(type, start, end, confidence) of each entity in a sentence's word tags."""
    out: list[list[Any]] = []  # [type, start, end, [probabilities]]
    open_: list[Any] | None = None
    for (_, start, end), tag, p in zip(words, tags, probs, strict=True):
        if tag == "O":
            open_ = None
            continue
        prefix, kind = tag[0], tag[2:]
        if prefix == "I" and open_ is not None and open_[0] == kind:
            open_[2] = end
            open_[3].append(p)
            continue
        open_ = [kind, start, end, [p]]
        out.append(open_)
    return [(k, s, e, sum(ps) / len(ps)) for k, s, e, ps in out]


def _length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices in batches of similar length (little padding), the batches in random order;
    sentences of equal length are shuffled, so batches differ between epochs."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])  # stable: ties keep the shuffled order
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _pad(rows: Sequence[Sequence[int]], value: int) -> list[list[int]]:
    width = max(len(r) for r in rows)
    return [list(r) + [value] * (width - len(r)) for r in rows]


# --- the model ------------------------------------------------------------------------------


class EncoderNerModel(TextEntityModel):
    """Extracts entities: the fine-tuned tagger, then regexes and lookups where it found
    nothing. Thread-safe (one forward pass at a time)."""

    def __init__(
        self,
        tagger: Any,
        tags: list[str],
        extras: dict[str, Any],
        *,
        max_tokens: int,
        device: str,
    ) -> None:
        self.tagger = tagger.eval()
        self.tags = tags
        self.labels = sorted({t[2:] for t in tags if t != "O"})
        self.extras = EntityExtras(extras)
        self.max_tokens, self.device = max_tokens, device
        self._tokenizer = _tokenizer(max_tokens)
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Memory the model's own tensors hold (the shared word-embedding table not counted)."""
        shared = self.tagger.encoder.embeddings.word_embeddings.weight
        tensors = [*self.tagger.parameters(), *self.tagger.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors if t is not shared)

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        texts = list(texts)
        encodings = self._tokenizer.encode_batch(texts) if texts else []
        words = [_words(e) for e in encodings]
        with self._lock:
            found = self._tag(encodings, words)
        return [
            self.extras.complete(
                text,
                [
                    self.extras.entity(kind, s, e, text, extractor=EXTRACTOR, confidence=conf)
                    for kind, s, e, conf in spans
                ],
            )
            for text, spans in zip(texts, found, strict=True)
        ]

    def _tag(
        self, encodings: Sequence[Any], words: Sequence[Sequence[tuple[int, int, int]]]
    ) -> list[list[tuple[str, int, int, float]]]:
        import torch

        out: list[list[tuple[str, int, int, float]]] = [[] for _ in encodings]
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        dev = torch.device(self.device)
        with torch.inference_mode():
            for b in range(0, len(order), INFER_BATCH):
                idx = order[b : b + INFER_BATCH]
                ids = torch.tensor(_pad([encodings[i].ids for i in idx], 0), device=dev)
                mask = torch.tensor(_pad([encodings[i].attention_mask for i in idx], 0), device=dev)
                logits = self.tagger(ids, mask, torch.zeros_like(ids))
                probs, best = logits.float().softmax(-1).max(-1)
                probs, best = probs.cpu().tolist(), best.cpu().tolist()
                for row, i in enumerate(idx):
                    first = [w[0] for w in words[i]]
                    out[i] = _decode(
                        words[i],
                        [self.tags[best[row][t]] for t in first],
                        [probs[row][t] for t in first],
                    )
        return out

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        weights = {
            k: v.detach().to("cpu").contiguous()
            for k, v in self.tagger.state_dict().items()
            if not k.startswith(_NOT_SAVED)
        }
        save_file(weights, str(directory / WEIGHTS_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "backend": EncoderNerBackend.name,
            "encoder": ENCODER_NAME,
            "encoder_sha256": ENCODER_SHA256,
            "labels": self.labels,
            "tags": self.tags,
            "max_tokens": self.max_tokens,
            "extras": self.extras.raw,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))


# --- the backend ----------------------------------------------------------------------------


@backends.register("encoder-ner")
class EncoderNerBackend(TextEntityBackend):
    name: ClassVar[str] = "encoder-ner"
    version: ClassVar[str] = "1"
    Config: ClassVar[type[BackendConfig]] = EncoderNerConfig

    def train(
        self,
        features: Sequence[str],
        labels: Sequence[list[EntityAnnotation]],
        config: BackendConfig,
        *,
        seed: int,
        validation: tuple[list[str], Sequence[list[EntityAnnotation]]] | None,
        on_epoch: Callable[[EpochRecord], None] | None,
        progress: Progress,
        extras: dict[str, Any] | None = None,
    ) -> EncoderNerModel:
        assert isinstance(config, EncoderNerConfig)
        import torch

        types = self.entity_types(labels)
        device = resolve_device(self.context.device)
        torch.set_num_threads(self.context.threads)
        torch.manual_seed(seed)
        rng = random.Random(seed)

        tags = _tag_names(types)
        tag_ids = {t: i for i, t in enumerate(tags)}
        encodings = _tokenizer(config.max_tokens).encode_batch(list(features))
        rows: list[tuple[list[int], list[int]]] = []
        for enc, spans in zip(encodings, labels, strict=True):
            words = _words(enc)
            targets = [IGNORE] * len(enc.ids)
            for (first, _, _), tag in zip(words, _word_tags(words, spans, tag_ids), strict=True):
                targets[first] = tag
            rows.append((list(enc.ids), targets))

        tagger = _tagger(_fresh_encoder(device), len(tags), config.dropout).to(device)
        encoder_params = [p for n, p in tagger.named_parameters() if n.startswith("encoder.")]
        for name, p in tagger.named_parameters():
            p.requires_grad_(not name.startswith(_NOT_SAVED))
        decay = [p for p in encoder_params if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in encoder_params if p.requires_grad and p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
                {
                    "params": list(tagger.head.parameters()),
                    "lr": config.head_learning_rate,
                    "weight_decay": 0.0,
                },
            ],
            lr=config.learning_rate,
        )
        per_epoch = math.ceil(len(rows) / config.batch_size)
        epochs = max(config.epochs, math.ceil(config.min_steps / per_epoch))
        total = epochs * per_epoch
        warmup = max(1, int(total * config.warmup))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: min((step + 1) / warmup, max(0.0, (total - step) / (total - warmup + 1))),
        )
        model = EncoderNerModel(
            tagger, tags, extras or {}, max_tokens=config.max_tokens, device=device
        )
        lengths = [len(ids) for ids, _ in rows]
        dev = torch.device(device)
        step = 0
        for epoch in range(1, epochs + 1):
            tagger.train()
            loss_sum = 0.0
            for batch in _length_batches(lengths, config.batch_size, rng):
                ids = torch.tensor(_pad([rows[i][0] for i in batch], 0), device=dev)
                target = torch.tensor(_pad([rows[i][1] for i in batch], IGNORE), device=dev)
                mask = (
                    torch.tensor(_pad([[1] * lengths[i] for i in batch], 0), device=dev)
                    if len({lengths[i] for i in batch}) > 1
                    else torch.ones_like(ids)
                )
                logits = tagger(ids, mask, torch.zeros_like(ids))
                loss = torch.nn.functional.cross_entropy(
                    logits.view(-1, len(tags)), target.view(-1), ignore_index=IGNORE
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(tagger.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach().item() * len(batch)
                step += 1
                if step % 20 == 0:
                    progress(step / total)
            tagger.eval()
            if on_epoch is not None:
                f1 = None
                if validation is not None and len(validation[0]):
                    found = model.extract(validation[0])
                    f1 = entity_metrics(
                        validation[1], [[e.to_dict() for e in row] for row in found]
                    )["micro"]["f1"]
                on_epoch(EpochRecord(epoch, loss_sum / max(1, len(rows)), None, None, f1))
            progress(epoch / epochs)
        log_event("entities.encoder_ner.trained", sentences=len(rows), epochs=epochs, steps=step)
        return model

    def load(self, directory: Path) -> EncoderNerModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, ValueError) as e:
            raise unreadable_model(f"cannot read the entity model in {directory.name}: {e}") from e
        if not isinstance(meta, dict) or meta.get("backend") != self.name:
            found = meta.get("backend") if isinstance(meta, dict) else None
            raise unreadable_model(
                f"the entity model in {directory.name} was saved by backend {found!r}, "
                f"not {self.name!r}; load it with its own backend"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise unreadable_model(
                f"the entity model in {directory.name} has format version "
                f"{meta.get('format_version')!r}; this Parley reads {FORMAT_VERSION}"
            )
        if meta.get("encoder_sha256") != ENCODER_SHA256:
            raise ModelLoadError(
                f"the entity model in {directory.name} was fine-tuned from another encoder "
                f"(sha256 {meta.get('encoder_sha256')!r}); retrain it"
            )
        tags = meta.get("tags")
        if not isinstance(tags, list) or not tags or tags[0] != "O":
            raise unreadable_model(f"the entity model in {directory.name} has no valid tag list")
        try:
            weights = load_file(str(directory / WEIGHTS_FILE))
        except (OSError, SafetensorError) as e:
            raise unreadable_model(
                f"cannot read the entity model's weights in {directory.name}: {e}"
            ) from e
        device = resolve_device(self.context.device)
        tagger = _tagger(_fresh_encoder(device), len(tags), 0.0)
        expected = {k for k in tagger.state_dict() if not k.startswith(_NOT_SAVED)}
        if set(weights) != expected:
            raise ModelLoadError(
                f"the entity model's weights in {directory.name} do not fit the encoder "
                f"({len(set(weights) ^ expected)} tensors differ); retrain it"
            )
        try:
            tagger.load_state_dict(weights, strict=False)
        except RuntimeError as e:
            raise unreadable_model(
                f"the entity model's weights in {directory.name} have the wrong shapes: {e}"
            ) from e
        return EncoderNerModel(
            tagger.to(device),
            list(tags),
            meta.get("extras") or {},
            max_tokens=int(meta.get("max_tokens") or 128),
            device=device,
        )
