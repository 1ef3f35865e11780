"""A dataset file with bad lines: the 422 of a small upload and the failed dataset of a large
one (imported in the background) both name each line at fault, as ``details: [{field, line,
message}]``, the shape the Studio shows beside the message."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.bot_gateway.conftest import Api, running_api
from tests.support.data import intent_csv, intent_rows
from tests.support.images import encode, shape_image, zip_bytes

SYNC_IMPORT_BYTES = 2000


@pytest.fixture(scope="module", params=[pytest.param("sqlite", id="sqlite")])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    limits = {"sync_import_bytes": SYNC_IMPORT_BYTES}
    with running_api(
        request, tmp_path_factory.mktemp("imports"), warm_encoder=False, limits=limits
    ) as api:
        yield api


def csv_with_bad_lines(rows: int) -> bytes:
    """``rows`` good rows, then an empty text at line rows+2 and a missing label at rows+3."""
    pool = intent_rows()
    good = [(f"{pool[i % len(pool)][0]} {i}", pool[i % len(pool)][1]) for i in range(rows)]
    return intent_csv([*good, ("", "greet"), ("bye now", "")])


def wait_imported(api: Api, dataset_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        ds = api.client.get(f"/v1/datasets/{dataset_id}", headers=api.a).json()
        if ds["status"] != "processing":
            return dict(ds)
        assert time.monotonic() < deadline, "still importing"
        time.sleep(0.05)


def test_a_small_file_answers_422_with_each_line(api: Api) -> None:
    data = csv_with_bad_lines(3)
    assert len(data) < SYNC_IMPORT_BYTES
    r = api.upload(data)
    assert r.status_code == 422 and r.json()["error"] == "invalid_dataset"
    assert r.json()["details"] == [
        {"field": "line 5", "line": 5, "message": "empty text"},
        {"field": "line 6", "line": 6, "message": "missing label"},
    ]
    assert {"line": 5, "message": "empty text"} in r.json()["errors"]  # as before


def test_a_large_file_fails_in_the_background_with_each_line(api: Api) -> None:
    data = csv_with_bad_lines(200)
    assert len(data) > SYNC_IMPORT_BYTES
    r = api.upload(data)
    assert r.status_code == 202, r.text
    ds = wait_imported(api, r.json()["id"])
    assert ds["status"] == "failed"
    assert "line 202: empty text" in ds["status_message"]
    assert ds["details"] == [
        {"field": "line 202", "line": 202, "message": "empty text"},
        {"field": "line 203", "line": 203, "message": "missing label"},
    ]
    assert ds["extras"] == {}  # the problems are not shown twice


def test_an_image_zip_names_the_member_and_line(api: Api) -> None:
    image = encode(shape_image("circle", 1))
    files = {"a.jpg": image, "labels.csv": b"file,labels\na.jpg,red\nmissing.jpg,blue\n"}
    r = api.upload(zip_bytes(files), type="image-multi-label", filename="m.zip")
    body = r.json() if r.status_code == 422 else wait_imported(api, r.json()["id"])
    details = body["details"]
    assert details and details[0]["field"].startswith("labels.csv line 3"), details
    assert details[0]["line"] == 3
