"""Inference on several threads, with a real intent model: every concurrent request gets its own
answer (the one the model gives that text alone), the threads share the batches, and a gateway
that serves ONNX models (the encoder and the image backbone) never loads torch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot_gateway.serving.batcher import MicroBatcher
from core.backends import BackendContext
from nlu.intent.embedding_head import EmbeddingHeadBackend, EmbeddingHeadConfig
from tests.conftest import CACHE_DIR, ROOT, make_settings
from tests.support.data import INTENTS

pytestmark = pytest.mark.slow

TRAIN = [(text, label) for label, texts in INTENTS.items() for text in texts]
MESSAGES = [
    "where's my package",
    "i'd like a refund please",
    "hey there",
    "see you soon",
    "has the parcel been shipped",
    "return the money for my order",
    "good evening",
    "bye bye",
]


@pytest.fixture(scope="module")
def trained() -> Any:
    backend = EmbeddingHeadBackend(BackendContext(cache_dir=CACHE_DIR, device="cpu"))
    texts = [t for t, _ in TRAIN]
    return backend.train(
        backend.featurize(texts),
        [label for _, label in TRAIN],
        EmbeddingHeadConfig(epochs=20),
        seed=0,
        validation=None,
        on_epoch=None,
        progress=lambda _f: None,
    )


class _Seen:
    """The real model, noting which thread featurized each batch."""

    def __init__(self, model: Any) -> None:
        self.model, self.threads = model, set[str]()
        self.labels, self.feature_key = model.labels, model.feature_key

    def featurize(self, texts: Any) -> Any:
        self.threads.add(threading.current_thread().name)
        return self.model.featurize(texts)

    def predict_features(self, features: Any) -> Any:
        return self.model.predict_features(features)


def test_several_inference_threads_answer_every_request_with_its_own_text(trained: Any) -> None:
    alone = {text: trained.predict_features(trained.featurize([text]))[0] for text in MESSAGES}
    seen = _Seen(trained)
    batcher = MicroBatcher(max_batch=8, threads=2)
    asked = [MESSAGES[i % len(MESSAGES)] for i in range(240)]
    try:
        with ThreadPoolExecutor(24) as clients:  # 24 callers at once, like 24 HTTP clients
            answers = list(clients.map(lambda t: batcher.submit(seen, [t]).result(30), asked))
    finally:
        batcher.stop()
    for text, probs in zip(asked, answers, strict=True):
        assert probs.shape == (1, len(trained.labels))
        np.testing.assert_allclose(probs[0], alone[text], atol=1e-5, err_msg=text)
    assert batcher.requests == len(asked)
    assert batcher.batches < len(asked)  # requests were batched
    assert seen.threads == {"inference-0", "inference-1"}  # both threads took batches


SERVE_ONNX = """
import json, sys
from fastapi.testclient import TestClient
from bot_gateway.app import create_app
from core.settings import get_settings

with TestClient(create_app(get_settings())) as client:
    r = client.post(
        "/model/parse",
        json={"text": "where's my package"},
        headers={"Authorization": f"Bearer {sys.argv[1]}"},
    )
    assert r.status_code == 200, r.text
    print(json.dumps({"label": r.json()["intent"]["name"], "torch": "torch" in sys.modules}))
"""

IDLE_WORKER = """
import json, sys
from training.worker import main
code = main(["--once", "--name", "idle"])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def _run(script: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_CACHE_DIR": str(CACHE_DIR),
        "PARLEY_QUEUE__WORKERS": "0",
        "PARLEY_SERVING__DEVICE": "cpu",  # the claim is CPU serving's (CUDA serves on torch)
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _production_model(trained: Any, data_dir: Path) -> str:
    """A tenant whose ``production`` alias points at ``trained``, stored as a train job stores
    a model, in the database of ``data_dir``; its API key."""
    from core.db import get_engine, session_scope, upgrade
    from core.ids import new_id
    from core.storage import open_store, sha256_dir
    from core.tables import Model
    from core.tenants import create_tenant
    from training.registry import set_alias

    data_dir.mkdir(parents=True)
    url = f"sqlite:///{data_dir / 'parley.db'}"
    upgrade(url)
    store = open_store(data_dir / "artifacts")
    trained.save(data_dir / "model")
    with session_scope(get_engine(url)) as session:
        tenant, key = create_tenant(session, "acme")
        model_id = new_id("model")
        artifact = f"tenants/{tenant.id}/models/{model_id}"
        store.put_dir(artifact, data_dir / "model")
        session.add(
            Model(
                id=model_id,
                tenant_id=tenant.id,
                dataset_id="ds_test",
                name="intents",
                backend="embedding-head",
                backend_version="1",
                task="intent",
                params={},
                status="succeeded",
                progress=1.0,
                labels=trained.labels,
                artifact_key=artifact,
                artifact_sha256=sha256_dir(store.local_dir(artifact)),
            )
        )
        session.flush()
        set_alias(session, tenant.id, "production", model_id)
        return str(key.secret)


def test_a_gateway_serving_an_onnx_intent_model_never_imports_torch(
    trained: Any, tmp_path: Path
) -> None:
    from vision.classify.features import get_features

    # the derived files the gateway loads at start are in the cache (made here, with torch)
    get_features(BackendContext(cache_dir=CACHE_DIR, device="cpu"), "cpu")
    api_key = _production_model(trained, tmp_path / "data")
    out = _run(SERVE_ONNX, tmp_path, api_key)
    assert out == {"label": "track_order", "torch": False}


def test_an_idle_train_worker_does_not_import_torch(tmp_path: Path) -> None:
    assert _run(IDLE_WORKER, tmp_path) == {"code": 0, "torch": False}


@pytest.mark.parametrize(("configured", "expected"), [(0, None), (3, 3)])
def test_a_pre_built_ocr_read_uses_the_ocr_threads_setting(
    tmp_path: Path, configured: int, expected: int | None
) -> None:
    """By default one OCR read uses as many threads as the gateway has inference threads (a
    lone read is latency-bound: on 2 cores, 2 threads read a photographed label faster);
    ``PARLEY_SERVING__OCR_THREADS`` overrides it."""
    from bot_gateway.app import build_gateway
    from vision.ocr.prebuilt import PREBUILT_OCR

    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'p.db'}", serving={"ocr_threads": configured}
    )
    gateway = build_gateway(settings)
    try:
        ocr = PREBUILT_OCR.load(gateway.cache.context)
        assert ocr.threads == (expected or gateway.batcher.threads)
    finally:
        gateway.batcher.stop()
