"""Tenants, API keys, scopes and tenant isolation over HTTP."""

from __future__ import annotations

from tests.bot_gateway.conftest import OPERATOR, Api
from tests.support.data import intent_csv


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_operator_token_guards_tenant_creation(api: Api) -> None:
    c = api.client
    assert c.post("/v1/tenants", json={"name": "x"}).status_code == 401
    r = c.post("/v1/tenants", json={"name": "x"}, headers=bearer("wrong"))
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    # a tenant's admin key is not an operator token
    assert c.post("/v1/tenants", json={"name": "x"}, headers=api.a).status_code == 401
    r = c.post("/v1/tenants", json={"name": "tenant-a"}, headers=OPERATOR)
    assert r.status_code == 409 and "already exists" in r.json()["message"]


def test_missing_wrong_and_malformed_keys_are_401(api: Api) -> None:
    for headers in ({}, bearer("pk_nope"), {"Authorization": "Basic abc"}):
        r = api.client.get("/v1/datasets", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"


def test_scoped_key_is_refused_outside_its_scope(api: Api) -> None:
    r = api.client.post("/v1/keys", json={"scopes": ["predict"], "name": "web"}, headers=api.a)
    assert r.status_code == 201
    body = r.json()
    assert body["scopes"] == ["predict"] and body["api_key"].startswith("pk_")
    predict_only = bearer(body["api_key"])
    r = api.upload(intent_csv(), headers=predict_only)
    assert r.status_code == 403
    assert r.json()["missing_scope"] == "train" and "'train'" in r.json()["message"]
    assert api.client.get("/v1/keys", headers=predict_only).status_code == 403
    assert api.client.get("/v1/models", headers=predict_only).status_code == 200


def test_revoked_key_stops_working_and_is_listed(api: Api) -> None:
    key = api.client.post("/v1/keys", json={"scopes": ["train"]}, headers=api.a).json()
    assert api.client.get("/v1/datasets", headers=bearer(key["api_key"])).status_code == 200
    r = api.client.delete(f"/v1/keys/{key['id']}", headers=api.a)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = api.client.get("/v1/datasets", headers=bearer(key["api_key"]))
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    listed = {k["id"]: k for k in api.client.get("/v1/keys", headers=api.a).json()}
    assert listed[key["id"]]["revoked_at"] is not None
    assert all("api_key" not in k for k in listed.values())  # secrets are shown once


def test_unknown_scope_is_422(api: Api) -> None:
    r = api.client.post("/v1/keys", json={"scopes": ["root"]}, headers=api.a)
    assert r.status_code == 422 and "admin, train, predict" in r.json()["message"]


def test_other_tenants_ids_are_404_exactly_like_missing_ids(api: Api, trained: dict) -> None:
    dataset_id = trained["dataset_id"]
    model_id = trained["id"]
    api.client.put("/v1/aliases/shared-name", json={"model_id": model_id}, headers=api.a)
    c = api.client
    cases = [
        ("GET", f"/v1/datasets/{dataset_id}", None),
        ("GET", f"/v1/datasets/{dataset_id}/examples", None),
        ("POST", f"/v1/datasets/{dataset_id}/examples", [{"text": "x", "label": "y"}]),
        ("DELETE", f"/v1/datasets/{dataset_id}", None),
        ("GET", f"/v1/models/{model_id}", None),
        ("GET", f"/v1/models/{model_id}/learning-curve", None),
        ("POST", f"/v1/models/{model_id}/cancel", None),
        ("DELETE", f"/v1/models/{model_id}", None),
        ("POST", f"/v1/models/{model_id}/predict", {"text": "hello"}),
        ("POST", "/v1/models/shared-name/predict", {"text": "hello"}),
        ("PUT", "/v1/aliases/mine", {"model_id": model_id}),
        ("POST", "/v1/models", {"dataset_id": dataset_id}),
    ]
    for method, path, body in cases:
        theirs = c.request(method, path, json=body, headers=api.b)
        assert theirs.status_code == 404, (method, path, theirs.text)
        missing = c.request(
            method,
            path.replace(dataset_id, "ds_0000000000000000")
            .replace(model_id, "mdl_0000000000000000")
            .replace("shared-name", "no-such-alias"),
            json=body,
            headers=api.b,
        )
        assert missing.status_code == 404
        assert theirs.json()["error"] == missing.json()["error"] == "not_found"
        assert "tenant" not in theirs.json()["message"]
    # and nothing of A's shows in B's listings
    assert c.get("/v1/datasets", headers=api.b).json() == []
    assert c.get("/v1/models", headers=api.b).json() == []
    assert c.get("/v1/aliases", headers=api.b).json() == []
    # A's data is untouched by B's attempts
    assert c.get(f"/v1/models/{model_id}", headers=api.a).json()["status"] == "succeeded"
    assert c.get(f"/v1/datasets/{dataset_id}", headers=api.a).status_code == 200
    key_id = c.get("/v1/keys", headers=api.a).json()[0]["id"]
    assert c.delete(f"/v1/keys/{key_id}", headers=api.b).status_code == 404
