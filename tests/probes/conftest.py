"""A live gateway for the probes: ``parley serve --no-demo`` as a subprocess on 127.0.0.1, on a
fresh SQLite data directory, with three tenants (``a``, ``b``, ``c``) and their admin keys.

The probes act as an outside client: they speak HTTP (and websockets) to a real server, so a
body cap, a streaming read or a crash is seen the way a user would see it. One server is shared
by the whole session (``live_gateway``); a probe that needs a tenant of its own asks for one
with ``live_gateway.new_tenant(name)``.

Rate limits are turned off on this server (``PARLEY_RATE_LIMITS__ENABLED=false``, and the
throttle of failed authentications per address raised out of reach): the probes send hundreds
of refused requests in a minute from one address and must see each route's own answer, not a
``429``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.harness import parley_server
from tests.conftest import CACHE_DIR

OPERATOR_TOKEN = "probe-operator-" + secrets.token_hex(8)
AGENT_PASSWORD = "probe-password-1"


@dataclass(frozen=True)
class ProbeTenant:
    name: str
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class LiveGateway:
    """A running ``parley serve``: its URL, its database and log, and tenants with admin keys."""

    url: str
    data_dir: Path
    log_path: Path
    pid: int  # the server process (HTTP is answered in it; train workers are its children)
    tenants: dict[str, ProbeTenant] = field(default_factory=dict)

    @property
    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    @property
    def db_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'parley.db').resolve()}"

    def client(self, timeout: float = 30.0, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, **kwargs)

    def new_tenant(self, name: str) -> ProbeTenant:
        """A tenant made by the operator over the API, with its first (admin) key."""
        r = httpx.post(
            f"{self.url}/v1/tenants", json={"name": name}, headers=self.operator, timeout=30
        )
        assert r.status_code == 201, r.text
        body = r.json()
        tenant = ProbeTenant(name, body["tenant_id"], body["api_key"])
        self.tenants[name] = tenant
        return tenant

    def add_agent(self, tenant: ProbeTenant, username: str, role: str = "agent") -> str:
        """An agent account of ``tenant`` (as ``parley agents create`` makes it); its id."""
        from bot_gateway.services.accounts import create_agent
        from core.db import get_engine, session_scope

        with session_scope(get_engine(self.db_url)) as session:
            agent = create_agent(
                session,
                tenant_id=tenant.id,
                username=username,
                password=AGENT_PASSWORD,
                role=role,
                name=f"{username} of {tenant.name}",
            )
            return agent.id

    def agent_cookie(self, tenant: ProbeTenant, username: str) -> str:
        """A logged-in agent's session cookie value."""
        r = httpx.post(
            f"{self.url}/v1/agent/login",
            json={"tenant": tenant.name, "username": username, "password": AGENT_PASSWORD},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.cookies["parley_agent"]

    def alive(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/health", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def agent_headers(cookie: str) -> dict[str, str]:
    """The headers of a request with an agent's session: the cookie and its CSRF token."""
    from bot_gateway.services.accounts import csrf_token

    return {"Cookie": f"parley_agent={cookie}", "X-CSRF-Token": csrf_token(cookie)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """One ``parley serve`` for the session, with tenants ``a``, ``b`` and ``c``."""
    tmp = tmp_path_factory.mktemp("probe-gateway")
    env = {
        "PARLEY_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "PARLEY_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "PARLEY_CACHE_DIR": str(CACHE_DIR),
        "PARLEY_QUEUE__THREADS": "1",
        "PARLEY_SERVING__TORCH_THREADS": "1",
        "PARLEY_RATE_LIMITS__ENABLED": "false",
        "PARLEY_RATE_LIMITS__AUTH_FAILURES_PER_ADDRESS__PER_SECOND": "1000",
        "PARLEY_RATE_LIMITS__AUTH_FAILURES_PER_ADDRESS__BURST": "1000000",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    with contextlib.ExitStack() as stack:
        # the server reads only the settings above, not the caller's PARLEY_* variables
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PARLEY_")}
        try:
            url, proc, _startup = stack.enter_context(
                parley_server(tmp / "data", free_port(), tmp / "server.log", env)
            )
        finally:
            os.environ.update(saved)
        gateway = LiveGateway(url, tmp / "data", tmp / "server.log", proc.pid)
        for name in ("a", "b", "c"):
            tenant = gateway.new_tenant(f"probe-{name}-{secrets.token_hex(3)}")
            gateway.tenants[name] = gateway.tenants.pop(tenant.name)
        yield gateway


def wait_for(predicate: Any, what: str, timeout: float = 180.0, every: float = 0.25) -> Any:
    """Poll ``predicate()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
