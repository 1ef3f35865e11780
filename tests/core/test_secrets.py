"""Secrets at rest: channel secrets and action headers are encrypted in the database with
PARLEY_SECRET_KEY, rotate to a new key, and a server without the right key refuses to start."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from bot_gateway.app import build_gateway, create_app
from bot_gateway.conversations.actions import Actions
from bot_gateway.conversations.definition import parse_definition
from bot_gateway.conversations.tracker import Tracker
from bot_gateway.deps import Gateway
from core.db import get_engine, session_scope
from core.errors import ConfigurationError
from core.secrets import MARKER, SecretBox, decrypt_value, encrypt_value, open_config
from core.settings import Settings
from core.tables import Channel
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import DB_KINDS, make_db_url, make_settings

OLD, NEW = "old key that is long enough", "new key that is long enough"
SLACK = {"signing_secret": "slack-signing-0123456789", "bot_token": "xoxb-bot-token-0123456789"}
ACTION_TOKEN = "Bearer action-server-token-0123456789"
HTTP_TOKEN = "http-action-key-0123456789"
BOT = {
    "name": "secret bot",
    "action_server": {"url": "https://actions.example.com/webhook", "headers": {
        "Authorization": ACTION_TOKEN
    }},
    "actions": {"lookup": {"url": "https://api.example.com/x", "headers": {"X-Key": HTTP_TOKEN}}},
}  # fmt: skip
PLAINTEXTS = [*SLACK.values(), ACTION_TOKEN, HTTP_TOKEN]


@dataclass(frozen=True)
class Db:
    tmp: Path
    url: str


def settings_for(db: Db, key: str | None) -> Settings:
    return make_settings(db.tmp, db.url, secret_key=key, queue={"workers": 0})


@pytest.fixture(params=DB_KINDS)
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A database holding a Slack channel and a bot with headers, written with key OLD."""
    db = Db(tmp_path, make_db_url(request.param, tmp_path, request))
    with TestClient(create_app(settings_for(db, OLD), warm_encoder=False)) as client:
        tenant = client.post("/v1/tenants", json={"name": "t"}, headers=OPERATOR).json()
        key = {"Authorization": f"Bearer {tenant['api_key']}"}
        bot = client.post("/v1/bots", json=BOT, headers=key)
        assert bot.status_code == 201, bot.text
        channel = client.post(
            f"/v1/bots/{bot.json()['id']}/channels",
            json={"type": "slack", "config": SLACK},
            headers=key,
        )
        assert channel.status_code == 201, channel.text
        yield {"db": db, "bot": bot.json(), "channel": channel.json()}


def start(settings: Settings) -> Gateway:
    """What the server does at start (``build_gateway``), then its threads stopped again."""
    gateway = build_gateway(settings)
    gateway.batcher.stop()
    gateway.lookups.stop()
    gateway.imports.shutdown()
    return gateway


def raw_rows(db: Db) -> str:
    """Every stored channel config and bot definition, read with plain SQL."""
    engine = get_engine(db.url)
    with engine.connect() as conn:
        rows = [
            *conn.execute(text("SELECT config FROM channels")).scalars(),
            *conn.execute(text("SELECT definition FROM bots")).scalars(),
            *conn.execute(text("SELECT definition FROM bot_versions")).scalars(),
        ]
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows)


def sqlite(tmp: Path) -> Db:
    return Db(tmp, f"sqlite:///{tmp / 'parley.db'}")


def test_round_trip_and_a_wrong_key_is_an_error_not_garbage() -> None:
    box = SecretBox([NEW])
    sealed = encrypt_value(box, "xoxb-1")
    assert sealed.startswith(MARKER) and "xoxb-1" not in sealed
    assert sealed != encrypt_value(box, "xoxb-1")  # a fresh token each time
    assert decrypt_value(box, sealed) == "xoxb-1"
    assert decrypt_value(box, "in clear") == "in clear"
    with pytest.raises(ConfigurationError, match="PARLEY_SECRET_KEY"):
        decrypt_value(SecretBox([OLD]), sealed)
    with pytest.raises(ConfigurationError, match="PARLEY_SECRET_KEY"):
        decrypt_value(SecretBox(), sealed)
    with pytest.raises(ConfigurationError, match="shorter than 16"):
        SecretBox.from_settings(Settings(secret_key="short"))


def test_the_database_holds_no_plaintext_and_the_api_no_secrets(stored: dict[str, Any]) -> None:
    raw = raw_rows(stored["db"])
    assert raw.count(MARKER) == 2 + 2 * 2  # channel: 2; bot and its version: 2 each
    for secret in PLAINTEXTS:
        assert secret not in raw
    assert set(stored["channel"]["config"]) == set()  # write-only: no secret returned
    headers = stored["bot"]["definition"]["action_server"]["headers"]
    assert headers["Authorization"].startswith(MARKER)


def test_refuses_to_start_without_the_key_or_with_a_wrong_one(stored: dict[str, Any]) -> None:
    db = stored["db"]
    with pytest.raises(ConfigurationError, match="PARLEY_SECRET_KEY") as missing:
        start(settings_for(db, None))
    assert "encrypted" in missing.value.message
    with pytest.raises(ConfigurationError, match="does not decrypt with any key"):
        start(settings_for(db, NEW))
    start(settings_for(db, OLD))  # the right key starts


def test_rotation_to_a_new_key(stored: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from parley.cli import app

    db = stored["db"]
    before = raw_rows(db)
    start(settings_for(db, f"{NEW},{OLD}"))  # the new key first, the old one still reads
    monkeypatch.setenv("PARLEY_DATA_DIR", str(db.tmp))
    monkeypatch.setenv("PARLEY_DB__URL", db.url)
    monkeypatch.setenv("PARLEY_SECRET_KEY", f"{NEW},{OLD}")
    out = CliRunner().invoke(app, ["secrets", "rotate"])
    assert out.exit_code == 0, out.output
    assert "6 secret values" in out.output
    after = raw_rows(db)
    assert after != before and all(s not in after for s in PLAINTEXTS)
    with pytest.raises(ConfigurationError):
        start(settings_for(db, OLD))  # the old key alone no longer reads them
    gateway = start(settings_for(db, NEW))  # the new key alone does
    with session_scope(gateway.engine) as session:
        row = session.get(Channel, stored["channel"]["id"])
        assert row is not None
        config = open_config(gateway.secrets, row.config)
    assert {k: config[k] for k in SLACK} == SLACK


def test_without_a_key_secrets_are_stored_in_clear_and_the_marker_is_reserved(
    tmp_path: Path,
) -> None:
    with TestClient(create_app(settings_for(sqlite(tmp_path), None), warm_encoder=False)) as client:
        tenant = client.post("/v1/tenants", json={"name": "t"}, headers=OPERATOR).json()
        key = {"Authorization": f"Bearer {tenant['api_key']}"}
        assert client.post("/v1/bots", json=BOT, headers=key).status_code == 201
        forged = {**BOT, "action_server": {"url": "https://a.example.com", "headers": {
            "Authorization": MARKER + "gAAAAA-not-ours"
        }}}  # fmt: skip
        r = client.post("/v1/bots", json=forged, headers=key)
        assert r.status_code == 422
        assert "action_server.headers.Authorization" in r.json()["message"]
    assert ACTION_TOKEN in raw_rows(sqlite(tmp_path))
    start(settings_for(sqlite(tmp_path), None))  # nothing encrypted: starts without a key


def test_an_action_server_receives_its_decrypted_headers() -> None:
    box = SecretBox([NEW])
    data = {
        "name": "b",
        "action_server": {
            "url": "https://actions.example.com/webhook",
            "headers": {"Authorization": encrypt_value(box, ACTION_TOKEN)},
        },
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"events": [], "responses": []})

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            result = await Actions(client, secrets=box).run(
                "action_check",
                bot=parse_definition(data),
                tracker=Tracker(conversation_id="c", sender_id="s"),
            )
            assert result.error is None, result.error

    asyncio.run(go())
    assert seen[0].headers["authorization"] == ACTION_TOKEN
