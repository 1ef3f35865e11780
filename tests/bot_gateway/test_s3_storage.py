"""A gateway on S3-compatible storage (moto standing in for MinIO): a dataset uploaded, an intent
model trained by a real worker process and predicting, its artifact and the dataset's images in
the bucket, nothing under the data directory's artifacts/; the store stopped during training →
the job fails with a message naming the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bot_gateway.app import create_app
from core.s3 import MANIFEST_NAME
from tests.bot_gateway.conftest import OPERATOR, Api
from tests.conftest import make_settings
from tests.support.data import intent_csv
from tests.support.images import folder_zip
from tests.support.s3_server import S3_ENV, S3Server

pytestmark = pytest.mark.slow

BUCKET = "parley-gateway"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A store of this test's own: it is stopped mid-training."""
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)  # the gateway and its worker subprocess read them
    with S3Server() as s3:
        s3.create_bucket(BUCKET)
        yield s3


@pytest.fixture
def api(server: S3Server, tmp_path: Path) -> Iterator[Api]:
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'parley.db'}",
        storage={"url": f"s3://{BUCKET}/parley", "endpoint_url": server.endpoint_url},
        limits={"max_upload_bytes": 2_000_000},
    )
    with TestClient(create_app(settings, warm_encoder=False)) as client:
        r = client.post("/v1/tenants", json={"name": "tenant-a"}, headers=OPERATOR)
        assert r.status_code == 201, r.text
        key = r.json()
        headers = {"Authorization": f"Bearer {key['api_key']}"}
        yield Api(client, headers, headers, key["tenant_id"])


def wait_running(api: Api, model_id: str, timeout: float = 120) -> None:
    """Until the job has read its data and is training (progress reported)."""
    deadline = time.monotonic() + timeout
    while True:
        model = api.client.get(f"/v1/models/{model_id}", headers=api.a).json()
        if model["status"] == "running" and model["progress"] > 0:
            return
        assert model["status"] in ("queued", "running"), model
        assert time.monotonic() < deadline, f"model still {model['status']}"
        time.sleep(0.05)


def test_a_gateway_trains_predicts_and_stores_everything_in_the_object_store(
    api: Api, server: S3Server, tmp_path: Path
) -> None:
    dataset = api.upload(intent_csv(), name="intents").json()
    model = api.train(dataset["id"], params={"epochs": 40})
    assert model["status"] == "succeeded", model["failure_message"]

    r = api.client.post(
        f"/v1/models/{model['id']}/predict", json={"text": "where is my parcel"}, headers=api.a
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == "track_order"

    images = api.upload(folder_zip(2), name="shapes", type="image", filename="shapes.zip").json()
    assert images["status"] == "ready", images
    page = api.client.get(f"/v1/datasets/{images['id']}/examples?limit=1", headers=api.a).json()
    image = api.client.get(page["examples"][0]["image_url"], headers=api.a)
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"

    sizes = server.object_sizes(BUCKET)
    keys = list(sizes)
    tenant = f"parley/tenants/{api.a_tenant}"
    assert f"{tenant}/models/{model['id']}/1/{MANIFEST_NAME}" in keys  # its first attempt's
    assert any(k.startswith(f"{tenant}/datasets/{dataset['id']}/") for k in keys)
    assert sum(k.startswith(f"{tenant}/datasets/{images['id']}/images/") for k in keys) == 6
    local = tmp_path / "artifacts"
    assert not local.exists() or [p for p in local.rglob("*") if p.is_file()] == []

    usage = api.client.get("/v1/usage", headers=api.a)
    assert usage.status_code == 200, usage.text
    assert usage.json()["storage_bytes"] == sum(
        size for key, size in sizes.items() if key.startswith(tenant) and MANIFEST_NAME not in key
    )


def test_the_store_stopped_during_training_fails_the_job_naming_the_store(
    api: Api, server: S3Server
) -> None:
    dataset = api.upload(intent_csv(), name="intents").json()
    earlier = api.train(dataset["id"], params={"epochs": 20})  # stored, never loaded here
    assert earlier["status"] == "succeeded", earlier["failure_message"]
    r = api.client.post(
        "/v1/models", json={"dataset_id": dataset["id"], "params": {"epochs": 400}}, headers=api.a
    )
    assert r.status_code == 202, r.text
    model_id = r.json()["id"]
    wait_running(api, model_id)

    server.stop()
    model = api.wait_model(model_id)

    assert model["status"] == "failed"
    message = model["failure_message"]
    assert f"the object store at {server.endpoint_url} (bucket {BUCKET}) is unreachable" in message
    assert f"while storing tenants/{api.a_tenant}/models/{model_id}" in message

    # a model this gateway has not loaded yet cannot be fetched: 503, naming the store
    r = api.client.post(f"/v1/models/{earlier['id']}/predict", json={"text": "hi"}, headers=api.a)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable"
    assert f"the object store at {server.endpoint_url}" in r.json()["message"]
