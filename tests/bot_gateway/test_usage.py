"""Usage metering (core.usage): the recorder's upserts and running totals, GET /v1/usage by hour
and day for the calling tenant only, `parley usage`, and per-tenant Prometheus counters with
bounded labels — through a real trained intent model, a built-in model and a bot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from core.db import ensure_schema, get_engine, session_scope
from core.metrics import Counters
from core.tables import UsageRecord
from core.usage import UsageRecorder, usage_report
from parley.cli import app as cli
from tests.bot_gateway.conftest import OPERATOR, Api, running_api
from tests.conftest import DB_KINDS, make_db_url
from tests.support.data import intent_csv

# --- the recorder, on a real database ---------------------------------------------------------


@pytest.fixture(params=DB_KINDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = make_db_url(request.param, tmp_path, request)
    ensure_schema(url)
    return get_engine(url)


def test_flushes_add_up_in_one_row_per_hour_metric_and_dimension(engine: Any) -> None:
    now = [datetime(2026, 12, 3, 9, 59, tzinfo=UTC)]
    recorder = UsageRecorder(engine, clock=lambda: now[0])
    recorder.predicted("ten_a", "mdl_1", task="intent", backend="embedding-head", count=3)
    recorder.flush()
    recorder.predicted("ten_a", "mdl_1", task="intent", backend="embedding-head", count=2)
    recorder.predicted("ten_a", "prebuilt-ocr", task="ocr", backend="builtin", count=1)
    recorder.record("ten_b", "messages", dimension="webchat")
    recorder.flush()
    now[0] += timedelta(minutes=2)  # the next hour
    recorder.predicted("ten_a", "mdl_1", task="intent", backend="embedding-head", count=4)
    recorder.stop()  # flushes what is left
    with session_scope(engine) as session:
        rows = session.execute(
            select(UsageRecord.tenant_id, UsageRecord.hour, UsageRecord.metric)
            .add_columns(UsageRecord.dimension, UsageRecord.value)
            .order_by(UsageRecord.id)
        ).all()
        by_key = {(r[0], r[1].hour, r[2], r[3]): r[4] for r in rows}
        assert len(rows) == len(by_key) == 5
        assert by_key[("ten_a", 9, "predictions", "mdl_1:intent")] == 5
        assert by_key[("ten_a", 10, "predictions", "mdl_1:intent")] == 4
        assert by_key[("ten_a", 9, "predictions", "prebuilt-ocr:builtin")] == 1
        assert by_key[("ten_a", 9, "ocr_pages", "")] == 1
        assert by_key[("ten_b", 9, "messages", "webchat")] == 1

        hours = usage_report(
            session, "ten_a", start=now[0] - timedelta(hours=2), end=now[0], granularity="hour"
        )
        days = usage_report(
            session, "ten_a", start=now[0] - timedelta(days=1), end=now[0], granularity="day"
        )
    assert [(e.start.hour, e.metric, e.dimension, e.value) for e in hours.entries] == [
        (9, "ocr_pages", "", 1),
        (9, "predictions", "mdl_1:intent", 5),
        (9, "predictions", "prebuilt-ocr:builtin", 1),
        (10, "predictions", "mdl_1:intent", 4),
    ]
    assert [(e.start, e.dimension, e.value) for e in days.entries if e.metric == "predictions"] == [
        (datetime(2026, 12, 3, tzinfo=UTC), "mdl_1:intent", 9),
        (datetime(2026, 12, 3, tzinfo=UTC), "prebuilt-ocr:builtin", 1),
    ]
    assert days.totals == {"predictions": 10, "ocr_pages": 1}


def test_running_totals_see_other_processes_and_count_this_ones_exactly(engine: Any) -> None:
    ours, theirs = UsageRecorder(engine), UsageRecorder(engine)
    since = datetime.now(UTC) - timedelta(hours=1)
    theirs.record("ten_a", "predictions", 10, dimension="m:intent")
    theirs.flush()
    ours.record("ten_a", "predictions", 1, dimension="m:intent")  # not flushed yet
    assert ours.cached_total("ten_a", "predictions", since) is None  # never read: no guess
    assert ours.total("ten_a", "predictions", since) == 11
    ours.record("ten_a", "predictions", 2, dimension="m:intent")
    ours.flush()
    ours.record("ten_a", "predictions", 3, dimension="m:intent")
    assert ours.cached_total("ten_a", "predictions", since) == 16  # no query: memory only
    assert ours.total("ten_a", "predictions", since) == 16  # the database agrees
    assert ours.cached_total("ten_b", "predictions", since) is None


def test_per_tenant_counters_keep_their_labels_bounded() -> None:
    counts = Counters()
    counts.MAX_TENANTS = 2
    for tenant in ("ten_1", "ten_2", "ten_3", "ten_4", "ten_1"):
        counts.incr_tenant("tenant.predictions", tenant, 2, kind="intent")
    text = counts.prometheus()
    assert 'parley_tenant_predictions{kind="intent",tenant="ten_1"} 4' in text
    assert 'parley_tenant_predictions{kind="intent",tenant="ten_2"} 2' in text
    assert 'parley_tenant_predictions{kind="intent",tenant="other"} 4' in text
    assert "ten_3" not in text and "ten_4" not in text


# --- through the gateway ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("usage")) as api:
        yield api


@pytest.fixture(scope="module")
def trained(api: Api) -> dict[str, Any]:
    dataset = api.upload(intent_csv(), name="intents").json()
    model = api.train(dataset["id"], params={"epochs": 40})
    assert model["status"] == "succeeded", model["failure_message"]
    return model


def usage(api: Api, headers: dict[str, str], **params: str) -> dict[str, Any]:
    r = api.client.get("/v1/usage", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def entry(report: dict[str, Any], metric: str, **parts: str) -> float:
    found = [
        e["value"]
        for e in report["entries"]
        if e["metric"] == metric and all(e.get(k) == v for k, v in parts.items())
    ]
    return sum(found)


@pytest.mark.slow
def test_predictions_are_counted_by_model_and_kind(api: Api, trained: dict[str, Any]) -> None:
    model_id = trained["id"]
    r = api.client.post(
        f"/v1/models/{model_id}/predict",
        json={"texts": ["where is my order", "i want my money back", "hello"]},
        headers=api.a,
    )
    assert r.status_code == 200, r.text
    parse = api.client.post(f"/v1/models/{model_id}/parse", json={"text": "hi"}, headers=api.a)
    assert parse.status_code == 200
    entities = api.client.post(
        "/v1/models/prebuilt-entities/predict", json={"text": "Paris on Monday"}, headers=api.a
    )
    assert entities.status_code == 200
    failed = api.client.post("/v1/models/mdl_missing/predict", json={"text": "x"}, headers=api.a)
    assert failed.status_code == 404  # not counted

    hourly = usage(api, api.a, granularity="hour")
    assert hourly["granularity"] == "hour"
    assert entry(hourly, "predictions", model_id=model_id, kind="intent") == 4
    assert entry(hourly, "predictions", model_id="prebuilt-entities", kind="builtin") == 1
    this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    starts = {e["start"] for e in hourly["entries"] if e["metric"] == "predictions"}
    assert starts == {this_hour.isoformat().replace("+00:00", "Z")}
    # the worker recorded how long training took, on which device
    assert entry(hourly, "train_seconds", device="cpu") > 0

    daily = usage(api, api.a, granularity="day")
    assert daily["totals"]["predictions"] == 5
    days = {e["start"] for e in daily["entries"]}
    assert days == {this_hour.replace(hour=0).isoformat().replace("+00:00", "Z")}
    assert daily["storage_bytes"] > 0  # the dataset and the model

    # Prometheus: per tenant and kind
    metrics = api.client.get("/v1/metrics", headers=OPERATOR).text
    assert f'parley_tenant_predictions{{kind="intent",tenant="{api.a_tenant}"}} 4' in metrics


@pytest.mark.slow
def test_a_tenant_sees_only_its_own_usage(api: Api, trained: dict[str, Any]) -> None:
    a_before = usage(api, api.a)
    r = api.client.post(
        "/v1/models/prebuilt-entities/predict", json={"texts": ["a", "b"]}, headers=api.b
    )
    assert r.status_code == 200
    b_usage = usage(api, api.b)
    assert b_usage["tenant_id"] != api.a_tenant
    assert [(e["metric"], e["model_id"], e["value"]) for e in b_usage["entries"]] == [
        ("predictions", "prebuilt-entities", 2)
    ]
    assert b_usage["storage_bytes"] == 0
    a_after = usage(api, api.a)
    assert a_after["entries"] == a_before["entries"] and a_after["totals"] == a_before["totals"]
    predict_only = api.client.post("/v1/keys", json={"scopes": ["predict"]}, headers=api.a)
    key = {"Authorization": f"Bearer {predict_only.json()['api_key']}"}
    assert api.client.get("/v1/usage", headers=key).status_code == 403  # usage needs admin


@pytest.mark.slow
def test_conversations_and_messages_are_counted_by_channel(
    api: Api, trained: dict[str, Any]
) -> None:
    bot = {
        "name": "metered",
        "nlu": {"model": trained["id"]},
        "responses": {"utter_hi": [{"text": "Hello!"}]},
        "flows": {"track": {"intents": ["track_order"], "steps": [{"reply": "utter_hi"}]}},
    }
    created = api.client.post("/v1/bots", json=bot, headers=api.a)
    assert created.status_code == 201, created.text
    before = usage(api, api.a, granularity="hour")
    for sender, text in (("ann", "where is my order"), ("ann", "thanks"), ("bob", "hi")):
        r = api.client.post(
            f"/v1/bots/{created.json()['id']}/webhooks/rest",
            json={"sender": sender, "message": text},
            headers=api.a,
        )
        assert r.status_code == 200, r.text
    after = usage(api, api.a, granularity="hour")
    assert (
        entry(after, "conversations", channel="rest")
        - entry(before, "conversations", channel="rest")
        == 2
    )
    assert entry(after, "messages", channel="rest") - entry(before, "messages", channel="rest") == 3
    # the bot's NLU predictions count too (the tenant's model did the work)
    assert (
        entry(after, "predictions", model_id=trained["id"])
        - entry(before, "predictions", model_id=trained["id"])
        == 3
    )


def test_usage_ranges_are_checked(api: Api) -> None:
    now = datetime.now(UTC)
    bad = [
        {"granularity": "week"},
        {"from": now.isoformat(), "to": (now - timedelta(days=1)).isoformat()},
        {"from": (now - timedelta(days=40)).isoformat(), "granularity": "hour"},
    ]
    for params in bad:
        r = api.client.get("/v1/usage", params=params, headers=api.a)
        assert r.status_code == 422, (params, r.text)
    window = usage(api, api.a, **{"from": "2020-01-01", "to": "2020-01-02"})
    assert window["entries"] == [] and window["from"].startswith("2020-01-01")


@pytest.mark.slow
def test_cli_shows_a_tenants_usage(
    api: Api, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api.client.app.state.gateway.usage.flush()  # type: ignore[attr-defined]
    settings = api.client.app.state.gateway.settings  # type: ignore[attr-defined]
    monkeypatch.setenv("PARLEY_DB__URL", settings.database_url)
    monkeypatch.setenv("PARLEY_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    result = runner.invoke(
        cli, ["usage", "--tenant", "tenant-a", "--granularity", "hour", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    api_view = usage(api, api.a, granularity="hour")
    assert data["tenant_id"] == api.a_tenant
    assert data["totals"] == api_view["totals"]
    assert data["storage_bytes"] == api_view["storage_bytes"] > 0
    assert any(
        e.get("model_id") == trained["id"] and e["kind"] == "intent" for e in data["entries"]
    )

    table = runner.invoke(cli, ["usage", "--tenant", "tenant-a"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert trained["id"] in table.output and "predictions" in table.output
    assert f"predictions {api_view['totals']['predictions']:g}" in table.output
    unknown = runner.invoke(cli, ["usage", "--tenant", "nobody"])
    assert unknown.exit_code == 1 and "not found" in unknown.output
