"""Quotas per tenant (core.quotas, enforced in bot_gateway.ratelimit): each refuses with
``{"error": "quota_exceeded", "quota", "limit", "used"}`` (429 over a period, 403 for what the
tenant keeps) and the refused request changes nothing; the operator sets them with
``PATCH /v1/tenants/{id}`` or ``parley tenants update``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from core.db import get_engine, session_scope
from core.quotas import TenantLimits, next_month
from core.tables import Tenant
from parley.cli import app as cli
from tests.bot_gateway.conftest import OPERATOR, Api, running_api
from tests.support.data import intent_csv

SMALL_CSV = b"text,label\nhello there,greet\nbye now,bye\n"


@pytest.fixture(scope="module", params=["sqlite"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("quotas"), warm_encoder=False) as api:
        yield api


def set_quotas(api: Api, tenant_id: str, **quotas: Any) -> dict[str, Any]:
    r = api.client.patch(f"/v1/tenants/{tenant_id}", json={"quotas": quotas}, headers=OPERATOR)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def assert_refused(r: Any, status: int, quota: str, limit: int, used: float) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == "quota_exceeded" and body["quota"] == quota
    assert body["limit"] == limit and body["used"] == used
    assert quota in body["message"]
    assert ("Retry-After" in r.headers) == (status == 429)


def predict(api: Api, text: str = "Send it to Paris on Monday") -> Any:
    return api.client.post(
        "/v1/models/prebuilt-entities/predict", json={"text": text}, headers=api.a
    )


def usage_totals(api: Api) -> dict[str, float]:
    r = api.client.get("/v1/usage", headers=api.a)
    assert r.status_code == 200, r.text
    return r.json()["totals"]  # type: ignore[no-any-return]


def test_predictions_per_month_refuses_with_429_until_the_month_ends(api: Api) -> None:
    before = usage_totals(api).get("predictions", 0)
    set_quotas(api, api.a_tenant, predictions_per_month=before + 2)
    assert predict(api).status_code == 200
    assert predict(api).status_code == 200
    refused = predict(api)
    assert_refused(refused, 429, "predictions_per_month", before + 2, before + 2)
    now = datetime.now(UTC)
    assert abs(int(refused.headers["Retry-After"]) - (next_month(now) - now).total_seconds()) < 60
    assert usage_totals(api)["predictions"] == before + 2  # the refused one was not counted
    # the Rasa-compatible route and tenant B are not affected by A's quota
    other = api.client.post(
        "/v1/models/prebuilt-entities/predict", json={"text": "hi"}, headers=api.b
    )
    assert other.status_code == 200
    set_quotas(api, api.a_tenant, predictions_per_month=None)
    assert predict(api).status_code == 200


def test_models_quota_refuses_training_with_403_and_creates_nothing(api: Api) -> None:
    dataset = api.upload(intent_csv(), name="for-models").json()
    set_quotas(api, api.a_tenant, models=0)
    before = api.client.get("/v1/models", headers=api.a).json()
    r = api.client.post("/v1/models", json={"dataset_id": dataset["id"]}, headers=api.a)
    assert_refused(r, 403, "models", 0, 0)
    assert api.client.get("/v1/models", headers=api.a).json() == before
    set_quotas(api, api.a_tenant, models=None)


def test_train_minutes_per_day_refuses_with_429(api: Api) -> None:
    gateway = api.client.app.state.gateway  # type: ignore[attr-defined]
    gateway.usage.record(api.a_tenant, "train_seconds", 150.0, dimension="cpu")  # 2.5 minutes
    gateway.usage.flush()
    dataset = api.upload(intent_csv(), name="for-minutes").json()
    set_quotas(api, api.a_tenant, train_minutes_per_day=2)
    before = api.client.get("/v1/models", headers=api.a).json()
    r = api.client.post("/v1/models", json={"dataset_id": dataset["id"]}, headers=api.a)
    assert_refused(r, 429, "train_minutes_per_day", 2, 2.5)
    assert int(r.headers["Retry-After"]) <= 86_400
    assert api.client.get("/v1/models", headers=api.a).json() == before
    set_quotas(api, api.a_tenant, train_minutes_per_day=None)


def test_storage_bytes_refuses_uploads_with_403_and_stores_nothing(api: Api) -> None:
    stored = api.client.get("/v1/usage", headers=api.a).json()["storage_bytes"]
    assert stored > 0  # the datasets uploaded above
    set_quotas(api, api.a_tenant, storage_bytes=stored + 10)
    before = api.client.get("/v1/datasets", headers=api.a).json()
    r = api.upload(SMALL_CSV, name="too-much")
    assert_refused(r, 403, "storage_bytes", stored + 10, stored)
    assert api.client.get("/v1/datasets", headers=api.a).json() == before
    assert api.client.get("/v1/usage", headers=api.a).json()["storage_bytes"] == stored
    assert api.upload(SMALL_CSV, name="b's", headers=api.b).status_code == 201  # B: no quota
    set_quotas(api, api.a_tenant, storage_bytes=None)
    assert api.upload(SMALL_CSV, name="fits").status_code == 201


def test_quota_updates_are_checked(api: Api) -> None:
    for bad in ({"models": -1}, {"model": 3}, {"storage_bytes": "lots"}):
        r = api.client.patch(f"/v1/tenants/{api.a_tenant}", json={"quotas": bad}, headers=OPERATOR)
        assert r.status_code == 422, (bad, r.text)
    r = api.client.patch(
        "/v1/tenants/ten_missing", json={"quotas": {"models": 1}}, headers=OPERATOR
    )
    assert r.status_code == 404
    body = set_quotas(api, api.a_tenant, models=7, storage_bytes=10**9)
    assert body["quotas"] == {"models": 7, "storage_bytes": 10**9}
    assert set_quotas(api, api.a_tenant, models=None, storage_bytes=None)["quotas"] == {}


def test_cli_sets_and_clears_quotas_and_rates(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = api.client.app.state.gateway.settings  # type: ignore[attr-defined]
    monkeypatch.setenv("PARLEY_DB__URL", settings.database_url)
    monkeypatch.setenv("PARLEY_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "tenants", "update", "tenant-b", "--json",
            "--quota", "predictions_per_month=1000",
            "--quota", "models=3",
            "--rate", "predict_tenant=50/100",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["quotas"] == {"predictions_per_month": 1000, "models": 3}
    assert data["rate_limits"] == {"predict_tenant": {"per_second": 50.0, "burst": 100}}
    with session_scope(get_engine(settings.database_url)) as session:
        tenant = session.get(Tenant, data["tenant_id"])
        assert tenant is not None
        limits = TenantLimits.of(tenant)
    assert limits.quotas == {"predictions_per_month": 1000, "models": 3}
    assert limits.rates["predict_tenant"].burst == 100

    result = runner.invoke(
        cli,
        [
            "tenants",
            "update",
            "tenant-b",
            "--quota",
            "models=none",
            "--rate",
            "predict_tenant=none",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "predictions_per_month" in result.output and "models" not in result.output

    bad = runner.invoke(cli, ["tenants", "update", "tenant-b", "--quota", "models=lots"])
    assert bad.exit_code == 1 and "whole number" in bad.output
    bad = runner.invoke(cli, ["tenants", "update", "tenant-b", "--rate", "predict=1/1"])
    assert bad.exit_code == 1 and "unknown rate" in bad.output
    runner.invoke(cli, ["tenants", "update", "tenant-b", "--quota", "predictions_per_month=none"])
