"""`parley demo create`: the demo tenant and bot for a cluster whose gateways run --no-demo
(docker-compose.yml's one-shot `demo` service), and `serve --no-demo` with PARLEY_DEMO=true
serving the demo's orders API."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from core.db import get_engine, session_scope
from core.settings import get_settings
from core.tables import Bot, Dataset, Model, Tenant
from parley import cli
from parley.demo import KEY_FILE, ORDERS_API


def _demo_create(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli.app, ["demo", "create", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _counts() -> dict[str, Any]:
    engine = get_engine(get_settings().database_url)
    with session_scope(engine) as session:
        bot = session.scalars(select(Bot)).one()
        return {
            "tenants": session.scalar(select(func.count()).select_from(Tenant)),
            "datasets": session.scalars(select(Dataset.status)).all(),
            "models": session.scalars(select(Model.status)).all(),
            "actions": [a.get("url") for a in bot.definition.get("actions", {}).values()],
            "origins": bot.definition["allowed_origins"],
        }


def test_creates_the_demo_once_and_prints_the_key_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    first = _demo_create("--url", "https://parley.example.com/")

    assert first["created"] is True
    key_file = tmp_path / KEY_FILE
    assert key_file.read_text().strip() == first["api_key"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    state = _counts()
    assert state["tenants"] == 1
    assert state["datasets"] == ["ready"]
    assert state["models"] == ["queued"]  # the queue (celery: its sweep) sends it to a worker
    assert state["origins"] == ["https://parley.example.com"]
    assert state["actions"] and all(
        url.startswith(f"https://parley.example.com{ORDERS_API}/") for url in state["actions"]
    )

    monkeypatch.setenv("PARLEY_PUBLIC_URL", "http://127.0.0.1:8080")
    get_settings.cache_clear()
    second = _demo_create()  # no --url: PARLEY_PUBLIC_URL

    assert second["created"] is False
    assert (second["tenant_id"], second["api_key"]) == (first["tenant_id"], first["api_key"])
    state = _counts()
    assert (state["tenants"], state["models"]) == (1, ["queued"])  # nothing queued twice
    assert state["origins"] == ["http://127.0.0.1:8080"]


def test_serve_no_demo_serves_the_orders_api_when_parley_demo_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    served: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, **_: served.append(self.config.app))
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))

    def mounted(parley_demo: bool) -> bool:
        if parley_demo:
            monkeypatch.setenv("PARLEY_DEMO", "true")
        else:
            monkeypatch.delenv("PARLEY_DEMO", raising=False)
        result = CliRunner().invoke(cli.app, ["serve", "--no-demo", "--workers", "0"])
        assert result.exit_code == 0, result.output
        return any(getattr(r, "path", None) == ORDERS_API for r in served.pop().routes)

    assert mounted(parley_demo=True) is True
    assert mounted(parley_demo=False) is False
    assert not (tmp_path / KEY_FILE).exists()  # --no-demo creates no demo tenant


def test_demo_create_names_the_key_file_and_keeps_the_key_out_of_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    for _ in range(2):  # created, then already there: a compose service's log, each start
        result = CliRunner().invoke(cli.app, ["demo", "create", "--url", "http://127.0.0.1:8000"])
        assert result.exit_code == 0, result.output

        key = (tmp_path / KEY_FILE).read_text().strip()
        assert key and key not in result.output
        flat = " ".join(result.output.split())
        assert str(tmp_path / KEY_FILE) in flat
        assert f"cat {tmp_path / KEY_FILE}" in flat
    assert _demo_create()["api_key"] == key  # --json still carries it
