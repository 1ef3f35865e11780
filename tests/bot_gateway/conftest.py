"""A running gateway per test module and database kind: TestClient + a real train worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bot_gateway.app import create_app
from tests.conftest import DB_KINDS, make_db_url, make_settings
from tests.support.data import intent_csv

OPERATOR = {"Authorization": "Bearer operator-secret"}


@dataclass
class Api:
    client: TestClient
    a: dict[str, str]  # tenant A's admin key headers
    b: dict[str, str]  # tenant B's admin key headers
    a_tenant: str

    def python_client(self) -> Any:
        """``parley.client.ParleyClient`` with tenant A's key, its requests answered by this
        gateway's TestClient (the CLI's ``_client`` in CLI tests)."""
        from parley.client import ParleyClient

        def forward(request: httpx.Request) -> httpx.Response:
            r = self.client.request(
                request.method, str(request.url), headers=request.headers, content=request.read()
            )
            return httpx.Response(r.status_code, headers=r.headers, content=r.content)

        key = self.a["Authorization"].removeprefix("Bearer ")
        return ParleyClient("http://testserver", key, transport=httpx.MockTransport(forward))

    def upload(
        self,
        data: bytes,
        *,
        name: str = "ds",
        type: str = "text-intent",
        filename: str = "data.csv",
        headers: dict[str, str] | None = None,
        **fields: str,
    ) -> Any:
        return self.client.post(
            "/v1/datasets",
            files={"file": (filename, data)},
            data={"name": name, "type": type, **fields},
            headers=headers or self.a,
        )

    def wait_model(
        self, model_id: str, headers: dict[str, str] | None = None, timeout: float = 180
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            model = self.client.get(f"/v1/models/{model_id}", headers=headers or self.a).json()
            if model["status"] in ("succeeded", "failed", "cancelled"):
                return model
            assert time.monotonic() < deadline, f"model still {model['status']}"
            time.sleep(0.1)

    def train(
        self, dataset_id: str, headers: dict[str, str] | None = None, **body: Any
    ) -> dict[str, Any]:
        r = self.client.post(
            "/v1/models", json={"dataset_id": dataset_id, **body}, headers=headers or self.a
        )
        assert r.status_code == 202, r.text
        return self.wait_model(r.json()["id"], headers)


@contextmanager
def running_api(
    request: pytest.FixtureRequest, tmp: Path, *, warm_encoder: bool = True, **overrides: Any
) -> Iterator[Api]:
    """A gateway on a fresh database of ``request.param``'s kind with two tenants, A and B."""
    settings = make_settings(tmp, make_db_url(request.param, tmp, request), **overrides)
    with TestClient(create_app(settings, warm_encoder=warm_encoder)) as client:
        keys = []
        for name in ("tenant-a", "tenant-b"):
            r = client.post("/v1/tenants", json={"name": name}, headers=OPERATOR)
            assert r.status_code == 201, r.text
            keys.append(r.json())
        yield Api(
            client,
            {"Authorization": f"Bearer {keys[0]['api_key']}"},
            {"Authorization": f"Bearer {keys[1]['api_key']}"},
            keys[0]["tenant_id"],
        )


@pytest.fixture(scope="module", params=DB_KINDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    limits = {"max_upload_bytes": 200_000, "sync_import_bytes": 100_000}
    with running_api(request, tmp_path_factory.mktemp("gateway"), limits=limits) as api:
        yield api


@pytest.fixture(scope="module")
def trained(api: Api) -> dict[str, Any]:
    """Tenant A's intent model on the small test dataset, succeeded."""
    dataset = api.upload(intent_csv(), name="intents").json()
    model = api.train(dataset["id"], params={"epochs": 40})
    assert model["status"] == "succeeded", model["failure_message"]
    return model
