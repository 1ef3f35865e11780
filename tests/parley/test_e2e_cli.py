"""End to end: `parley serve` as a subprocess, driven by the `parley` CLI over HTTP."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.db import head_revision
from tests.conftest import CACHE_DIR, make_db_url
from tests.support.data import intent_csv
from tests.support.images import shape_image, shipping_label_png

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BIN = Path(sys.executable).parent
PARLEY = str(BIN / "parley")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(
        PARLEY_DATA_DIR=str(data_dir),
        PARLEY_CACHE_DIR=str(CACHE_DIR),
        PARLEY_QUEUE__THREADS="1",
        PARLEY_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    env.update(extra)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    output: list[str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(env: dict[str, str], *args: str) -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [PARLEY, "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    output: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            output.append(line)
            continue
        if proc.poll() is not None:
            raise AssertionError("server exited:\n" + "".join(output))
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return Server(proc, url, output)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(output))


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([PARLEY, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def cli_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(cli(env, *args, "--json").stdout)


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    env = base_env(tmp_path / "var")
    server = start_server(env)
    try:
        yield server, env
    finally:
        server.stop()


def test_demo_tenant_then_cli_workflow_then_restart(
    served: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    server, env = served
    printed = "".join(server.output)
    match = re.search(r"Demo tenant API key: (pk_\S+)", printed)
    assert match, printed
    demo_key = match.group(1)
    client_env = {**env, "PARLEY_URL": server.url, "PARLEY_API_KEY": demo_key}

    # the demo model trains in the background; production points at it when it succeeds
    deadline = time.monotonic() + 180
    while not any(a["name"] == "production" for a in cli_json(client_env, "aliases", "list")):
        assert time.monotonic() < deadline, cli(client_env, "models", "list").stdout
        time.sleep(1)
    datasets = cli_json(client_env, "datasets", "list")
    assert datasets[0]["num_labels"] >= 10 and datasets[0]["num_examples"] >= 150
    answer = cli_json(client_env, "predict", "production", "where is my parcel? it's late")
    assert answer["predictions"][0]["label"] == "track_order"

    # the demo bot passes its story tests through `parley test-bot`
    bots = httpx.get(f"{server.url}/v1/bots", headers={"Authorization": f"Bearer {demo_key}"})
    (demo_bot,) = bots.json()
    assert demo_bot["status"] == "ready"
    (tmp_path / "label.png").write_bytes(shipping_label_png())
    (tmp_path / "damage.png").write_bytes(shape_png())
    (tmp_path / "stories.yml").write_text(DEMO_STORIES)
    tested = cli(client_env, "test-bot", demo_bot["id"], str(tmp_path / "stories.yml"), check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "7 passed, 0 failed" in tested.stdout, tested.stdout

    # an operator creates a tenant; its developer uploads, trains, reads metrics, predicts
    tenant = cli_json(env, "tenants", "create", "acme")
    assert tenant["api_key"].startswith("pk_")
    acme = {**env, "PARLEY_URL": server.url, "PARLEY_API_KEY": tenant["api_key"]}
    csv_path = tmp_path / "intents.csv"
    csv_path.write_bytes(intent_csv())
    dataset = cli_json(acme, "datasets", "create", str(csv_path), "--name", "intents")
    assert dataset["status"] == "ready" and dataset["num_examples"] == 32
    model = cli_json(acme, "train", dataset["id"], "--param", "epochs=20", "--alias", "live")
    assert model["status"] == "succeeded", model
    metrics = cli_json(acme, "models", "metrics", model["id"])
    assert set(metrics) >= {"accuracy", "macro_f1", "per_label", "confusion_matrix"}
    curve = cli_json(acme, "models", "curve", model["id"])
    assert len(curve["points"]) == 20
    answer = cli_json(acme, "predict", "live", "hello there", "i want my money back")
    assert [p[0]["label"] for p in answer["predictions"]] == ["greet", "refund"]
    human = cli(acme, "predict", "live", "bye for now").stdout
    assert "goodbye" in human
    # the out-of-scope threshold moves without retraining, and back
    moved = cli_json(acme, "models", "threshold", model["id"], "1")
    assert moved["metrics"]["out_of_scope"]["method"] == "manual"
    assert cli_json(acme, "predict", "live", "hello there")["out_of_scope"] is True
    restored = cli_json(acme, "models", "threshold", model["id"], "calibrated")
    assert restored["metrics"]["out_of_scope"]["threshold"] == metrics["out_of_scope"]["threshold"]
    # the CLI reports API errors clearly and exits non-zero
    bad = cli(acme, "predict", "production", "hi", check=False)
    assert bad.returncode == 1 and "404 not_found" in bad.stderr
    created = subprocess.run(
        [PARLEY, "agents", "create", "ana", "--tenant", "acme", "--role", "supervisor"]
        + ["--password-stdin", "--json"],
        env=env,
        input="a long passphrase\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["role"] == "supervisor"
    login = httpx.post(
        f"{server.url}/v1/agent/login",
        json={"tenant": "acme", "username": "ana", "password": "a long passphrase"},
    )
    assert login.status_code == 200 and login.json()["agent"]["username"] == "ana"
    scoped = cli_json(env, "keys", "create", "--tenant", "acme", "--scope", "predict")
    assert scoped["scopes"] == ["predict"]
    refused = cli({**acme, "PARLEY_API_KEY": scoped["api_key"]}, "datasets", "list", check=False)
    assert refused.returncode == 1 and "train" in refused.stderr

    # a restart keeps everything and trains nothing new
    server.stop()
    models_before = cli_json(env | {"PARLEY_URL": "http://127.0.0.1:1"}, "tenants", "list")
    assert {t["name"] for t in models_before} == {"demo", "acme"}
    again = start_server(env)
    try:
        assert demo_key in "".join(again.output)
        assert "is training" not in "".join(again.output)
        client_env["PARLEY_URL"] = again.url
        assert len(cli_json(client_env, "models", "list")) == 1
        answer = cli_json(client_env, "predict", "production", "cancel my order please")
        assert answer["predictions"][0]["label"] == "cancel_order"
    finally:
        again.stop()


DEMO_STORIES = """
stories:
  - name: greet, then track an order by its number
    steps:
      - user: hello
      - bot: utter_greet
      - user: {payload: /track_order, text: Track my order}
      - bot: utter_ask_order_id
      - user: PX-100234
      - bot: {contains: shipped}
  - name: a shipping label photo
    steps:
      - user: {image: label.png}
      - bot: {contains: PX-100234}
      - slots: {order_status: shipped}
  - name: cancel an order that has not shipped
    steps:
      - user: {payload: /cancel_order, text: Cancel an order}
      - bot: utter_ask_order_id
      - user: PX-100235
      - bot: utter_ask_confirm
      - user: {payload: /affirm, text: "Yes, cancel it"}
      - bot: utter_cancelled
  - name: a shipped order cannot be cancelled
    steps:
      - user: {payload: /cancel_order, text: Cancel an order}
      - bot: utter_ask_order_id
      - user: PX-100234
      - bot: utter_ask_confirm
      - user: "yes"
      - bot: utter_cannot_cancel
  - name: change the address
    steps:
      - user: {payload: /change_address, text: Change the address}
      - bot: utter_ask_order_id
      - user: PX-100237
      - bot: utter_ask_new_address
      - user: 221B Baker Street, London
      - bot: utter_address_changed
  - name: a damaged parcel with a photo
    steps:
      - user: {payload: /damaged_item, text: My parcel arrived damaged}
      - bot: utter_sorry_damage
      - bot: utter_ask_order_id
      - user: PX-100236
      - bot: utter_ask_damage_photo
      - user: {image: damage.png}
      - bot: utter_claim_filed
  - name: not understood, then a person
    steps:
      - user: {payload: /out_of_scope, text: "?"}
      - bot: utter_fallback
      - user: {payload: /talk_to_human, text: Talk to a person}
      - bot: utter_handoff
      - status: waiting_for_agent
"""


def shape_png() -> bytes:
    out = io.BytesIO()
    shape_image("square", 1, (320, 240)).save(out, format="PNG")
    return out.getvalue()


def test_cli_reports_an_unreachable_server(tmp_path: Path) -> None:
    env = base_env(tmp_path, PARLEY_URL="http://127.0.0.1:9", PARLEY_API_KEY="pk_x")
    result = cli(env, "datasets", "list", check=False)
    assert result.returncode == 1 and "cannot reach Parley" in result.stderr


def test_serve_refuses_an_unmigrated_postgres_until_db_upgrade(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_db_url("postgresql", tmp_path, request, migrate=False)
    env = base_env(tmp_path / "var", PARLEY_DB__URL=url)
    result = subprocess.run(
        [PARLEY, "serve", "--port", str(free_port()), "--no-demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "parley db upgrade" in result.stderr
    assert cli_json(env, "db", "current")["current"] is None
    cli(env, "db", "upgrade")
    assert cli_json(env, "db", "current")["current"] == head_revision(url)
    server = start_server(env)
    try:
        printed = "".join(server.output)
        key = re.search(r"Demo tenant API key: (pk_\S+)", printed).group(1)  # type: ignore[union-attr]
        r = httpx.get(f"{server.url}/v1/datasets", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()[0]["name"] == "order-tracking"
    finally:
        server.stop()


def test_a_key_works_the_moment_it_is_returned(tmp_path: Path) -> None:
    """Writes commit before the response leaves: a new tenant's key works at once (a real
    server; TestClient waits for the whole request and cannot show the race)."""
    env = base_env(tmp_path / "var", PARLEY_OPERATOR_TOKEN="operator-secret-123")
    server = start_server(env, "--no-demo", "--workers", "0")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(30):
                r = client.post(
                    "/v1/tenants",
                    json={"name": f"tenant-{i}"},
                    headers={"Authorization": "Bearer operator-secret-123"},
                )
                assert r.status_code == 201, r.text
                key = {"Authorization": f"Bearer {r.json()['api_key']}"}
                assert client.get("/v1/bots", headers=key).status_code == 200, i
    finally:
        server.stop()
