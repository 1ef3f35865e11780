"""The audit log: every write to /v1, refused ones too, seen only by its tenant's admins."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot_gateway.audit import AuditMiddleware, AuditWriter, Pending
from bot_gateway.services.accounts import create_agent
from core import audit
from core.db import ensure_schema, get_engine, session_scope, utcnow
from core.tables import AuditEntry
from tests.bot_gateway.conftest import Api, running_api
from tests.conftest import DB_KINDS


@pytest.fixture(scope="module", params=DB_KINDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("audit")
    with running_api(request, tmp, warm_encoder=False, queue={"workers": 0}) as api:
        yield api


def entries(api: Api, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = api.client.get("/v1/audit", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["entries"]  # type: ignore[no-any-return]


def key_id(api: Api, headers: dict[str, str]) -> str:
    keys = api.client.get("/v1/keys", headers=headers).json()
    return str(keys[0]["id"])


def test_writes_are_recorded_with_key_address_status_and_target(api: Api) -> None:
    admin = f"key:{key_id(api, api.a)}"
    created = api.client.post("/v1/bots", json={"name": "audited"}, headers=api.a)
    assert created.status_code == 201, created.text
    bot_id = created.json()["id"]
    updated = api.client.patch(f"/v1/bots/{bot_id}", json={"enabled": False}, headers=api.a)
    assert updated.status_code == 200, updated.text
    key = api.client.post("/v1/keys", json={"scopes": ["predict"]}, headers=api.a).json()
    predict = {"Authorization": f"Bearer {key['api_key']}"}
    refused = api.client.post("/v1/keys", json={"scopes": ["admin"]}, headers=predict)
    assert refused.status_code == 403
    deleted = api.client.delete(f"/v1/bots/{bot_id}", headers=api.a)
    assert deleted.status_code == 204
    api.client.get(f"/v1/bots/{bot_id}", headers=api.a)  # a read: not recorded

    log = entries(api, api.a, target_id=bot_id)
    assert [(e["actor"], e["action"], e["status"]) for e in log] == [
        (admin, "DELETE /v1/bots/{bot_id}", 204),
        (admin, "PATCH /v1/bots/{bot_id}", 200),
        (admin, "POST /v1/bots", 201),
    ]
    assert {e["target_id"] for e in log} == {bot_id}
    assert {e["address"] for e in log} == {"testclient"}

    (attempt,) = entries(api, api.a, actor=f"key:{key['id']}")
    assert attempt["action"] == "POST /v1/keys" and attempt["status"] == 403
    (made,) = entries(api, api.a, action="POST /v1/keys", actor=admin)
    assert made["target_id"] == key["id"] and made["status"] == 201


def test_widget_and_operator_writes_name_their_actor(api: Api) -> None:
    bot = api.client.post("/v1/bots", json={"name": "widget bot"}, headers=api.a).json()
    r = api.client.post(
        f"/v1/bots/{bot['id']}/uploads",
        files={"file": ("x.png", b"not an image", "image/png")},
        headers={"X-Parley-Widget-Key": bot["widget_key"]},
    )
    assert 400 <= r.status_code < 500
    (upload,) = entries(api, api.a, actor=f"widget:{bot['id']}")
    assert upload["action"] == "POST /v1/bots/{bot_id}/uploads"
    assert upload["status"] == r.status_code
    (made,) = entries(api, api.a, actor="operator")
    assert made["action"] == "POST /v1/tenants" and made["target_id"] == api.a_tenant


def test_an_agents_writes_name_the_agent(api: Api) -> None:
    gateway = api.client.app.state.gateway  # type: ignore[attr-defined]
    with session_scope(gateway.engine) as session:
        agent = create_agent(
            session, tenant_id=api.a_tenant, username="ana", password="correct horse 1"
        )
        agent_id = agent.id
    login = {"tenant": api.a_tenant, "username": "ana", "password": "correct horse 1"}
    signed_in = api.client.post("/v1/agent/login", json=login)
    assert signed_in.status_code == 200
    csrf = {"X-CSRF-Token": signed_in.json()["csrf_token"]}
    r = api.client.post("/v1/agent/conversations/conv_missing/claim", headers=csrf)
    assert r.status_code == 404
    api.client.cookies.clear()
    log = entries(api, api.a, actor=f"agent:{agent_id}")
    assert [(e["action"], e["status"], e["target_id"]) for e in log] == [
        ("POST /v1/agent/conversations/{conversation_id}/claim", 404, "conv_missing"),
        ("POST /v1/agent/login", 200, None),
    ]


def test_refused_anonymous_writes_belong_to_no_tenant(api: Api) -> None:
    r = api.client.delete("/v1/keys/key_nope", headers={"Authorization": "Bearer pk_wrong"})
    assert r.status_code == 401
    for headers in (api.a, api.b):
        assert entries(api, headers, actor="anonymous") == []


def test_another_tenant_sees_none_of_them(api: Api) -> None:
    api.client.post("/v1/keys", json={"scopes": ["train"]}, headers=api.a)
    mine = entries(api, api.a, limit=1000)
    theirs = entries(api, api.b, limit=1000)
    assert mine and theirs  # B has its own: the operator created it
    assert not {e["id"] for e in mine} & {e["id"] for e in theirs}
    a_key = f"key:{key_id(api, api.a)}"
    assert all(e["actor"] != a_key for e in theirs)
    assert [e["action"] for e in theirs] == ["POST /v1/tenants"]


def test_paging_and_time_filters(api: Api) -> None:
    for _ in range(3):
        api.client.post("/v1/keys", json={"scopes": ["predict"]}, headers=api.a)
    first = entries(api, api.a, action="POST /v1/keys", limit=2)
    assert len(first) == 2 and first[0]["id"] > first[1]["id"]
    page = api.client.get(
        "/v1/audit", params={"action": "POST /v1/keys", "limit": 2}, headers=api.a
    ).json()
    older = entries(api, api.a, action="POST /v1/keys", before=page["next_before"])
    assert older and all(e["id"] < first[1]["id"] for e in older)
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    assert entries(api, api.a, **{"from": later}) == []
    assert len(entries(api, api.a, to=later, limit=1000)) == len(entries(api, api.a, limit=1000))
    bad = api.client.get("/v1/audit", params={"before": 2**64}, headers=api.a)
    assert bad.status_code == 422


def test_a_key_without_admin_scope_cannot_read_the_log(api: Api) -> None:
    key = api.client.post("/v1/keys", json={"scopes": ["predict", "train"]}, headers=api.a)
    headers = {"Authorization": f"Bearer {key.json()['api_key']}"}
    r = api.client.get("/v1/audit", headers=headers)
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"


def test_operator_cli_shows_a_tenants_log(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from parley.cli import app

    settings = api.client.app.state.gateway.settings  # type: ignore[attr-defined]
    monkeypatch.setenv("PARLEY_DB__URL", settings.database_url)
    monkeypatch.setenv("PARLEY_DATA_DIR", str(settings.data_dir))
    api.client.post("/v1/bots", json={"name": "cli bot"}, headers=api.a)
    api.client.app.state.gateway.audit.flush()  # type: ignore[attr-defined]
    out = CliRunner().invoke(app, ["audit", "--tenant", "tenant-a", "--json"])
    assert out.exit_code == 0, out.output
    import json

    rows = json.loads(out.output)
    assert any(r["action"] == "POST /v1/bots" for r in rows)
    assert {r["tenant_id"] for r in rows} == {api.a_tenant}


def test_an_answer_before_routing_is_recorded_under_its_route() -> None:
    """A middleware that refuses a body before routing (size, depth) is still audited."""
    from types import SimpleNamespace

    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.responses import JSONResponse
    from starlette.types import ASGIApp, Receive, Scope, Send

    class Refuse:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["method"] == "POST":
                await JSONResponse({"error": "payload_too_large"}, 413)(scope, receive, send)
                return
            await self.app(scope, receive, send)

    class Collect:
        def __init__(self) -> None:
            self.pending: list[Pending] = []

        def submit(self, entry: Pending) -> None:
            self.pending.append(entry)

    app = FastAPI()

    @app.post("/v1/things/{thing_id}/parts")
    def add_part(thing_id: str) -> dict[str, str]:
        return {"id": "part_1"}

    app.add_middleware(Refuse)
    app.add_middleware(AuditMiddleware)
    writer = Collect()
    app.state.gateway = SimpleNamespace(audit=writer)
    with TestClient(app) as client:
        assert client.post("/v1/things/t_1/parts", json={}).status_code == 413
        assert client.post("/v1/nowhere", json={}).status_code == 413  # no route: not recorded
    (entry,) = writer.pending
    assert entry.action == "POST /v1/things/{thing_id}/parts"
    assert entry.path_ids == ("t_1",) and entry.status == 413 and entry.actor == "anonymous"


# --- retention ------------------------------------------------------------------------------


def _entry(days_ago: float) -> audit.Entry:
    return audit.Entry(
        tenant_id="tenant_x",
        actor="key:k",
        action="DELETE /v1/bots/{bot_id}",
        target_id="bot_1",
        status=204,
        address="127.0.0.1",
        created_at=utcnow() - timedelta(days=days_ago),
    )


def test_retention_purge_removes_old_entries(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    ensure_schema(url)
    engine = get_engine(url)
    with session_scope(engine) as session:
        audit.record(session, [_entry(10), _entry(2), _entry(0)])
    writer = AuditWriter(engine, retention_days=3, flush_interval=0.05)
    writer.start()  # purges at once, then hourly
    writer.submit(
        Pending(
            actor="operator",
            tenant_id=None,
            action="POST /v1/tenants",
            path_ids=(),
            status=201,
            address=None,
            created_at=utcnow(),
            body=b'{"tenant_id": "tenant_x", "name": "x"}',
        )
    )
    writer.stop()
    with session_scope(engine) as session:
        rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.created_at)))
    ages = [round((utcnow() - r.created_at).total_seconds() / 86400) for r in rows]
    assert ages == [2, 0, 0]
    assert rows[-1].actor == "operator" and rows[-1].target_id == "tenant_x"
    with session_scope(engine) as session:
        assert audit.purge(session, retention_days=1) == 1


def test_a_backlog_past_its_bound_is_dropped_and_counted(tmp_path: Path) -> None:
    from core.metrics import counters

    url = f"sqlite:///{tmp_path / 'parley.db'}"
    ensure_schema(url)
    writer = AuditWriter(get_engine(url), retention_days=3, max_backlog=2)  # not started
    before = counters.get("audit.dropped")
    pending = Pending(
        actor="key:k",
        tenant_id="tenant_x",
        action="DELETE /v1/bots/{bot_id}",
        path_ids=("bot_1",),
        status=204,
        address=None,
        created_at=utcnow(),
    )
    for _ in range(3):
        writer.submit(pending)  # never blocks
    assert counters.get("audit.dropped") == before + 1
    writer.start()
    writer.stop()
    with session_scope(get_engine(url)) as session:
        assert len(list(session.scalars(select(AuditEntry)))) == 2
