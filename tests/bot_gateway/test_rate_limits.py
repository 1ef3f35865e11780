"""Rate limits per API key and per tenant (bot_gateway.ratelimit): RateLimit-* headers on every
answer of a limited route, 429 + Retry-After past the burst, tenants' buckets apart, operator
overrides, and the switch that turns them off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot_gateway.app import create_app
from bot_gateway.ratelimit import ROUTE_CLASSES
from tests.bot_gateway.conftest import OPERATOR, Api, running_api

SLOW = {"per_second": 0.05, "burst": 3}  # 3 at once, then one every 20 s


@pytest.fixture(scope="module", params=["sqlite"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("limits"), warm_encoder=False) as api:
        yield api


def set_rates(api: Api, tenant_id: str, **rates: Any) -> dict[str, Any]:
    r = api.client.patch(f"/v1/tenants/{tenant_id}", json={"rate_limits": rates}, headers=OPERATOR)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def new_key(api: Api, headers: dict[str, str], *scopes: str) -> dict[str, str]:
    r = api.client.post("/v1/keys", json={"scopes": list(scopes)}, headers=headers)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


def tenant_of(api: Api, headers: dict[str, str]) -> str:
    r = api.client.get("/v1/usage", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["tenant_id"]  # type: ignore[no-any-return]


def predict_unknown(api: Api, headers: dict[str, str]) -> Any:
    """A predict call (class ``predict``) that needs no model: 404 unless limited."""
    return api.client.post("/v1/models/mdl_none/predict", json={"text": "hi"}, headers=headers)


def test_every_answer_of_a_limited_route_carries_the_headers(api: Api) -> None:
    ok = api.client.get("/v1/datasets", headers=api.a)
    assert ok.status_code == 200
    assert ok.headers["RateLimit-Limit"] == "300"  # api_key's default burst: the tighter bucket
    assert 0 <= int(ok.headers["RateLimit-Remaining"]) < 300
    assert int(ok.headers["RateLimit-Reset"]) >= 0
    missing = api.client.get("/v1/datasets/ds_missing", headers=api.a)
    assert missing.status_code == 404 and "RateLimit-Remaining" in missing.headers
    predict = predict_unknown(api, api.a)
    assert predict.status_code == 404 and predict.headers["RateLimit-Limit"] == "400"
    # unauthenticated and unkeyed routes take no token and say nothing
    assert "RateLimit-Limit" not in api.client.get("/v1/datasets").headers
    assert "RateLimit-Limit" not in api.client.get("/v1/health").headers


def test_past_the_burst_429_with_retry_after_for_that_key_only(api: Api) -> None:
    set_rates(api, api.a_tenant, predict_key=SLOW)
    key = new_key(api, api.a, "predict")
    remaining = [int(predict_unknown(api, key).headers["RateLimit-Remaining"]) for _ in range(3)]
    assert remaining == [2, 1, 0]
    refused = predict_unknown(api, key)
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "rate_limited" and body["limit"] == "predict_key"
    assert 15 <= int(refused.headers["Retry-After"]) <= 20
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["RateLimit-Limit"] == "3"
    # another key of the same tenant has its own bucket; other classes are not touched
    assert predict_unknown(api, new_key(api, api.a, "predict")).status_code == 404
    assert api.client.get("/v1/models", headers=key).status_code == 200
    set_rates(api, api.a_tenant, predict_key=None)  # cleared: the server's default again
    assert predict_unknown(api, new_key(api, api.a, "predict")).headers["RateLimit-Limit"] == "400"


def test_one_tenants_flood_does_not_touch_another_tenants_bucket(api: Api) -> None:
    set_rates(api, api.a_tenant, predict_tenant={"per_second": 0.05, "burst": 5})
    statuses = [predict_unknown(api, new_key(api, api.a, "predict")).status_code for _ in range(8)]
    assert statuses[:5] == [404] * 5 and set(statuses[5:]) == {429}  # fresh keys: the tenant's
    other = predict_unknown(api, api.b)
    assert other.status_code == 404
    assert other.headers["RateLimit-Limit"] == "400"  # tenant B: its own, default buckets
    assert int(other.headers["RateLimit-Remaining"]) >= 398
    flooded = predict_unknown(api, api.a)
    assert flooded.status_code == 429 and flooded.json()["limit"] == "predict_tenant"
    set_rates(api, api.a_tenant, predict_tenant=None)
    assert predict_unknown(api, api.a).status_code == 404


def test_overrides_are_checked_and_need_the_operator(api: Api) -> None:
    r = api.client.patch(
        f"/v1/tenants/{api.a_tenant}", json={"rate_limits": {"predict": SLOW}}, headers=OPERATOR
    )
    assert r.status_code == 422 and "predict" in r.text
    r = api.client.patch(
        f"/v1/tenants/{api.a_tenant}",
        json={"rate_limits": {"api_key": {"per_second": 0, "burst": 1}}},
        headers=OPERATOR,
    )
    assert r.status_code == 422
    r = api.client.patch(
        f"/v1/tenants/{api.a_tenant}", json={"rate_limits": {"api_key": SLOW}}, headers=api.a
    )
    assert r.status_code == 401  # a tenant's key is not the operator's token
    assert api.client.get("/v1/datasets", headers=api.a).headers["RateLimit-Limit"] == "300"


def test_uploads_and_training_have_their_own_buckets(api: Api) -> None:
    set_rates(api, api.a_tenant, upload_key={"per_second": 0.05, "burst": 1})
    key = new_key(api, api.a, "train")
    first = api.upload(b"text,label\nhello there,greet\nbye now,bye\n", headers=key)
    assert first.status_code == 201 and first.headers["RateLimit-Limit"] == "1"
    second = api.upload(b"text,label\nhello there,greet\nbye now,bye\n", headers=key)
    assert second.status_code == 429 and second.json()["limit"] == "upload_key"
    listed = api.client.get("/v1/datasets", headers=key)
    assert listed.status_code == 200 and len(listed.json()) >= 1  # api class: untouched
    train = api.client.post("/v1/models", json={"dataset_id": "ds_none"}, headers=key)
    assert train.headers["RateLimit-Limit"] == "20"  # train_key's default burst
    set_rates(api, api.a_tenant, upload_key=None)


@pytest.mark.filterwarnings("ignore:Duplicate Operation ID")  # GET and POST /webhooks/{id}
def test_every_classified_route_exists(api: Api) -> None:
    """The classification table names real routes (a renamed route must be reclassified)."""
    paths = api.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert set(ROUTE_CLASSES) <= routes, set(ROUTE_CLASSES) - routes


def test_rate_limits_can_be_turned_off(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from fastapi.testclient import TestClient

    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'off.db'}",
        rate_limits={"enabled": False, "api_key": {"per_second": 0.01, "burst": 1}},
    )
    with TestClient(create_app(settings, warm_encoder=False)) as client:
        created = client.post("/v1/tenants", json={"name": "t"}, headers=OPERATOR).json()
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        answers = [client.get("/v1/datasets", headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("RateLimit-Limit" not in a.headers for a in answers)


def test_channel_webhooks_are_limited_per_tenant_of_the_channel(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import httpx
    from fastapi.testclient import TestClient

    import tests.connectors.telegram_kit  # noqa: F401  (registers the kit)
    from tests.conftest import make_settings
    from tests.connectors.kits import KITS

    def telegram(req: httpx.Request) -> httpx.Response:  # setWebhook and friends: all fine
        return httpx.Response(200, json={"ok": True, "result": True})

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'hooks.db'}")
    app = create_app(settings, warm_encoder=False, http_transport=httpx.MockTransport(telegram))
    with TestClient(app) as client:
        channels = {}
        for name in ("a", "b"):
            tenant = client.post("/v1/tenants", json={"name": name}, headers=OPERATOR).json()
            key = {"Authorization": f"Bearer {tenant['api_key']}"}
            bot = client.post("/v1/bots", json={"name": "hooked"}, headers=key).json()
            r = client.post(
                f"/v1/bots/{bot['id']}/channels",
                json={"type": "telegram", "config": KITS["telegram"].config()},
                headers=key,
            )
            assert r.status_code == 201, r.text
            channels[name] = (tenant["tenant_id"], r.json()["id"])
        a_tenant, a_channel = channels["a"]
        r = client.patch(
            f"/v1/tenants/{a_tenant}",
            json={"rate_limits": {"webhook_tenant": {"per_second": 0.05, "burst": 2}}},
            headers=OPERATOR,
        )
        assert r.status_code == 200, r.text
        unsigned = [client.post(f"/webhooks/{a_channel}", json={}) for _ in range(3)]
        assert [u.status_code for u in unsigned] == [401, 401, 429]  # counted before the check
        assert unsigned[0].headers["RateLimit-Limit"] == "2"
        assert (
            unsigned[2].json()["limit"] == "webhook_tenant" and "Retry-After" in unsigned[2].headers
        )
        other = client.post(f"/webhooks/{channels['b'][1]}", json={})
        assert other.status_code == 401 and other.headers["RateLimit-Limit"] == "200"
        assert client.post("/webhooks/chn_missing", json={}).status_code == 404
