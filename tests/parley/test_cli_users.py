"""`parley users create|list` (and `parley agents create`, kept), and the demo's users: `parley
serve` prints where `admin` signs in to the Studio and `agent` to the agents' console, with
passwords that stay the same from one start to the next."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bot_gateway.services.accounts import check_password
from core.db import get_engine, session_scope
from core.settings import get_settings
from core.tables import Agent
from parley import cli
from parley.demo import LOGINS_FILE


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    result = CliRunner().invoke(cli.app, ["tenants", "create", "shop"])
    assert result.exit_code == 0, result.output
    return tmp_path


def _users(*args: str) -> Any:
    result = CliRunner().invoke(cli.app, ["users", "list", "--tenant", "shop", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _password_works(username: str, password: str) -> bool:
    with session_scope(get_engine(get_settings().database_url)) as session:
        user = session.scalars(select(Agent).where(Agent.username == username)).one()
        return check_password(password, user.password_hash)


def test_users_are_created_with_a_role_and_listed(data_dir: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(
        cli.app,
        [
            *("users", "create", "ada", "--tenant", "shop", "--role", "builder"),
            *("--password", "ada's password", "--name", "Ada L"),
        ],
    )
    assert made.exit_code == 0, made.output
    assert "sign in to the Studio at /studio" in made.output
    # no --password: asked for, twice
    asked = runner.invoke(
        cli.app,
        ["users", "create", "sam", "--tenant", "shop", "--role", "supervisor"],
        input="sam's password\nsam's password\n",
    )
    assert asked.exit_code == 0, asked.output
    assert "/console/agents" in asked.output
    # `agents create` still makes agents
    agent = runner.invoke(
        cli.app,
        ["agents", "create", "ana", "--tenant", "shop", "--password-stdin"],
        input="ana's password\n",
    )
    assert agent.exit_code == 0, agent.output
    listed = {u["username"]: (u["role"], u["name"], u["disabled"]) for u in _users()}
    assert listed == {
        "ada": ("builder", "Ada L", False),
        "ana": ("agent", "ana", False),
        "sam": ("supervisor", "sam", False),
    }
    assert _password_works("sam", "sam's password")
    bad = runner.invoke(
        cli.app,
        ["users", "create", "x", "--tenant", "shop", "--role", "owner", "--password", "p" * 8],
    )
    assert bad.exit_code == 1 and "unknown role 'owner'" in bad.output
    taken = runner.invoke(
        cli.app,
        ["users", "create", "ada", "--tenant", "shop", "--role", "admin", "--password", "p" * 8],
    )
    assert taken.exit_code == 1 and "already has a user named 'ada'" in taken.output


def test_serve_prints_the_demo_logins_and_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, **_: None)
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    printed = []
    for _ in range(2):
        result = CliRunner().invoke(cli.app, ["serve", "--workers", "0"])
        assert result.exit_code == 0, result.output
        printed.append(" ".join(result.output.split()))
    logins = json.loads((tmp_path / LOGINS_FILE).read_text())
    assert stat.S_IMODE((tmp_path / LOGINS_FILE).stat().st_mode) == 0o600
    admin, agent = logins["admin"], logins["agent"]
    for output in printed:  # the same passwords at every start
        assert (
            f"Studio: http://127.0.0.1:8000/studio tenant demo user admin password {admin}"
            in output
        )
        assert (
            "Agents' console: http://127.0.0.1:8000/console/agents tenant demo user agent "
            f"password {agent}" in output
        )
    assert "(new)" in printed[0] and "(new)" not in printed[1]
    assert _password_works("admin", admin) and _password_works("agent", agent)
    with session_scope(get_engine(get_settings().database_url)) as session:
        roles = dict(session.execute(select(Agent.username, Agent.role)).tuples().all())
    assert roles == {"admin": "admin", "agent": "agent"}
    # a lost logins file: the users get new passwords, which are saved and printed
    (tmp_path / LOGINS_FILE).unlink()
    result = CliRunner().invoke(cli.app, ["serve", "--workers", "0"])
    new = json.loads((tmp_path / LOGINS_FILE).read_text())
    assert new["admin"] != admin and _password_works("admin", new["admin"])
    assert f"user admin password {new['admin']} (new)" in " ".join(result.output.split())
