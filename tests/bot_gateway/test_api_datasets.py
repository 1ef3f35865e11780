"""Datasets over HTTP: every import format, validation that names the line, limits."""

from __future__ import annotations

import json
import time

from tests.bot_gateway.conftest import Api
from tests.support.data import RASA_NLU, intent_csv, intent_rows


def test_csv_upload_is_ready_with_counts(api: Api) -> None:
    r = api.upload(intent_csv(), name="orders")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["status"] == "ready" and ds["type"] == "text-intent" and ds["name"] == "orders"
    assert ds["num_examples"] == 32 and ds["num_labels"] == 4
    assert {lab["name"]: lab["num_examples"] for lab in ds["labels"]} == {
        "goodbye": 8,
        "greet": 8,
        "refund": 8,
        "track_order": 8,
    }
    assert api.client.get(f"/v1/datasets/{ds['id']}", headers=api.a).json() == ds
    assert ds["id"] in [d["id"] for d in api.client.get("/v1/datasets", headers=api.a).json()]


def test_examples_pages_filters_appends_and_delete(api: Api) -> None:
    ds = api.upload(intent_csv()).json()
    url = f"/v1/datasets/{ds['id']}/examples"
    page = api.client.get(url, params={"offset": 2, "limit": 5}, headers=api.a).json()
    assert page["total"] == 32 and len(page["examples"]) == 5
    assert page["examples"][0]["text"] == intent_rows()[2][0]
    assert page["examples"][0]["line"] == 4  # header is line 1
    greet = api.client.get(url, params={"label": "greet"}, headers=api.a).json()
    assert greet["total"] == 8 and {e["label"] for e in greet["examples"]} == {"greet"}
    r = api.client.post(
        url,
        json=[{"text": "howdy", "label": "greet"}, {"text": "hello", "label": "greet"}],
        headers=api.a,
    )
    assert r.status_code == 201, r.text
    assert r.json()["added"] == 1 and r.json()["duplicates"] == 1
    assert r.json()["dataset"]["num_examples"] == 33
    r = api.client.post(
        url, files={"file": ("more.csv", b"text,label\nbye bye,goodbye\n")}, headers=api.a
    )
    assert r.status_code == 201 and r.json()["added"] == 1
    r = api.client.post(url, json=[{"text": "", "label": "greet"}], headers=api.a)
    assert r.status_code == 422 and "empty text" in r.json()["message"]
    assert api.client.delete(f"/v1/datasets/{ds['id']}", headers=api.a).status_code == 204
    assert api.client.get(f"/v1/datasets/{ds['id']}", headers=api.a).status_code == 404


def test_tsv_json_jsonl_and_json_body(api: Api) -> None:
    rows = intent_rows()
    tsv = "text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows)
    jsn = json.dumps([{"text": t, "label": lab} for t, lab in rows])
    jsonl = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows)
    for filename, data in (("d.tsv", tsv), ("d.json", jsn), ("d.jsonl", jsonl)):
        r = api.upload(data.encode(), filename=filename)
        assert r.status_code == 201, (filename, r.text)
        assert r.json()["num_examples"] == len(rows)
    r = api.client.post(
        "/v1/datasets",
        json={
            "name": "inline",
            "type": "text-intent",
            "examples": [{"text": t, "label": lab} for t, lab in rows],
        },
        headers=api.a,
    )
    assert r.status_code == 201 and r.json()["num_examples"] == len(rows)


def test_rasa_nlu_keeps_entities_and_extras(api: Api) -> None:
    r = api.upload(RASA_NLU.encode(), filename="nlu.yml", type="text-entities")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["num_examples"] == 5
    assert ds["extras"]["synonyms"] == {"headphones": ["earphones", "headset"]}
    assert ds["extras"]["lookups"]["product"] == ["headphones", "sofa"]
    assert "order_id" in ds["extras"]["regexes"]
    examples = api.client.get(f"/v1/datasets/{ds['id']}/examples", headers=api.a).json()["examples"]
    first = examples[0]
    assert first["text"] == "where is order A-1932?" and first["label"] == "track_order"
    ent = first["entities"][0]
    assert first["text"][ent["start"] : ent["end"]] == "A-1932" and ent["entity"] == "order_id"


def test_rows_at_fault_are_named(api: Api) -> None:
    data = b"text,label\nhello,greet\n,greet\nbye,\n"
    r = api.upload(data)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_dataset"
    assert "line 3: empty text" in body["message"] and "line 4: missing label" in body["message"]
    assert {"line": 3, "message": "empty text"} in body["errors"]
    # nothing half-imported is left behind
    assert all(d["num_examples"] != 1 for d in api.client.get("/v1/datasets", headers=api.a).json())


def test_bad_files_get_clear_422s(api: Api) -> None:
    cases = {
        "not utf-8": ("text,label\ncaf\xe9,greet\n".encode("latin-1"), "d.csv", "UTF-8"),
        "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "d.csv", "binary"),
        "empty": (b"", "d.csv", "empty"),
        "missing column": (b"text\nhello\n", "d.csv", "missing column"),
        "extra column": (b"text,label,id\nhi,greet,1\n", "d.csv", "unexpected column"),
        "field count": (b"text,label\nhi,greet,extra\n", "d.csv", "line 2"),
        "malformed json": (b'[{"text": "hi", "label": }]', "d.json", "malformed JSON"),
        "bad jsonl": (b'{"text": "hi", "label": "a"}\n{oops\n', "d.jsonl", "line 2"),
        "bad yaml": (b"nlu:\n- intent: a\n  examples: |\n    - x\n  : :\n", "nlu.yml", "YAML"),
        "unknown extension": (b"text,label\nhi,a\n", "d.xlsx", "extension"),
    }
    before = len(api.client.get("/v1/datasets", headers=api.a).json())
    for name, (data, filename, needle) in cases.items():
        r = api.upload(data, filename=filename)
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert needle.lower() in r.json()["message"].lower(), (name, r.json())
    assert len(api.client.get("/v1/datasets", headers=api.a).json()) == before
    assert api.client.get("/v1/health").json()["status"] == "ok"


def test_unknown_type_lists_known_types(api: Api) -> None:
    r = api.upload(intent_csv(), type="audio")
    assert r.status_code == 422
    assert "text-intent" in r.json()["message"] and "image-detection" in r.json()["message"]
    r = api.client.post(
        "/v1/datasets", files={"file": ("d.csv", intent_csv())}, data={"name": "x"}, headers=api.a
    )
    assert r.status_code == 422 and "type" in r.json()["message"]


def test_image_types_are_known_but_have_no_importer_yet(api: Api) -> None:
    r = api.upload(b"{}", filename="d.json", type="image")
    assert r.status_code == 422
    assert "not available" in r.json()["message"] or "cannot hold" in r.json()["message"]


def test_duplicates_are_counted_and_reported(api: Api) -> None:
    r = api.upload(b"text,label\nhi,greet\nhi,greet\nbye,goodbye\nhi,greet\n")
    assert r.status_code == 201
    ds = r.json()
    assert ds["num_examples"] == 2 and ds["num_duplicates"] == 2
    assert "2 duplicate examples" in ds["status_message"] and "line 3" in ds["status_message"]


def test_oversize_upload_is_413_and_server_keeps_serving(api: Api) -> None:
    big = b"text,label\n" + b"x" * 250_000 + b",a\n"
    r = api.upload(big)
    assert r.status_code == 413
    assert r.json()["limit"] == "max_upload_bytes"
    assert "PARLEY_LIMITS__MAX_UPLOAD_BYTES" in r.json()["message"]
    assert api.client.get("/v1/health").status_code == 200


def test_large_file_imports_in_the_background(api: Api) -> None:
    rows = [(f"example number {i} for the import", f"label{i % 5}") for i in range(3000)]
    data = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)
    assert len(data) > 100_000
    r = api.upload(data.encode())
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "processing"
    deadline = time.monotonic() + 60
    while (ds := api.client.get(f"/v1/datasets/{r.json()['id']}", headers=api.a).json())[
        "status"
    ] == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert ds["status"] == "ready" and ds["num_examples"] == 3000 and ds["num_labels"] == 5


def test_large_bad_file_fails_with_its_message(api: Api) -> None:
    data = "text,label\n" + "".join(f"row number {i} of many,a\n" for i in range(5000)) + ",b\n"
    assert 100_000 < len(data) < 200_000
    r = api.upload(data.encode())
    assert r.status_code == 202
    deadline = time.monotonic() + 60
    while (ds := api.client.get(f"/v1/datasets/{r.json()['id']}", headers=api.a).json())[
        "status"
    ] == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert ds["status"] == "failed" and "line 5002: empty text" in ds["status_message"]


def test_malformed_request_bodies(api: Api) -> None:
    r = api.client.post(
        "/v1/datasets", content=b"{not json", headers={**api.a, "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    r = api.client.post(
        "/v1/models", content=b"[1,2", headers={**api.a, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = api.client.get("/v1/nope", headers=api.a)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_conll_upload_and_broken_bio_named_by_line(api: Api) -> None:
    good = b"ship\tO\nto\tO\nNew\tB-city\nYork\tI-city\n\nhello\tO\n"
    r = api.upload(good, filename="slots.conll", type="text-entities")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["num_examples"] == 2
    first = api.client.get(f"/v1/datasets/{ds['id']}/examples", headers=api.a).json()["examples"][0]
    assert first["text"] == "ship to New York"
    span = first["entities"][0]
    assert first["text"][span["start"] : span["end"]] == "New York" and span["entity"] == "city"
    broken = b"ship\tO\nto\tO\nYork\tI-city\n"
    r = api.upload(broken, filename="slots.bio", type="text-entities")
    assert r.status_code == 422 and "line 3" in r.json()["message"]
    assert "B-city" in r.json()["message"]
    r = api.upload(good, filename="slots.conll", type="text-intent")
    assert r.status_code == 422 and "conll" in r.json()["message"]
