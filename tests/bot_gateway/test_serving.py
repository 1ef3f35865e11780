"""Serving internals: the micro-batcher (one featurisation for everything queued) and the
model cache (load once, LRU, checksum before trust). Fakes for the batching rules, a real
embedding-head model for the cache and one end-to-end batch."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from bot_gateway.serving.batcher import MicroBatcher
from bot_gateway.serving.cache import ModelCache, ModelRef
from core.backends import BackendContext, TextClassifier
from core.errors import ModelLoadError
from core.shared_models import SharedKey, SharedModels, shared_models
from core.storage import LocalStore, sha256_dir
from nlu.intent.embedding_head import (
    EmbeddingHeadBackend,
    EmbeddingHeadConfig,
    EmbeddingHeadModel,
)
from tests.conftest import CACHE_DIR
from tests.support.data import INTENTS

WAIT = 5.0  # seconds; a future not answered by then means the batcher is stuck

Publish = Callable[[str], ModelRef]


# --- fakes --------------------------------------------------------------------------------


class FakeEncoder:
    """Featurizes a text as its number; records every call. With ``gate``, the first call
    blocks until the gate is set, holding the inference thread while requests queue up."""

    def __init__(self, *, gate: threading.Event | None = None) -> None:
        self.calls: list[list[str]] = []
        self.gate = gate
        self.entered = threading.Event()
        self.fail_on: str | None = None

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.gate is not None and len(self.calls) == 1:
            self.entered.set()
            assert self.gate.wait(WAIT), "the test never released the gate"
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot featurize {self.fail_on!r}")
        return np.array([[float(t.split("-")[-1])] for t in texts])


class FakeModel:
    """A model whose 'probabilities' are (feature, tag): rows show whose text they came from."""

    def __init__(self, encoder: FakeEncoder, *, feature_key: str = "enc", tag: float = 0.0) -> None:
        self.labels = ["feature", "tag"]
        self.feature_key = feature_key
        self.encoder = encoder
        self.tag = tag
        self.fail_predict = False

    def featurize(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder(texts)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        if self.fail_predict:
            raise ValueError("this head is broken")
        return np.hstack([features, np.full((len(features), 1), self.tag)])

    def save(self, directory: Path) -> None:  # pragma: no cover - protocol only
        raise NotImplementedError


def expected(texts: Sequence[str], tag: float) -> np.ndarray:
    return np.array([[float(t.split("-")[-1]), tag] for t in texts])


def result(future: Future[np.ndarray]) -> np.ndarray:
    return future.result(timeout=WAIT)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave the inference thread blocked, even when a test failed


@pytest.fixture
def batcher(gate: threading.Event) -> Iterator[MicroBatcher]:
    b = MicroBatcher()
    yield b
    gate.set()
    b.stop()


def hold(batcher: MicroBatcher, encoder: FakeEncoder) -> Future[np.ndarray]:
    """Occupy the inference thread with a request whose featurisation blocks on the gate."""
    future = batcher.submit(FakeModel(encoder), ["hold-0"])
    assert encoder.entered.wait(WAIT)
    return future


# --- MicroBatcher -------------------------------------------------------------------------


def test_requests_queued_while_busy_share_one_featurize_call(
    batcher: MicroBatcher, gate: threading.Event
) -> None:
    encoder = FakeEncoder(gate=gate)
    model = FakeModel(encoder, tag=1)
    held = hold(batcher, encoder)
    requests = [[f"r{i}-{10 * i + j}" for j in range(i + 1)] for i in range(5)]

    futures = [batcher.submit(model, texts) for texts in requests]
    gate.set()

    np.testing.assert_array_equal(result(held), expected(["hold-0"], 0))
    for texts, future in zip(requests, futures, strict=True):
        np.testing.assert_array_equal(result(future), expected(texts, 1))
    assert encoder.calls == [["hold-0"], [t for texts in requests for t in texts]]
    assert batcher.batches == 2
    assert batcher.requests == 6


def test_models_with_the_same_feature_key_share_the_featurize_call(
    batcher: MicroBatcher, gate: threading.Event
) -> None:
    encoder = FakeEncoder(gate=gate)
    tenant_a, tenant_b = FakeModel(encoder, tag=1), FakeModel(encoder, tag=2)
    held = hold(batcher, encoder)

    a1 = batcher.submit(tenant_a, ["a-1", "a-2"])
    b1 = batcher.submit(tenant_b, ["b-3"])
    a2 = batcher.submit(tenant_a, ["a-4"])
    gate.set()

    result(held)
    np.testing.assert_array_equal(result(a1), expected(["a-1", "a-2"], 1))
    np.testing.assert_array_equal(result(b1), expected(["b-3"], 2))
    np.testing.assert_array_equal(result(a2), expected(["a-4"], 1))
    assert encoder.calls[1:] == [["a-1", "a-2", "b-3", "a-4"]]


def test_models_with_different_feature_keys_are_featurized_separately(
    batcher: MicroBatcher, gate: threading.Event
) -> None:
    blocker = FakeEncoder(gate=gate)
    minilm, other = FakeEncoder(), FakeEncoder()
    head = FakeModel(minilm, feature_key="minilm", tag=1)
    tfidf = FakeModel(other, feature_key="tfidf", tag=2)
    held = hold(batcher, blocker)

    f1 = batcher.submit(head, ["x-1"])
    f2 = batcher.submit(tfidf, ["y-2"])
    f3 = batcher.submit(head, ["x-3"])
    gate.set()

    result(held)
    np.testing.assert_array_equal(result(f1), expected(["x-1"], 1))
    np.testing.assert_array_equal(result(f2), expected(["y-2"], 2))
    np.testing.assert_array_equal(result(f3), expected(["x-3"], 1))
    assert minilm.calls == [["x-1", "x-3"]]
    assert other.calls == [["y-2"]]
    assert batcher.batches == 2  # one batch, two groups


def test_a_featurize_error_reaches_every_waiting_request_and_serving_goes_on(
    batcher: MicroBatcher, gate: threading.Event
) -> None:
    blocker = FakeEncoder(gate=gate)
    encoder = FakeEncoder()
    encoder.fail_on = "bad-2"
    model = FakeModel(encoder)
    held = hold(batcher, blocker)

    futures = [batcher.submit(model, [text]) for text in ("ok-1", "bad-2", "ok-3")]
    gate.set()

    result(held)
    for future in futures:
        with pytest.raises(RuntimeError, match="cannot featurize 'bad-2'"):
            result(future)
    np.testing.assert_array_equal(result(batcher.submit(model, ["ok-4"])), expected(["ok-4"], 0))
    assert encoder.calls == [["ok-1", "bad-2", "ok-3"], ["ok-4"]]


def test_a_predict_error_affects_only_its_own_request(
    batcher: MicroBatcher, gate: threading.Event
) -> None:
    encoder = FakeEncoder(gate=gate)
    good, broken = FakeModel(encoder, tag=1), FakeModel(encoder, tag=2)
    broken.fail_predict = True
    held = hold(batcher, encoder)

    f1 = batcher.submit(good, ["g-1"])
    f2 = batcher.submit(broken, ["b-2"])
    f3 = batcher.submit(good, ["g-3", "g-4"])
    gate.set()

    result(held)
    np.testing.assert_array_equal(result(f1), expected(["g-1"], 1))
    with pytest.raises(ValueError, match="this head is broken"):
        result(f2)
    np.testing.assert_array_equal(result(f3), expected(["g-3", "g-4"], 1))
    assert encoder.calls[1:] == [["g-1", "b-2", "g-3", "g-4"]]


def test_max_batch_caps_the_texts_per_featurize_call(gate: threading.Event) -> None:
    batcher = MicroBatcher(max_batch=4)
    try:
        encoder = FakeEncoder(gate=gate)
        model = FakeModel(encoder)
        held = hold(batcher, encoder)

        futures = [batcher.submit(model, [f"t-{i}"]) for i in range(10)]
        gate.set()

        result(held)
        for i, future in enumerate(futures):
            np.testing.assert_array_equal(result(future), expected([f"t-{i}"], 0))
        assert [len(call) for call in encoder.calls[1:]] == [4, 4, 2]
        assert [t for call in encoder.calls[1:] for t in call] == [f"t-{i}" for i in range(10)]
    finally:
        gate.set()
        batcher.stop()


def test_max_batch_caps_multi_text_requests(gate: threading.Event) -> None:
    batcher = MicroBatcher(max_batch=4)
    try:
        encoder = FakeEncoder(gate=gate)
        model = FakeModel(encoder)
        held = hold(batcher, encoder)

        futures = [batcher.submit(model, [f"t-{3 * i + j}" for j in range(3)]) for i in range(3)]
        gate.set()

        result(held)
        for future in futures:
            result(future)
        assert max(len(call) for call in encoder.calls[1:]) <= 4
    finally:
        gate.set()
        batcher.stop()


def test_a_single_request_larger_than_max_batch_is_served_whole() -> None:
    batcher = MicroBatcher(max_batch=2)
    try:
        encoder = FakeEncoder()
        texts = [f"t-{i}" for i in range(5)]

        out = result(batcher.submit(FakeModel(encoder), texts))

        np.testing.assert_array_equal(out, expected(texts, 0))
    finally:
        batcher.stop()


# --- a real model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context() -> BackendContext:
    return BackendContext(cache_dir=CACHE_DIR, device="cpu")


@pytest.fixture(scope="module")
def trained(context: BackendContext) -> EmbeddingHeadModel:
    backend = EmbeddingHeadBackend(context)
    texts = [text for texts in INTENTS.values() for text in texts]
    labels = [label for label, texts in INTENTS.items() for _ in texts]
    return backend.train(
        backend.featurize(texts),
        labels,
        EmbeddingHeadConfig(epochs=20),
        seed=0,
        validation=None,
        on_epoch=None,
        progress=lambda fraction: None,
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def publish(trained: EmbeddingHeadModel, store: LocalStore, tmp_path: Path) -> Iterator[Publish]:
    """Save the trained model into the store as model ``id``; its ModelRef."""
    folder = tmp_path / "saved"
    trained.save(folder)

    def publish(model_id: str) -> ModelRef:
        key = f"tenants/ten_1/models/{model_id}"
        store.put_dir(key, folder)
        return ModelRef(model_id, "embedding-head", key, sha256_dir(store.local_dir(key)))

    yield publish
    shutil.rmtree(folder)


def top_label(model: TextClassifier, text: str) -> str:
    return model.labels[int(model.predict_features(model.featurize([text])).argmax())]


@pytest.mark.slow
def test_real_models_share_one_encoder_pass_in_the_batcher(
    trained: EmbeddingHeadModel, gate: threading.Event
) -> None:
    encoder_calls: list[list[str]] = []

    def featurize(texts: Sequence[str]) -> np.ndarray:
        encoder_calls.append(list(texts))
        return trained.featurize(texts)

    tenant_a = EmbeddingHeadModel(
        trained.labels, trained.weight, trained.bias, featurize, trained.precision
    )
    tenant_b = EmbeddingHeadModel(
        trained.labels, trained.weight, -trained.bias, featurize, trained.precision
    )
    texts_a, texts_b = ["where's my package", "hey there"], ["i'd like a refund please"]
    batcher = MicroBatcher()
    try:
        held = hold(batcher, FakeEncoder(gate=gate))
        fa, fb = batcher.submit(tenant_a, texts_a), batcher.submit(tenant_b, texts_b)
        gate.set()
        result(held)
        a, b = result(fa), result(fb)
    finally:
        gate.set()
        batcher.stop()

    assert encoder_calls == [texts_a + texts_b]
    np.testing.assert_allclose(a, trained.predict_features(trained.featurize(texts_a)), atol=1e-5)
    np.testing.assert_allclose(b, tenant_b.predict_features(trained.featurize(texts_b)), atol=1e-5)
    assert [trained.labels[i] for i in a.argmax(axis=1)] == ["track_order", "greet"]


@pytest.mark.slow
def test_cache_loads_a_model_once(
    store: LocalStore, context: BackendContext, publish: Publish
) -> None:
    ref = publish("mdl_1")
    cache = ModelCache(store, context, capacity=4)

    first = cache.get(ref)
    second = cache.get(ref)

    assert first is second
    assert cache.loads == 1
    assert len(cache) == 1
    assert top_label(first, "where's my package") == "track_order"


@pytest.mark.slow
def test_cache_with_capacity_one_evicts_the_older_model(
    store: LocalStore, context: BackendContext, publish: Publish
) -> None:
    a, b = publish("mdl_a"), publish("mdl_b")
    cache = ModelCache(store, context, capacity=1)

    first_a = cache.get(a)
    cache.get(b)
    again_a = cache.get(a)

    assert len(cache) == 1
    assert cache.loads == 3
    assert again_a is not first_a


@pytest.mark.slow
def test_cache_evicts_the_least_recently_used(
    store: LocalStore, context: BackendContext, publish: Publish
) -> None:
    a, b, c = (publish(f"mdl_{x}") for x in "abc")
    cache = ModelCache(store, context, capacity=2)

    model_a = cache.get(a)
    cache.get(b)
    assert cache.get(a) is model_a  # a is now the most recently used
    cache.get(c)  # evicts b

    assert cache.loads == 3
    assert cache.get(a) is model_a
    assert cache.loads == 3
    cache.get(b)
    assert cache.loads == 4


@pytest.mark.slow
def test_cache_refuses_files_that_do_not_match_the_checksum(
    store: LocalStore, context: BackendContext, publish: Publish
) -> None:
    ref = publish("mdl_1")
    cache = ModelCache(store, context, capacity=4)
    wrong = ModelRef(ref.id, ref.backend, ref.artifact_key, "0" * 64)

    with pytest.raises(ModelLoadError, match="mdl_1.*checksum"):
        cache.get(wrong)
    assert len(cache) == 0
    assert cache.loads == 0

    # files swapped after the record was written are refused the same way
    head = store.local_dir(ref.artifact_key) / "head.json"
    head.write_text(head.read_text().replace("greet", "greeting"))
    with pytest.raises(ModelLoadError, match="checksum"):
        cache.get(ref)
    assert len(cache) == 0


@pytest.mark.slow
def test_cache_reports_a_missing_artifact_folder(
    store: LocalStore, context: BackendContext
) -> None:
    cache = ModelCache(store, context, capacity=4)
    ref = ModelRef("mdl_9", "embedding-head", "tenants/ten_1/models/mdl_9", "0" * 64)

    with pytest.raises(ModelLoadError, match="mdl_9.*missing"):
        cache.get(ref)
    assert len(cache) == 0


@pytest.mark.slow
def test_concurrent_gets_load_once(
    store: LocalStore,
    context: BackendContext,
    publish: Publish,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = publish("mdl_1")
    cache = ModelCache(store, context, capacity=4)
    real_load = EmbeddingHeadBackend.load

    def slow_load(self: EmbeddingHeadBackend, directory: Path) -> EmbeddingHeadModel:
        time.sleep(0.2)  # every thread arrives while the first one is still loading
        return real_load(self, directory)

    monkeypatch.setattr(EmbeddingHeadBackend, "load", slow_load)
    start = threading.Barrier(8)
    results: list[TextClassifier] = []
    errors: list[Exception] = []

    def get() -> None:
        start.wait(WAIT)
        try:
            results.append(cache.get(ref))
        except Exception as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)

    assert errors == []
    assert len(results) == 8
    assert all(model is results[0] for model in results)
    assert cache.loads == 1


def test_identical_texts_are_featurized_once_per_batch(
    batcher: MicroBatcher, gate: threading.Event
) -> None:
    encoder = FakeEncoder(gate=gate)
    held = hold(batcher, encoder)
    model = FakeModel(encoder, tag=1.0)
    futures = [batcher.submit(model, ["x-7", "x-8"]), batcher.submit(model, ["x-7"])]
    gate.set()
    result(held)
    assert [result(f)[:, 0].tolist() for f in futures] == [[7.0, 8.0], [7.0]]
    assert encoder.calls[1] == ["x-7", "x-8"]


def test_the_wait_window_gathers_requests_that_arrive_just_after() -> None:
    encoder = FakeEncoder()
    batcher = MicroBatcher(wait_ms=200)
    try:
        model = FakeModel(encoder)
        first = batcher.submit(model, ["a-1"])
        time.sleep(0.05)
        second = batcher.submit(model, ["a-2"])
        assert result(first)[0, 0] == 1.0 and result(second)[0, 0] == 2.0
        assert encoder.calls == [["a-1", "a-2"]]
    finally:
        batcher.stop()


def test_max_batch_one_turns_batching_off(gate: threading.Event) -> None:
    encoder = FakeEncoder(gate=gate)
    batcher = MicroBatcher(max_batch=1)
    try:
        held = hold(batcher, encoder)
        model = FakeModel(encoder)
        futures = [batcher.submit(model, [f"t-{i}"]) for i in range(3)]
        gate.set()
        result(held)
        assert [result(f)[0, 0] for f in futures] == [0.0, 1.0, 2.0]
        assert encoder.calls[1:] == [["t-0"], ["t-1"], ["t-2"]]
    finally:
        batcher.stop()


@pytest.mark.slow
def test_cache_memory_budget_evicts_least_recently_used(
    store: LocalStore, context: BackendContext, publish: Publish, trained: EmbeddingHeadModel
) -> None:
    refs = [publish(f"mdl_{i}") for i in range(4)]
    cache = ModelCache(store, context, capacity=100, budget_bytes=int(trained.nbytes * 2.5))
    for ref in refs:
        cache.get(ref)
    assert len(cache) == 2 and cache.evictions == 2
    assert cache.nbytes <= cache.budget_bytes  # type: ignore[operator]
    assert cache.peek(refs[0]) is None and cache.peek(refs[3]) is not None


@pytest.mark.slow
def test_shared_weights_count_against_the_memory_budget(
    store: LocalStore, context: BackendContext, publish: Publish, trained: EmbeddingHeadModel
) -> None:
    """A budget of 4.5 heads with shared weights the size of two: two heads fit, not four."""
    shared = SharedModels()
    weights = shared.get(SharedKey("encoder", "minilm"), object, size=lambda _: trained.nbytes * 2)
    refs = [publish(f"mdl_{i}") for i in range(4)]
    cache = ModelCache(
        store, context, capacity=100, budget_bytes=int(trained.nbytes * 4.5), shared=shared
    )

    for ref in refs:
        cache.get(ref)

    assert cache.shared_bytes == trained.nbytes * 2
    assert len(cache) == 2 and cache.evictions == 2
    assert cache.nbytes + cache.shared_bytes <= cache.budget_bytes  # type: ignore[operator]
    assert cache.peek(refs[2]) is not None and cache.peek(refs[3]) is not None
    assert shared.get(SharedKey("encoder", "minilm"), object, size=len) is weights  # kept


@pytest.mark.slow
def test_shared_weights_loaded_later_shrink_the_room_for_heads(
    store: LocalStore, context: BackendContext, publish: Publish, trained: EmbeddingHeadModel
) -> None:
    shared = SharedModels()
    refs = [publish(f"mdl_{i}") for i in range(4)]
    cache = ModelCache(
        store, context, capacity=100, budget_bytes=int(trained.nbytes * 4.5), shared=shared
    )
    for ref in refs:
        cache.get(ref)
    assert len(cache) == 4 and cache.shared_bytes == 0

    shared.get(SharedKey("ocr-engine", "rapidocr"), object, size=lambda _: trained.nbytes * 3)
    cache.get(publish("mdl_new"))  # the next load makes room within what is left

    assert len(cache) == 1 and cache.evictions == 4
    assert cache.peek(refs[3]) is None


@pytest.mark.slow
def test_shared_weights_over_the_budget_keep_one_head_and_say_so(
    store: LocalStore,
    context: BackendContext,
    publish: Publish,
    trained: EmbeddingHeadModel,
) -> None:
    shared = SharedModels()
    shared.get(SharedKey("encoder", "minilm"), object, size=lambda _: trained.nbytes * 10)
    cache = ModelCache(
        store, context, capacity=100, budget_bytes=int(trained.nbytes * 4.5), shared=shared
    )
    refs = [publish(f"mdl_{i}") for i in range(3)]

    lines: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("parley").addHandler(handler)  # Parley's logger may not propagate
    try:
        for ref in refs:
            assert top_label(cache.get(ref), "where is my parcel") == "track_order"
    finally:
        logging.getLogger("parley").removeHandler(handler)

    assert len(cache) == 1 and cache.peek(refs[2]) is not None
    warnings = [line for line in lines if "budget_taken" in line]
    assert len(warnings) == 1  # once, not on every load
    assert "raise PARLEY_SERVING__MODEL_CACHE_BYTES" in warnings[0]


def test_the_gateway_counts_the_process_shared_weights() -> None:
    from bot_gateway.app import build_gateway
    from core.settings import get_settings

    gateway = build_gateway(get_settings())

    assert gateway.cache.shared is shared_models
    assert gateway.cache.budget_bytes == get_settings().serving.model_cache_bytes


def test_no_wait_after_a_lone_request() -> None:
    encoder = FakeEncoder()
    batcher = MicroBatcher(wait_ms=500)
    try:
        model = FakeModel(encoder)
        result(batcher.submit(model, ["a-1"]))  # first batch: waits, ends up alone
        started = time.monotonic()
        assert result(batcher.submit(model, ["a-2"]))[0, 0] == 2.0
        assert time.monotonic() - started < 0.25  # no 500 ms window for a lone caller
    finally:
        batcher.stop()


def test_inference_threads_default_where_the_platform_has_no_cpu_affinity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot_gateway.app import usable_cpus

    monkeypatch.delattr("os.sched_getaffinity", raising=False)  # as on macOS
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    assert usable_cpus() == 3
