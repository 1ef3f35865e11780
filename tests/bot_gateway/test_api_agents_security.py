"""Agents' logins and live socket under attack (issue 12, findings 4 and 6), and failed
authentications of any kind throttled per client address."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bot_gateway.app import create_app
from bot_gateway.services import accounts as agent_service
from bot_gateway.services.accounts import create_agent
from core.counters import MemoryCounterStore
from core.db import get_engine, session_scope
from core.errors import Unauthenticated
from core.tables import Agent
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
BURST = 10  # failed authentications per address within BURST / PER_SECOND seconds
PER_SECOND = 0.1
LOGIN = "/v1/agent/login"


@dataclass
class Gw:
    app: Any
    client: TestClient
    tenants: dict[str, dict[str, Any]]
    db_url: str

    def at(self, address: str) -> TestClient:
        """A client calling from ``address`` (the app is already started by ``client``)."""
        return TestClient(self.app, client=(address, 50000))

    def unlock(self, tenant: str, username: str) -> None:
        gateway = self.app.state.gateway
        with session_scope(gateway.engine) as session:
            agent_service.unlock(session, gateway.counter_store, tenant=tenant, username=username)


@pytest.fixture(scope="module")
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("agents_security")
    url = make_db_url("sqlite", tmp, request)
    rate = {"per_second": PER_SECOND, "burst": BURST}
    settings = make_settings(tmp, url, rate_limits={"auth_failures_per_address": rate})
    app = create_app(settings)
    with TestClient(app) as client:
        tenants = {
            n: client.post("/v1/tenants", json={"name": n}, headers=OPERATOR).json()
            for n in ("shop", "other")
        }
        with session_scope(get_engine(url)) as session:
            for username in ("ana", "bo", "cy", "dee"):
                agent = create_agent(
                    session,
                    tenant_id=tenants["shop"]["tenant_id"],
                    username=username,
                    password=PASSWORD,
                )
            agent.disabled_at = agent.created_at  # dee
            session.add(agent)
        yield Gw(app, client, tenants, url)


def login(client: TestClient, tenant: str, username: str, password: str) -> Any:
    return client.post(LOGIN, json={"tenant": tenant, "username": username, "password": password})


def test_the_lockout_is_the_accounts_however_the_tenant_is_named(gw: Gw) -> None:
    c = gw.at("10.0.1.1")
    shop_id = gw.tenants["shop"]["tenant_id"]
    names = ["shop", shop_id, " shop", shop_id, "shop "]  # five guesses, not five per name
    assert [login(c, t, "bo", "a-wrong-guess").status_code for t in names] == [401] * 5
    for tenant in ("shop", shop_id):  # the right password, by name or id, waits too
        locked = login(c, tenant, "bo", PASSWORD)
        assert locked.status_code == 429, locked.text
        wait = int(locked.headers["Retry-After"])
        assert 1 <= wait <= 300 and f"try again in {wait} s" in locked.json()["message"]
    assert login(c, "shop", "ana", PASSWORD).status_code == 200  # other accounts are not locked
    gw.unlock(shop_id, "bo")
    assert login(c, shop_id, "bo", PASSWORD).status_code == 200


def test_guesses_at_unknown_accounts_are_throttled_too(gw: Gw) -> None:
    c = gw.at("10.0.1.2")
    guesses = [("NoSuch", "ghost"), ("nosuch ", "Ghost"), ("NOSUCH", "ghost ")] * 2
    codes = [login(c, t, u, "a-wrong-guess").status_code for t, u in guesses]
    assert codes == [401] * 5 + [429]
    c = gw.at("10.0.1.3")  # a username the tenant does not have
    codes = [login(c, "shop", "nobody", "a-wrong-guess").status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    assert "Retry-After" in login(c, "shop", "nobody", "x").headers


def test_unknown_and_known_usernames_take_the_same_time(gw: Gw) -> None:
    """No enumeration by timing: a wrong password for a real agent costs what one for an
    unknown or disabled username, or an unknown tenant, does (scrypt every time). Timed at the
    service the login route calls, interleaved, so the machine's load hits every kind alike."""
    engine = gw.app.state.gateway.engine
    cases = {
        "known": ("shop", "ana"),
        "unknown user": ("shop", "ghost-user"),
        "disabled": ("shop", "dee"),
        "unknown tenant": ("nosuch", "ana"),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(9):
        for name, (tenant, username) in cases.items():
            counters = MemoryCounterStore()  # no lockout in the way
            with session_scope(engine) as session:
                started = time.perf_counter()
                with pytest.raises(Unauthenticated):
                    agent_service.authenticate(
                        session, counters, tenant=tenant, username=username, password="wrong-1"
                    )
                times[name].append(time.perf_counter() - started)
    known = statistics.median(times["known"])
    for measured in times.values():
        assert abs(statistics.median(measured) - known) / known < 0.5, times
    # and through the route: an unknown username is not answered faster (the median of three,
    # against half the service's time: skipping scrypt would answer in a few milliseconds)
    through_route = []
    for i in range(3):
        c = gw.at(f"10.0.2.{i + 1}")
        started = time.perf_counter()
        assert login(c, "shop", f"ghost-user-{i + 2}", "wrong-1").status_code == 401
        through_route.append(time.perf_counter() - started)
    assert statistics.median(through_route) > known * 0.5, (through_route, known)


def test_the_agents_socket_takes_only_the_consoles_origin(
    gw: Gw, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = gw.at("10.0.4.1")
    cookies = login(c, "shop", "ana", PASSWORD).cookies
    # no public URL: the host the request came to
    with c.websocket_connect("/v1/agent/ws", cookies=cookies) as live:  # not a browser
        live.send_bytes(b"\xff\xfe not text")  # ignored; the socket stays up
        live.send_text('{"type": "ping"}')
        assert live.receive_json() == {"type": "pong"}
    with c.websocket_connect(
        "/v1/agent/ws", cookies=cookies, headers={"origin": "http://testserver"}
    ) as live:
        live.send_text('{"type": "ping"}')
        assert live.receive_json() == {"type": "pong"}
    refused = ["http://evil.example", "null", "http://testserver.evil.example"]
    settings = gw.app.state.gateway.settings
    monkeypatch.setattr(settings, "public_url", "https://parley.example")
    refused.append("http://testserver")  # once a public URL is set, only its origin
    for origin in refused:
        with c.websocket_connect(
            "/v1/agent/ws", cookies=cookies, headers={"origin": origin}
        ) as live:
            frame = live.receive_json()
            assert frame["error"] == "forbidden" and "PARLEY_PUBLIC_URL" in frame["message"]
            with pytest.raises(WebSocketDisconnect) as closed:
                live.receive_json()
            assert closed.value.code == 4403
    with c.websocket_connect(
        "/v1/agent/ws", cookies=cookies, headers={"origin": "https://parley.example"}
    ) as live:
        live.send_text('{"type": "ping"}')
        assert live.receive_json() == {"type": "pong"}


def test_the_session_cookie_is_secure_behind_an_https_public_url(
    gw: Gw, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = gw.at("10.0.4.2")
    cookie = login(c, "shop", "ana", PASSWORD).headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    monkeypatch.setattr(gw.app.state.gateway.settings, "public_url", "https://parley.example")
    cookie = login(c, "shop", "ana", PASSWORD).headers["set-cookie"].lower()
    assert "; secure" in cookie


def test_failed_authentications_are_throttled_per_address(gw: Gw) -> None:
    c = gw.at("10.0.3.1")
    key = {"Authorization": f"Bearer {gw.tenants['shop']['api_key']}"}
    # successes never count
    assert all(c.get("/v1/backends", headers=key).status_code == 200 for _ in range(2 * BURST))
    failures = [
        lambda: c.get("/v1/backends", headers={"Authorization": "Bearer pk_wrong"}),
        lambda: c.get("/v1/backends"),  # no key at all
        lambda: c.get("/v1/metrics", headers={"Authorization": "Bearer not-the-operator"}),
        lambda: login(c, "shop", "ana", "a-wrong-guess"),
    ]
    codes = [failures[i % len(failures)]().status_code for i in range(BURST)]
    assert codes == [401] * BURST
    gw.unlock("shop", "ana")
    # over the limit: every further failure is a 429, and so is an agent's login (checking a
    # password is the expensive work being guarded), even with the right password
    for r in (
        c.get("/v1/backends", headers={"Authorization": "Bearer pk_wrong"}),
        c.get("/v1/metrics", headers={"Authorization": "Bearer not-the-operator"}),
        login(c, "shop", "ana", PASSWORD),
    ):
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "too_many_requests"
        assert 1 <= int(r.headers["Retry-After"]) <= BURST / PER_SECOND
    # valid keys from the same address (a NAT, a proxy) keep working
    assert c.get("/v1/backends", headers=key).status_code == 200
    assert c.get("/v1/metrics", headers=OPERATOR).status_code == 200
    # other addresses are not affected
    other = gw.at("10.0.3.2")
    assert other.get("/v1/backends", headers=key).status_code == 200
    assert other.get("/v1/backends", headers={"Authorization": "Bearer pk_x"}).status_code == 401


def test_disabled_agents_cannot_log_in(gw: Gw) -> None:
    c = gw.at("10.0.4.3")
    r = login(c, "shop", "dee", PASSWORD)
    assert r.status_code == 401 and r.json()["message"] == "wrong tenant, username or password"
    with session_scope(get_engine(gw.db_url)) as session:
        assert session.query(Agent).filter_by(username="dee").one().disabled_at is not None
