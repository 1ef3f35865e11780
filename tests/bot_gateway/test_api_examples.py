"""One example at a time over HTTP: relabel or correct a text example, change an image's
label, labels or boxes, delete one, search examples, an image's thumbnail. The dataset's
counts and content hash follow every change; another tenant's ids are not found; bad input
answers 422 naming what to send."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from core.db import session_scope
from tests.bot_gateway.conftest import Api, running_api
from tests.support.data import intent_csv
from tests.support.images import detection_zip, encode, folder_zip, shape_image, zip_bytes
from training.datasets.service import snapshot


@pytest.fixture(scope="module", params=[pytest.param("sqlite", id="sqlite")])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("examples"), warm_encoder=False) as api:
        yield api


def examples(api: Api, dataset_id: str, **params: Any) -> dict[str, Any]:
    r = api.client.get(f"/v1/datasets/{dataset_id}/examples", params=params, headers=api.a)
    assert r.status_code == 200, r.text
    return dict(r.json())


def counts(api: Api, dataset_id: str) -> dict[str, int]:
    ds = api.client.get(f"/v1/datasets/{dataset_id}", headers=api.a).json()
    return {lab["name"]: lab["num_examples"] for lab in ds["labels"]} | {"*": ds["num_examples"]}


def content_hash(api: Api, dataset_id: str) -> str:
    gateway = api.client.app.state.gateway  # type: ignore[attr-defined]
    with session_scope(gateway.engine) as session:
        return snapshot(session, api.a_tenant, dataset_id).content_hash


def test_relabel_edit_and_delete_a_text_example(api: Api) -> None:
    ds = api.upload(intent_csv(), name="intents").json()
    url = f"/v1/datasets/{ds['id']}/examples"
    before, hash_before = counts(api, ds["id"]), content_hash(api, ds["id"])
    first = examples(api, ds["id"], label="greet")["examples"][0]
    r = api.client.patch(f"{url}/{first['id']}", json={"label": "goodbye"}, headers=api.a)
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "goodbye" and r.json()["text"] == first["text"]
    after = counts(api, ds["id"])
    assert after["greet"] == before["greet"] - 1 and after["goodbye"] == before["goodbye"] + 1
    assert content_hash(api, ds["id"]) != hash_before
    r = api.client.patch(f"{url}/{first['id']}", json={"text": "  farewell, bot "}, headers=api.a)
    assert r.status_code == 200 and r.json()["text"] == "farewell, bot"
    assert examples(api, ds["id"], q="FAREWELL")["examples"][0]["id"] == first["id"]
    # back as it was: the same content hash as before the edits
    r = api.client.patch(
        f"{url}/{first['id']}", json={"text": first["text"], "label": "greet"}, headers=api.a
    )
    assert r.status_code == 200 and content_hash(api, ds["id"]) == hash_before
    # bad edits say what to send, and change nothing
    other = examples(api, ds["id"], label="greet")["examples"][1]
    for body, status, words in (
        ({"text": ""}, 422, "empty text"),
        ({"label": " "}, 422, "missing label"),
        ({"boxes": []}, 422, "image examples"),
        ({"colour": "red"}, 422, "colour"),
        ({"text": other["text"]}, 409, "already has an example"),
    ):
        r = api.client.patch(f"{url}/{first['id']}", json=body, headers=api.a)
        assert r.status_code == status and words in r.json()["message"], (body, r.text)
    assert content_hash(api, ds["id"]) == hash_before
    # delete: gone, and the counts follow
    assert api.client.delete(f"{url}/{first['id']}", headers=api.a).status_code == 204
    assert counts(api, ds["id"])["greet"] == before["greet"] - 1
    assert counts(api, ds["id"])["*"] == before["*"] - 1
    assert api.client.delete(f"{url}/{first['id']}", headers=api.a).status_code == 404
    assert api.client.patch(f"{url}/{first['id']}", json={}, headers=api.a).status_code == 404


def test_search_with_a_label_and_paging(api: Api) -> None:
    rows = [("where is my order", "track"), ("WHERE IS the refund", "refund")]
    rows += [("100% sure", "other"), ("my_order_id", "other"), ("hello", "greet")]
    ds = api.upload(intent_csv(rows)).json()
    assert examples(api, ds["id"], q="where is")["total"] == 2
    assert [
        e["text"] for e in examples(api, ds["id"], q="where is", label="refund")["examples"]
    ] == ["WHERE IS the refund"]
    # % and _ are plain characters, not wildcards
    assert [e["text"] for e in examples(api, ds["id"], q="%")["examples"]] == ["100% sure"]
    assert examples(api, ds["id"], q="y_o")["total"] == 1
    page = examples(api, ds["id"], q="R", limit=2, offset=1)
    assert page["total"] == 4 and len(page["examples"]) == 2
    r = api.client.get(f"/v1/datasets/{ds['id']}/examples?q={'x' * 201}", headers=api.a)
    assert r.status_code == 422


def test_entities_must_follow_a_changed_text(api: Api) -> None:
    text = "where is order A-1932?"
    spans = [{"start": 15, "end": 21, "entity": "order_id"}]
    rows = [{"text": text, "label": "track", "entities": spans}, {"text": "hi", "label": "greet"}]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    ds = api.upload(data, filename="d.jsonl", type="text-entities").json()
    url = f"/v1/datasets/{ds['id']}/examples"
    ex = examples(api, ds["id"], q="A-1932")["examples"][0]
    r = api.client.patch(f"{url}/{ex['id']}", json={"text": "order B-7?"}, headers=api.a)
    assert r.status_code == 422 and "send `entities`" in r.json()["message"]
    new = {"text": "order B-7?", "entities": [{"start": 6, "end": 9, "entity": "order_id"}]}
    r = api.client.patch(f"{url}/{ex['id']}", json=new, headers=api.a)
    assert r.status_code == 200 and r.json()["entities"][0]["end"] == 9
    bad = {"entities": [{"start": 6, "end": 90, "entity": "order_id"}]}
    assert api.client.patch(f"{url}/{ex['id']}", json=bad, headers=api.a).status_code == 422


def test_image_label_boxes_thumbnails_and_delete(api: Api) -> None:
    ds = api.upload(folder_zip(2), name="shapes", type="image", filename="s.zip").json()
    url = f"/v1/datasets/{ds['id']}/examples"
    first = examples(api, ds["id"], q="circle_0")["examples"][0]
    r = api.client.patch(f"{url}/{first['id']}", json={"label": "square"}, headers=api.a)
    assert r.status_code == 200 and r.json()["label"] == "square", r.text
    assert counts(api, ds["id"]) == {"circle": 1, "square": 3, "triangle": 2, "*": 6}
    r = api.client.patch(f"{url}/{first['id']}", json={"labels": ["a"]}, headers=api.a)
    assert r.status_code == 422 and "needs one `label`" in r.json()["message"]
    r = api.client.patch(f"{url}/{first['id']}", json={"text": "x"}, headers=api.a)
    assert r.status_code == 422
    # thumbnails: upright JPEG, longest side `size`, never larger than the image
    for size, expected in ((32, (32, 24)), (100, (100, 75)), (1024, (160, 120))):
        r = api.client.get(f"{url}/{first['id']}/image", params={"size": size}, headers=api.a)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(r.content)).size == expected
    for size in (31, 1025, "big"):
        r = api.client.get(f"{url}/{first['id']}/image?size={size}", headers=api.a)
        assert r.status_code == 422, size
    r = api.client.get(f"{url}/{first['id']}/image", headers=api.a)
    assert Image.open(io.BytesIO(r.content)).size == (160, 120)  # the original, unchanged
    assert api.client.delete(f"{url}/{first['id']}", headers=api.a).status_code == 204
    assert api.client.get(f"{url}/{first['id']}/image?size=64", headers=api.a).status_code == 404
    assert counts(api, ds["id"])["*"] == 5


def test_detection_boxes_and_multi_labels(api: Api) -> None:
    ds = api.upload(detection_zip(3), type="image-detection", filename="d.zip").json()
    url = f"/v1/datasets/{ds['id']}/examples"
    ex = examples(api, ds["id"])["examples"][0]
    box = {"label": "star", "x_min": 10, "y_min": 10, "x_max": 50, "y_max": 40}
    r = api.client.patch(f"{url}/{ex['id']}", json={"boxes": [box]}, headers=api.a)
    assert r.status_code == 200, r.text
    assert [b["label"] for b in r.json()["boxes"]] == ["star"]
    assert counts(api, ds["id"]).get("star") == 1
    off = {**box, "x_max": 5000}
    r = api.client.patch(f"{url}/{ex['id']}", json={"boxes": [off]}, headers=api.a)
    assert r.status_code == 422
    r = api.client.patch(f"{url}/{ex['id']}", json={"label": "star"}, headers=api.a)
    assert r.status_code == 422 and "boxes" in r.json()["message"]
    # a multi-label dataset: labels replaced (sorted, without repeats); counts per label
    files = {
        "a.jpg": encode(shape_image("circle", 1)),
        "b.jpg": encode(shape_image("square", 2)),
        "labels.csv": b"file,labels\na.jpg,red|round\nb.jpg,blue\n",
    }
    multi = api.upload(zip_bytes(files), type="image-multi-label", filename="m.zip").json()
    ex = examples(api, multi["id"], q="a.jpg")["examples"][0]
    url = f"/v1/datasets/{multi['id']}/examples/{ex['id']}"
    r = api.client.patch(url, json={"labels": ["round", "blue", "round"]}, headers=api.a)
    assert r.status_code == 200 and r.json()["labels"] == ["blue", "round"], r.text
    assert counts(api, multi["id"]) == {"blue": 2, "round": 1, "*": 2}
    r = api.client.patch(url, json={"labels": []}, headers=api.a)
    assert r.status_code == 422 and "needs `labels`" in r.json()["message"]


def test_another_tenants_examples_are_not_found(api: Api) -> None:
    ds = api.upload(folder_zip(1), name="private", type="image", filename="p.zip").json()
    url = f"/v1/datasets/{ds['id']}/examples"
    ex = examples(api, ds["id"])["examples"][0]
    calls = (
        ("PATCH", f"{url}/{ex['id']}", {"label": "x"}),
        ("DELETE", f"{url}/{ex['id']}", None),
        ("GET", f"{url}/{ex['id']}/image?size=64", None),
        ("GET", f"{url}?q=c", None),
    )
    for method, path, body in calls:
        r = api.client.request(method, path, json=body, headers=api.b)
        assert r.status_code == 404, (method, path, r.text)
    assert examples(api, ds["id"])["examples"][0] == ex  # unchanged
    r = api.client.patch(f"{url}/{ex['id']}", json={"label": "x"}, headers=api.a)
    assert r.status_code == 200  # the owner can
