"""The Open Inference Protocol (KServe V2) side of remote models, with no server: what
registration accepts (``normalise_url``, ``check_headers``, ``plan``), the requests built
(``text_request``, ``image_request``), how answers are read (``read_scores``), and the
gateway's client (``RemoteModels``: timeout, per-tenant concurrency, the outbound guard) over
``httpx.MockTransport``. The real server is in tests/bot_gateway/test_remote_models.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from bot_gateway.services.remote_models import RemoteModels
from core.errors import ConfigurationError, InvalidInput, OutboundRefused, RemoteModelError
from core.remote_models import (
    RemoteModel,
    TensorSpec,
    V2Metadata,
    check_headers,
    image_request,
    normalise_url,
    plan,
    read_scores,
    task_of,
    text_request,
)
from core.secrets import SecretBox
from core.settings import Settings

TEXT_IN = {"name": "text", "datatype": "BYTES", "shape": [-1]}


def meta(inputs: list[Any] | None = None, outputs: list[Any] | None = None, **rest: Any) -> Any:
    return V2Metadata.model_validate({"name": "m", "inputs": inputs, "outputs": outputs, **rest})


def model(
    labels: list[str] | None = ("a", "b", "c"),  # type: ignore[assignment]
    *,
    input: dict[str, Any] = TEXT_IN,
    output: dict[str, Any] | None = None,
    url: str = "http://127.0.0.1:9",
    name: str = "m",
) -> RemoteModel:
    return RemoteModel(
        id="mdl_1",
        task="intent",
        url=url,
        model_name=name,
        input=TensorSpec.model_validate(input),
        output=TensorSpec.model_validate(output) if output else None,
        labels=tuple(labels) if labels is not None else None,
    )


def answer(datatype: str, shape: list[int], data: list[Any], name: str = "out") -> dict[str, Any]:
    return {"outputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


# --- registration ---------------------------------------------------------------------------


def test_tasks_and_urls() -> None:
    assert task_of("text-intent") == task_of("intent") == "intent"
    assert task_of("image") == "image-classification"
    with pytest.raises(InvalidInput, match="can be text-intent"):
        task_of("object-detection")
    assert normalise_url(" https://Models.example.com:8443/base/ ") == (
        "https://models.example.com:8443/base"
    )
    assert normalise_url("http://[::1]:8080") == "http://[::1]:8080"
    for bad, says in (
        ("ftp://x", "http\\(s\\) base URL"),
        ("http://", "http\\(s\\) base URL"),
        ("http://x:99999", "is not a URL"),
        ("http://u:p@x", "credentials"),
        ("http://x/?a=1", "without a query"),
    ):
        with pytest.raises(InvalidInput, match=says):
            normalise_url(bad)


def test_headers_are_checked() -> None:
    assert check_headers({"Authorization": "Bearer t", "X-Key": ""}) == {
        "Authorization": "Bearer t",
        "X-Key": "",
    }
    assert check_headers(None) == {}
    for bad, says in (
        ({"a b": "x"}, "not a header name"),
        ({"Content-Type": "x"}, "Parley sets Content-Type itself"),
        ({"X": "a\nb"}, "one-line"),
        ({f"X-{i}": "v" for i in range(21)}, "at most 20"),
    ):
        with pytest.raises(InvalidInput, match=says):
            check_headers(bad)


def test_plan_defaults_and_preferences() -> None:
    spec, output, labels = plan("intent", meta(), ["x", "y"])
    assert (spec.name, spec.datatype, spec.shape, output, labels) == (
        "text",
        "BYTES",
        [-1],
        None,
        ["x", "y"],
    )
    spec, _, _ = plan("image-classification", meta(), ["x"])
    assert (spec.datatype, spec.shape) == ("UINT8", [-1, 224, 224, 3])
    outputs = [
        {"name": "idx", "datatype": "INT64", "shape": [-1]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {
            "name": "proba",
            "datatype": "FP32",
            "shape": [-1, 2],
            "parameters": {"labels": ["n", "y"]},
        },
    ]
    _, output, labels = plan("intent", meta([TEXT_IN], outputs), None)
    assert output is not None and output.name == "proba" and labels == ["n", "y"]
    _, output, labels = plan("intent", meta([TEXT_IN], outputs[:2]), None)
    assert output is not None and output.name == "label" and labels is None  # answers labels
    _, _, labels = plan("intent", meta([TEXT_IN], outputs[:1], parameters={"labels": ["p"]}), None)
    assert labels == ["p"]  # the model's parameters.labels when the output has none
    _, _, labels = plan("intent", meta([TEXT_IN], outputs), ["sent", "wins"])
    assert labels == ["sent", "wins"]


@pytest.mark.parametrize(
    ("task", "inputs", "outputs", "labels", "says"),
    [
        ("intent", [TEXT_IN, TEXT_IN], None, ["a"], "declares 2 inputs"),
        ("intent", [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}], None, ["a"], "BYTES"),
        ("intent", [{**TEXT_IN, "shape": [-1, 1, 1]}], None, ["a"], "BYTES of shape"),
        ("image-classification", [TEXT_IN], None, ["a"], "an image model's input"),
        (
            "image-classification",
            [{"name": "i", "datatype": "UINT8", "shape": [-1, 8, 8, 4]}],
            None,
            ["a"],
            "image model's input",
        ),
        (
            "intent",
            [TEXT_IN],
            [{"name": "o", "datatype": "BOOL", "shape": [-1]}],
            ["a"],
            "no output",
        ),
        (
            "intent",
            [TEXT_IN],
            [{"name": "o", "datatype": "FP32", "shape": [-1, 3]}],
            None,
            "labels",
        ),
        ("intent", [TEXT_IN], [{"name": "o", "datatype": "INT32", "shape": [-1]}], None, "labels"),
        ("intent", [TEXT_IN], None, None, "send labels"),
        (
            "intent",
            [TEXT_IN],
            [{"name": "o", "datatype": "FP32", "shape": [-1, 3]}],
            ["a"],
            "3 scores",
        ),
        ("intent", [TEXT_IN], None, [], "1 to 1000"),
        ("intent", [TEXT_IN], None, ["a", " "], "not blank"),
    ],
)
def test_plan_refuses_what_does_not_fit(
    task: str, inputs: Any, outputs: Any, labels: Any, says: str
) -> None:
    with pytest.raises(InvalidInput, match=says):
        plan(task, meta(inputs, outputs), labels)


def test_image_layouts() -> None:
    spec, _, _ = plan(
        "image-classification",
        meta([{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, 16]}]),
        ["a"],
    )
    m = model(input=spec.model_dump())
    red = Image.new("RGB", (40, 20), (255, 0, 0))
    body = image_request(m, [red, red])
    tensor = body["inputs"][0]
    assert tensor["shape"] == [2, 3, 224, 16] and tensor["datatype"] == "FP32"
    data = np.asarray(tensor["data"]).reshape(tensor["shape"])
    assert data[:, 0].min() == 1.0 and data[:, 1:].max() == 0.0  # NCHW, 0-1
    m = model(input={"name": "x", "datatype": "UINT8", "shape": [-1, 2, 3, 3]})
    tensor = image_request(m, [red])["inputs"][0]
    assert tensor["shape"] == [1, 2, 3, 3] and tensor["data"][:3] == [255, 0, 0]


def test_text_requests() -> None:
    m = model(
        input={**TEXT_IN, "shape": [-1, 1], "parameters": {"content_type": "str"}},
        output={"name": "proba", "datatype": "FP32", "shape": [-1, 3]},
    )
    assert text_request(m, ["hi", "yo"]) == {
        "inputs": [
            {
                "name": "text",
                "shape": [2, 1],
                "datatype": "BYTES",
                "data": ["hi", "yo"],
                "parameters": {"content_type": "str"},
            }
        ],
        "outputs": [{"name": "proba"}],
    }
    assert text_request(model(), ["a"])["inputs"][0]["shape"] == [1]
    assert "outputs" not in text_request(model(), ["a"])


# --- answers ----------------------------------------------------------------------------------


def test_probabilities_are_kept_and_logits_softmaxed() -> None:
    m = model(output={"name": "out", "datatype": "FP32", "shape": [-1, 3]})
    labels, rows = read_scores(m, answer("FP32", [2, 3], [0.2, 0.3, 0.5, 1.0, 2.0, 3.0]), 2)
    assert labels == ["a", "b", "c"]
    assert rows[0].tolist() == [0.2, 0.3, 0.5]
    e = np.exp([1.0, 2.0, 3.0])
    assert rows[1] == pytest.approx(e / e.sum())
    # another output first: the one asked for is read
    two = answer("FP32", [1, 3], [9, 9, 9], name="other")
    two["outputs"] += answer("FP64", [1, 3], [0, 0, 1])["outputs"]
    assert read_scores(m, two, 1)[1].tolist() == [[0.0, 0.0, 1.0]]


def test_labels_and_indices_become_one_hot_rows() -> None:
    m = model(labels=None, output={"name": "out", "datatype": "BYTES", "shape": [-1]})
    labels, rows = read_scores(m, answer("BYTES", [3], ["yes", "no", "yes"]), 3)
    assert labels == ["yes", "no"] and rows.tolist() == [[1, 0], [0, 1], [1, 0]]
    m = model(output={"name": "out", "datatype": "INT64", "shape": [-1]})
    labels, rows = read_scores(m, answer("INT64", [2], [2, 0]), 2)
    assert labels == ["a", "b", "c"] and rows.tolist() == [[0, 0, 1], [1, 0, 0]]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"nothing": 1}, "not a V2 inference response"),
        ([], "not a V2 inference response"),
        ({"outputs": []}, "no outputs"),
        ({"outputs": [1]}, "not a V2 inference response"),
        ({"outputs": [{"name": "out", "datatype": "FP32", "data": [1]}]}, "'shape'"),
        (answer("FP32", [1, 3], [0.1, 0.2], name="out"), "2 values for shape"),
        (answer("FP32", [1, 3], [1, 2, 3], name="else"), "no output named 'out'"),
        (answer("FP32", [1, 2], [0.5, 0.5]), "2 scores for 1 inputs and 3 labels"),
        (answer("FP32", [1, 3], [1, "x", 2]), "not numbers"),
        (answer("FP64", [1, 3], [1, float("inf"), 2]), "not finite"),
        (answer("INT64", [1], [7]), "class index 7"),
        (answer("INT64", [2], [0, 1]), "2 values for 1 inputs"),
        (answer("BOOL", [1], [True]), "a BOOL output"),
    ],
)
def test_bad_answers_are_remote_model_errors_naming_the_server(body: Any, says: str) -> None:
    m = model(output={"name": "out", "datatype": "FP32", "shape": [-1, 3]})
    with pytest.raises(RemoteModelError, match=says) as info:
        read_scores(m, body, 1)
    assert "http://127.0.0.1:9" in info.value.message
    assert info.value.details["url"] == "http://127.0.0.1:9"


# --- the gateway's client ------------------------------------------------------------------------


def client(tmp_path: Path, handler: Any, *, allow: bool = True, **remote: Any) -> RemoteModels:
    settings = Settings(
        data_dir=tmp_path,
        outbound={"allow_hosts": ["127.0.0.1"] if allow else []},
        remote_models={"timeout_s": 0.3, **remote},
    )
    return RemoteModels(settings, SecretBox(), transport=httpx.MockTransport(handler))


async def v2(request: httpx.Request) -> httpx.Response:
    """Model ``slow`` takes 2 s; the others answer two probabilities per text."""
    if request.url.path.endswith("/slow/infer"):
        await asyncio.sleep(2)
    count = json.loads(request.content)["inputs"][0]["shape"][0]
    return httpx.Response(200, json=answer("FP32", [count, 2], [0.1, 0.9] * count))


def test_a_slow_server_times_out_and_holds_only_its_tenants_calls(tmp_path: Path) -> None:
    remote = client(tmp_path, v2, per_tenant_concurrency=1)
    slow, fast = model(["n", "y"], name="slow"), model(["n", "y"], name="fast")

    async def timed(tenant: str, m: RemoteModel) -> tuple[Any, float]:
        start = asyncio.get_running_loop().time()
        try:
            result: Any = await remote.classify_texts(tenant, m, ["hi"])
        except RemoteModelError as e:
            result = e
        return result, asyncio.get_running_loop().time() - start

    async def run() -> tuple[tuple[Any, float], ...]:
        try:
            held = asyncio.create_task(timed("ten_a", slow))  # takes ten_a's one slot
            await asyncio.sleep(0)
            return await asyncio.gather(
                held,
                timed("ten_a", fast),  # these two wait for that slot: one at least
                timed("ten_a", fast),  # is still waiting when its 0.3 s are up
                timed("ten_b", fast),  # another tenant's slots are its own
            )
        finally:
            await remote.aclose()

    (first, _), (second, _), (third, _), (other, took) = asyncio.run(run())
    assert isinstance(first, RemoteModelError)
    assert "did not answer within 0.3 s" in first.message and first.details["url"]
    waited = [e for e in (second, third) if isinstance(e, RemoteModelError)]
    assert any("was not called: this tenant's 1 calls" in e.message for e in waited), waited
    labels, rows = other
    assert labels == ["n", "y"] and rows.tolist() == [pytest.approx([0.1, 0.9])]
    assert took < 0.25  # it did not wait for ten_a's slot


def test_non_2xx_and_unreachable_servers_are_remote_model_errors(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "down" in request.url.path:
            raise httpx.ConnectError("connection refused")
        if "html" in request.url.path:
            return httpx.Response(200, text="<html>")
        return httpx.Response(503, json={"error": "model not loaded"})

    remote = client(tmp_path, handler)

    async def call(name: str) -> str:
        with pytest.raises(RemoteModelError) as info:
            await remote.classify_texts("ten_a", model(name=name), ["hi"])
        return info.value.message

    async def run() -> list[str]:
        try:
            return [await call(n) for n in ("busy", "down", "html")]
        finally:
            await remote.aclose()

    busy, down, html = asyncio.run(run())
    assert "answered 503: model not loaded" in busy
    assert "cannot be reached (connection refused)" in down
    assert "not JSON" in html


def test_the_outbound_guard_applies_to_every_call(tmp_path: Path) -> None:
    remote = client(tmp_path, v2, allow=False)

    async def run() -> None:
        try:
            await remote.classify_texts("ten_a", model(["n", "y"]), ["hi"])
        finally:
            await remote.aclose()

    with pytest.raises(OutboundRefused, match="PARLEY_OUTBOUND__ALLOW_HOSTS"):
        asyncio.run(run())


# --- header values at rest -----------------------------------------------------------------------


def test_header_values_are_encrypted_checked_and_rotated(tmp_path: Path) -> None:
    """``core.secrets`` knows remote models' header values: ``check`` reads them, ``rotate``
    re-encrypts them (and encrypts any stored in clear), the other params stay as they are."""
    from core.db import ensure_schema, get_engine, session_scope
    from core.secrets import check, encrypt_value, rotate
    from core.tables import Model
    from core.tenants import create_tenant
    from training.registry import create_remote_model

    old, new = SecretBox(["o" * 32]), SecretBox(["n" * 32, "o" * 32])
    url = f"sqlite:///{tmp_path / 'p.db'}"
    ensure_schema(url)
    engine = get_engine(url)
    params = {
        "url": "http://127.0.0.1:9",
        "model_name": "m",
        "protocol": "v2",
        "input": TEXT_IN,
        "headers": {"Authorization": encrypt_value(old, "Bearer t"), "X-Plain": "clear"},
    }
    with session_scope(engine) as session:
        tenant, _ = create_tenant(session, "a")
        stored = create_remote_model(
            session, tenant_id=tenant.id, name="r", task="intent", params=params, labels=["a"]
        )
        model_id = stored.id
        session.commit()
    with session_scope(engine) as session:
        assert check(session, old) == 1
        with pytest.raises(ConfigurationError):
            check(session, SecretBox(["x" * 32]))
        assert rotate(session, new, channel_secrets=lambda _: ()) == 2
        session.commit()
    with session_scope(engine) as session:
        row = session.get(Model, model_id)
        assert row is not None
        headers = row.params["headers"]
        assert all(v.startswith("enc:v1:") for v in headers.values())  # the clear one too
        assert "Bearer t" not in json.dumps(row.params) and "clear" not in json.dumps(headers)
        assert old.can_decrypt(headers["Authorization"]) is False  # the new key's now
        remote = RemoteModels(Settings(data_dir=tmp_path), SecretBox(["n" * 32]))
        loaded = remote.model(model_id, "intent", row.params)
        assert dict(loaded.headers) == {"Authorization": "Bearer t", "X-Plain": "clear"}
        assert loaded.input.name == "text" and loaded.url == "http://127.0.0.1:9"
        asyncio.run(remote.aclose())
