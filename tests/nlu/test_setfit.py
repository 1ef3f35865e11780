"""The ``setfit`` intent backend: contrastive fine-tuning moves the encoder (same-intent texts
closer), the head on top predicts paraphrases, the tuned encoder is saved as ONNX and served
with the same probabilities, and broken artifacts are refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from core.backends import BackendContext, EpochRecord, backends
from core.errors import ModelLoadError
from nlu.intent.setfit import (
    ENCODER_FILE,
    SetFitBackend,
    SetFitConfig,
    SetFitModel,
    contrastive_batches,
    supervised_contrastive_loss,
)
from tests.conftest import CACHE_DIR
from tests.nlu.test_embedding_head import HELD_OUT, TRAIN

CONFIG = SetFitConfig(contrastive_epochs=3, batch_size=16, per_label=4, head_epochs=20)


def test_contrastive_batches_hold_every_example_once_in_label_groups() -> None:
    targets = [0] * 9 + [1] * 5 + [2] * 2 + [3]
    batches = contrastive_batches(targets, per_label=4, batch_size=8, rng=random.Random(0))
    seen = [i for batch in batches for i in batch]
    assert sorted(seen) == list(range(len(targets)))
    assert all(len(b) >= 8 for b in batches[:-1])
    # within a batch, examples of one label come in runs (groups of up to per_label)
    first = batches[0]
    runs = [targets[first[0]]]
    for i in first[1:]:
        if targets[i] != runs[-1]:
            runs.append(targets[i])
    assert len(runs) < len(first)


def test_supcon_loss_is_lower_when_labels_cluster() -> None:
    targets = torch.tensor([0, 0, 1, 1])
    clustered = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=-1
    )
    mixed = clustered[[0, 2, 1, 3]]
    good = supervised_contrastive_loss(clustered, targets, 0.1)
    bad = supervised_contrastive_loss(mixed, targets, 0.1)
    assert float(good) < float(bad)
    # anchors without a positive in the batch add nothing (no NaN)
    alone = supervised_contrastive_loss(clustered[:3], torch.tensor([0, 1, 2]), 0.1)
    assert float(alone) == 0.0


@pytest.fixture(scope="module")
def backend() -> SetFitBackend:
    return SetFitBackend(BackendContext(cache_dir=CACHE_DIR, device="cpu", threads=1))


@pytest.fixture(scope="module")
def trained(backend: SetFitBackend) -> tuple[SetFitModel, list[EpochRecord]]:
    records: list[EpochRecord] = []
    progress: list[float] = []
    texts = [t for t, _ in TRAIN]
    model = backend.train(
        backend.featurize(texts),
        [label for _, label in TRAIN],
        CONFIG,
        seed=0,
        validation=([t for t, _ in HELD_OUT], [label for _, label in HELD_OUT]),
        on_epoch=records.append,
        progress=progress.append,
    )
    assert progress == sorted(progress) and progress[-1] == 1.0
    return model, records


@pytest.mark.slow
def test_is_registered_and_featurizes_to_texts(backend: SetFitBackend) -> None:
    assert backends.get("setfit") is SetFitBackend and SetFitBackend.task == "intent"
    assert backend.featurize(["a", "b"]) == ["a", "b"]


@pytest.mark.slow
def test_fine_tuning_learns_and_predicts_paraphrases(
    trained: tuple[SetFitModel, list[EpochRecord]],
) -> None:
    model, records = trained
    assert model.labels == sorted({label for _, label in TRAIN})
    probs = model.predict_features([t for t, _ in HELD_OUT])  # texts are its features
    predicted = [model.labels[i] for i in probs.argmax(axis=1)]
    correct = sum(p == label for p, (_, label) in zip(predicted, HELD_OUT, strict=True))
    assert correct >= 7, list(zip(predicted, HELD_OUT, strict=True))
    # learning curve: 3 contrastive epochs (loss only), then the head's epochs with validation
    assert [r.epoch for r in records] == list(range(1, 3 + 20 + 1))
    assert all(r.validation_accuracy is None for r in records[:3])
    assert records[-1].validation_accuracy is not None and records[-1].validation_accuracy >= 0.8


@pytest.mark.slow
def test_the_encoder_moved_towards_the_intents(
    trained: tuple[SetFitModel, list[EpochRecord]],
) -> None:
    """The contrastive loss over the whole training set is lower with the tuned encoder."""
    from nlu.encoder import get_encoder

    model, _ = trained
    texts = [t for t, _ in TRAIN]
    names = sorted({label for _, label in TRAIN})
    targets = torch.tensor([names.index(label) for _, label in TRAIN])
    base = get_encoder(cache_dir=CACHE_DIR, device="cpu", precision="fp32").encode(texts)
    tuned = model.featurize(texts)
    before = supervised_contrastive_loss(torch.from_numpy(base), targets, 0.05)
    after = supervised_contrastive_loss(torch.from_numpy(tuned), targets, 0.05)
    assert float(after) < float(before) - 0.05, (float(before), float(after))


@pytest.mark.slow
def test_saved_as_onnx_and_served_with_the_same_probabilities(
    backend: SetFitBackend, trained: tuple[SetFitModel, list[EpochRecord]], tmp_path: Path
) -> None:
    model, _ = trained
    model.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == sorted([ENCODER_FILE, "head.json", "head.safetensors"])
    meta = json.loads((tmp_path / "m" / "head.json").read_text())
    assert meta["backend"] == "setfit" and meta["encoder_tuned"] is True
    loaded = backend.load(tmp_path / "m")
    texts = [t for t, _ in HELD_OUT] + ["a much longer sentence " * 5]
    np.testing.assert_allclose(
        loaded.predict_features(loaded.featurize(texts)),
        model.predict_features(model.featurize(texts)),
        atol=1e-4,
    )
    assert loaded.nbytes > 50_000_000  # the tuned encoder counts against the cache budget
    assert loaded.feature_key != model.feature_key  # never batched with another model's encoder


@pytest.mark.slow
def test_a_broken_artifact_is_refused(
    backend: SetFitBackend, trained: tuple[SetFitModel, list[EpochRecord]], tmp_path: Path
) -> None:
    model, _ = trained
    model.save(tmp_path / "m")
    (tmp_path / "m" / ENCODER_FILE).write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError, match="tuned encoder"):
        backend.load(tmp_path / "m")
    (tmp_path / "m" / ENCODER_FILE).unlink()
    with pytest.raises(ModelLoadError, match="no tuned encoder"):
        backend.load(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "head.json").read_text())
    meta["backend"] = "embedding-head"
    (tmp_path / "m" / "head.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="retrain"):
        backend.load(tmp_path / "m")


@pytest.mark.slow
def test_the_cross_entropy_objective_fine_tunes_end_to_end(backend: SetFitBackend) -> None:
    config = SetFitConfig(
        objective="cross-entropy", contrastive_epochs=3, batch_size=16, head_epochs=20
    )
    records: list[EpochRecord] = []
    model = backend.train(
        [t for t, _ in TRAIN],
        [label for _, label in TRAIN],
        config,
        seed=0,
        validation=None,
        on_epoch=records.append,
        progress=lambda fraction: None,
    )
    assert records[0].train_loss > records[2].train_loss  # the fine-tuning loss falls
    probs = model.predict_features([t for t, _ in HELD_OUT])
    predicted = [model.labels[i] for i in probs.argmax(axis=1)]
    assert sum(p == label for p, (_, label) in zip(predicted, HELD_OUT, strict=True)) >= 7


def test_config_is_bounded() -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError):
        SetFitConfig(per_label=1)
    with pytest.raises(pydantic.ValidationError):
        SetFitConfig(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        SetFitConfig(objective="triplet")  # type: ignore[arg-type]
