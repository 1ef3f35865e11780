"""A NUL character in a request's path is 404, in its query string 422, on SQLite and PostgreSQL
alike (PostgreSQL cannot compare text holding one: these were 500s there, and SQLite answered
``?q=%00`` with every example)."""

from __future__ import annotations

import pytest

from tests.bot_gateway.conftest import Api
from tests.support.data import intent_csv


@pytest.fixture(scope="module")
def dataset_id(api: Api) -> str:
    r = api.upload(intent_csv(), name="intents")
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.parametrize(
    ("url", "status", "error"),
    [
        ("/v1/datasets/{ds}/examples?q=%00", 422, "invalid_input"),
        ("/v1/datasets/{ds}/examples?label=x%00y", 422, "invalid_input"),
        ("/v1/analytics?bot_id=%00", 422, "invalid_input"),
        ("/v1/datasets/%00", 404, "not_found"),
        ("/v1/models/ab%00/held-out", 404, "not_found"),
    ],
)
def test_a_nul_in_the_path_is_404_and_in_the_query_422(
    api: Api, dataset_id: str, url: str, status: int, error: str
) -> None:
    r = api.client.get(url.format(ds=dataset_id), headers=api.a)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and "NUL" in r.json()["message"]


def test_the_same_requests_without_the_nul_are_answered(api: Api, dataset_id: str) -> None:
    r = api.client.get(f"/v1/datasets/{dataset_id}/examples?q=order", headers=api.a)
    assert r.status_code == 200 and r.json()["total"] > 0
    assert all("order" in e["text"] for e in r.json()["examples"])
    assert api.client.get("/v1/datasets/ds_nothere", headers=api.a).status_code == 404
