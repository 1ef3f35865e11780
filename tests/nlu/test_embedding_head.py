"""The ``embedding-head`` intent backend: it learns, it generalises to paraphrases, and its
files (safetensors + JSON, never pickle) round-trip and are refused when they do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
from safetensors.numpy import load_file, save_file

from core.backends import BackendContext, EpochRecord, backends
from core.errors import ModelLoadError
from nlu.intent.embedding_head import (
    EmbeddingHeadBackend,
    EmbeddingHeadConfig,
    EmbeddingHeadModel,
)
from tests.conftest import CACHE_DIR
from tests.support.data import INTENTS

pytestmark = pytest.mark.slow

TRAIN = [(text, label) for label, texts in INTENTS.items() for text in texts]
HELD_OUT = [
    ("where's my package", "track_order"),
    ("has the parcel been shipped", "track_order"),
    ("i'd like a refund please", "refund"),
    ("return the money for my order", "refund"),
    ("hey there", "greet"),
    ("good evening", "greet"),
    ("bye bye", "goodbye"),
    ("see you soon", "goodbye"),
]
CONFIG = EmbeddingHeadConfig(epochs=20)


@pytest.fixture(scope="module")
def backend() -> EmbeddingHeadBackend:
    return EmbeddingHeadBackend(BackendContext(cache_dir=CACHE_DIR, device="cpu"))


@pytest.fixture(scope="module")
def train_features(backend: EmbeddingHeadBackend) -> np.ndarray:
    return backend.featurize([text for text, _ in TRAIN])


@pytest.fixture(scope="module")
def held_out_features(backend: EmbeddingHeadBackend) -> np.ndarray:
    return backend.featurize([text for text, _ in HELD_OUT])


def train(
    backend: EmbeddingHeadBackend,
    features: np.ndarray,
    *,
    seed: int = 0,
    validation: tuple[np.ndarray, list[str]] | None = None,
    records: list[EpochRecord] | None = None,
    progress: list[float] | None = None,
) -> EmbeddingHeadModel:
    return backend.train(
        features,
        [label for _, label in TRAIN],
        CONFIG,
        seed=seed,
        validation=validation,
        on_epoch=records.append if records is not None else None,
        progress=progress.append if progress is not None else lambda fraction: None,
    )


@pytest.fixture(scope="module")
def model(backend: EmbeddingHeadBackend, train_features: np.ndarray) -> EmbeddingHeadModel:
    return train(backend, train_features)


@pytest.fixture
def saved(model: EmbeddingHeadModel, tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    model.save(directory)
    return directory


def test_is_the_registered_intent_backend() -> None:
    assert backends.get("embedding-head") is EmbeddingHeadBackend
    assert EmbeddingHeadBackend.task == "intent"


def test_featurize_reports_progress(backend: EmbeddingHeadBackend) -> None:
    fractions: list[float] = []

    features = backend.featurize(["hello", "bye"], fractions.append)

    assert features.shape == (2, 384)
    assert fractions[-1] == 1.0


def test_training_lowers_the_loss_and_reports_every_epoch(
    backend: EmbeddingHeadBackend, train_features: np.ndarray, held_out_features: np.ndarray
) -> None:
    records: list[EpochRecord] = []
    progress: list[float] = []

    train(
        backend,
        train_features,
        validation=(held_out_features, [label for _, label in HELD_OUT]),
        records=records,
        progress=progress,
    )

    assert len(records) == CONFIG.epochs
    assert [r.epoch for r in records] == list(range(1, CONFIG.epochs + 1))
    losses = [r.train_loss for r in records]
    assert losses[-1] < losses[0] / 2
    assert losses[-1] == min(losses)
    assert records[-1].validation_accuracy == 1.0
    assert records[-1].validation_macro_f1 == 1.0
    assert progress[-1] == 1.0
    assert progress == sorted(progress)


def test_without_validation_records_have_no_metrics(
    backend: EmbeddingHeadBackend, train_features: np.ndarray
) -> None:
    records: list[EpochRecord] = []

    train(backend, train_features, records=records)

    assert len(records) == CONFIG.epochs
    assert all(r.validation_accuracy is None and r.validation_macro_f1 is None for r in records)


def test_predicts_held_out_paraphrases(model: EmbeddingHeadModel) -> None:
    probs = model.predict_features(model.featurize([text for text, _ in HELD_OUT]))

    assert model.labels == sorted(INTENTS)
    assert probs.shape == (len(HELD_OUT), len(INTENTS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    predicted = [model.labels[i] for i in probs.argmax(axis=1)]
    assert predicted == [label for _, label in HELD_OUT]


def test_same_seed_gives_identical_weights(
    backend: EmbeddingHeadBackend, train_features: np.ndarray
) -> None:
    a = train(backend, train_features, seed=7)
    b = train(backend, train_features, seed=7)
    c = train(backend, train_features, seed=8)

    assert np.array_equal(a.weight, b.weight)
    assert np.array_equal(a.bias, b.bias)
    assert not np.array_equal(a.weight, c.weight)


def test_save_load_round_trip(
    backend: EmbeddingHeadBackend,
    model: EmbeddingHeadModel,
    saved: Path,
    held_out_features: np.ndarray,
) -> None:
    loaded = backend.load(saved)

    assert loaded.labels == model.labels
    assert loaded.feature_key == model.feature_key
    assert np.array_equal(
        loaded.predict_features(held_out_features), model.predict_features(held_out_features)
    )
    assert np.array_equal(
        loaded.predict_features(loaded.featurize(["where's my package"])),
        model.predict_features(model.featurize(["where's my package"])),
    )


def test_saved_folder_is_safetensors_and_json_only(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["head.json", "head.safetensors"]
    meta = json.loads((saved / "head.json").read_text())
    assert meta["backend"] == "embedding-head"
    assert meta["labels"] == sorted(INTENTS)
    tensors = load_file(str(saved / "head.safetensors"))  # plain tensors, nothing to unpickle
    assert {name: t.shape for name, t in tensors.items()} == {
        "weight": (len(INTENTS), 384),
        "bias": (len(INTENTS),),
    }


@pytest.mark.parametrize("name", ["head.json", "head.safetensors"])
def test_load_refuses_a_missing_file(backend: EmbeddingHeadBackend, saved: Path, name: str) -> None:
    (saved / name).unlink()

    with pytest.raises(ModelLoadError, match=f"cannot read the model.*{name}"):
        backend.load(saved)


def edit_meta(directory: Path, **changes: object) -> None:
    path = directory / "head.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    "changes",
    [{"backend": "fasttext"}, {"format_version": 2}, {"format_version": None}],
    ids=["other-backend", "newer-format", "no-format"],
)
def test_load_refuses_another_format(
    backend: EmbeddingHeadBackend, saved: Path, changes: dict[str, object]
) -> None:
    edit_meta(saved, **changes)

    with pytest.raises(ModelLoadError, match="retrain the model"):
        backend.load(saved)


def test_load_refuses_a_head_for_another_encoder(
    backend: EmbeddingHeadBackend, saved: Path
) -> None:
    edit_meta(saved, encoder_sha256="0" * 64)

    with pytest.raises(ModelLoadError, match="another encoder"):
        backend.load(saved)


@pytest.mark.parametrize(
    ("weight_shape", "bias_shape"),
    [((4, 128), (4,)), ((3, 384), (3,)), ((4, 384), (5,))],
    ids=["wrong-dimension", "wrong-label-count", "wrong-bias"],
)
def test_load_refuses_weights_of_the_wrong_shape(
    backend: EmbeddingHeadBackend,
    saved: Path,
    weight_shape: tuple[int, ...],
    bias_shape: tuple[int, ...],
) -> None:
    save_file(
        {"weight": np.zeros(weight_shape, np.float32), "bias": np.zeros(bias_shape, np.float32)},
        str(saved / "head.safetensors"),
    )

    with pytest.raises(ModelLoadError, match="corrupt"):
        backend.load(saved)


def test_load_refuses_a_truncated_weights_file(backend: EmbeddingHeadBackend, saved: Path) -> None:
    path = saved / "head.safetensors"
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(ModelLoadError):
        backend.load(saved)


def test_load_refuses_weights_without_the_expected_tensors(
    backend: EmbeddingHeadBackend, saved: Path
) -> None:
    save_file({"kernel": np.zeros((4, 384), np.float32)}, str(saved / "head.safetensors"))

    with pytest.raises(ModelLoadError):
        backend.load(saved)


def test_load_refuses_metadata_without_labels(backend: EmbeddingHeadBackend, saved: Path) -> None:
    meta = json.loads((saved / "head.json").read_text())
    del meta["labels"]
    (saved / "head.json").write_text(json.dumps(meta))

    with pytest.raises(ModelLoadError):
        backend.load(saved)


@pytest.mark.parametrize(
    "values",
    [
        {"epochs": 0},
        {"epochs": 501},
        {"learning_rate": 0},
        {"batch_size": 0},
        {"weight_decay": -0.1},
        {"epoch": 5},
        {"dropout": 0.1},
    ],
    ids=[
        "no-epochs",
        "too-many-epochs",
        "zero-lr",
        "zero-batch",
        "negative-decay",
        "typo-key",
        "unknown-key",
    ],
)
def test_config_refuses_bad_values_and_unknown_keys(values: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        EmbeddingHeadConfig(**values)  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        EmbeddingHeadConfig.model_validate(values)


def test_config_defaults_are_valid() -> None:
    assert EmbeddingHeadConfig().epochs >= 1
    assert EmbeddingHeadConfig.model_validate({"epochs": 5}).epochs == 5


def test_auto_precision_is_int8_on_cpu_and_is_recorded(
    backend: EmbeddingHeadBackend, model: EmbeddingHeadModel, saved: Path
) -> None:
    assert backend.precision(CONFIG) == "int8"
    assert backend.precision(EmbeddingHeadConfig(encoder_precision="fp32")) == "fp32"
    assert model.precision == "int8" and model.feature_key.endswith(":int8")
    assert json.loads((saved / "head.json").read_text())["encoder_precision"] == "int8"
    assert backend.load(saved).precision == "int8"


def test_an_fp32_model_is_served_with_the_fp32_encoder(
    backend: EmbeddingHeadBackend, tmp_path: Path
) -> None:
    config = EmbeddingHeadConfig(epochs=20, encoder_precision="fp32")
    texts = [text for text, _ in TRAIN]
    features = backend.featurize(texts, config=config)
    model = backend.train(
        features,
        [label for _, label in TRAIN],
        config,
        seed=0,
        validation=None,
        on_epoch=None,
        progress=lambda f: None,
    )
    model.save(tmp_path / "m")
    loaded = backend.load(tmp_path / "m")
    assert loaded.precision == "fp32" and loaded.feature_key.endswith(":fp32")
    np.testing.assert_allclose(loaded.featurize(texts[:3]), features[:3], atol=1e-5)
