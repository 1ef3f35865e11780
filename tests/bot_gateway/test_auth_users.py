"""Users, roles and the Studio's sign-in through the real gateway: a session cookie works on
the ordinary /v1 routes with the scopes of the user's role, writes need the session's CSRF
token (bearer keys need none), admins invite users and manage roles (never leaving the tenant
without an admin), other tenants' users and invites are 404, failed logins lock the account
whichever login route they came through, and sessions end (logout, expiry, disabling)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from bot_gateway.app import create_app
from bot_gateway.services import accounts
from core.db import session_scope, utcnow
from core.tables import AgentSession
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.support.sessions import sign_in

PASSWORD = "correct horse battery"
DATASET = {
    "name": "faq",
    "type": "text-intent",
    "examples": [{"text": "hello there", "label": "greet"}, {"text": "bye now", "label": "bye"}],
}


@dataclass
class World:
    app: Any
    client: TestClient  # started the app; used with keys only
    keys: dict[str, dict[str, str]]  # tenant -> admin key headers
    tenant_ids: dict[str, str]
    users: dict[str, str]  # username -> id (tenant "shop", and "zed" of "other")
    addresses: Iterator[int]

    def browser(self) -> TestClient:
        """A new browser (its own cookie jar) at an address of its own."""
        return TestClient(self.app, client=(f"10.1.0.{next(self.addresses)}", 50000))

    def sign_in(self, username: str, tenant: str = "shop") -> tuple[TestClient, dict[str, str]]:
        """A browser signed in as ``username`` and the header with its CSRF token."""
        browser = self.browser()
        return browser, sign_in(browser, tenant=tenant, username=username, password=PASSWORD)


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("auth_users")
    url = make_db_url("sqlite", tmp, request)
    app = create_app(make_settings(tmp, url, queue={"workers": 0}), warm_encoder=False)
    with TestClient(app) as client:
        made = {
            n: client.post("/v1/tenants", json={"name": n}, headers=OPERATOR).json()
            for n in ("shop", "other")
        }
        users = {}
        with session_scope(app.state.gateway.engine) as session:
            for tenant, username, role in (
                ("shop", "ada", "admin"),
                ("shop", "bob", "builder"),
                ("shop", "ana", "agent"),
                ("shop", "sue", "supervisor"),
                ("other", "zed", "admin"),
            ):
                user = accounts.create_user(
                    session,
                    tenant_id=made[tenant]["tenant_id"],
                    username=username,
                    password=PASSWORD,
                    role=role,
                )
                users[username] = user.id
        yield World(
            app,
            client,
            {n: {"Authorization": f"Bearer {t['api_key']}"} for n, t in made.items()},
            {n: t["tenant_id"] for n, t in made.items()},
            users,
            iter(range(1, 250)),
        )


def test_a_builder_signs_in_and_uses_the_api_with_the_cookie(world: World) -> None:
    browser, csrf = world.sign_in("bob")
    me = browser.get("/v1/auth/me").json()
    assert me["user"] == {
        "id": world.users["bob"],
        "username": "bob",
        "name": "bob",
        "role": "builder",
        "tenant_id": world.tenant_ids["shop"],
        "tenant_name": "shop",
    }
    assert me["scopes"] == ["predict", "train"] and me["csrf_token"] == csrf["X-CSRF-Token"]
    assert browser.get("/v1/datasets").status_code == 200
    made = browser.post("/v1/datasets", json=DATASET, headers=csrf)
    assert made.status_code == 201, made.text
    # the tenant's key sees what the builder made: one tenant, two ways in
    listed = world.client.get("/v1/datasets", headers=world.keys["shop"]).json()
    assert made.json()["id"] in [d["id"] for d in listed]
    # builders cannot manage keys or users
    for path in ("/v1/keys", "/v1/users"):
        r = browser.get(path)
        assert r.status_code == 403 and "ask an admin" in r.json()["message"], r.text
    # the write is in the audit log under the user
    audit = world.client.get("/v1/audit", headers=world.keys["shop"]).json()
    actors = {e["actor"] for e in audit["entries"] if e["action"] == "POST /v1/datasets"}
    assert f"user:{world.users['bob']}" in actors


def test_writes_with_the_cookie_need_the_csrf_token(world: World) -> None:
    browser, csrf = world.sign_in("bob")
    for headers in ({}, {"X-CSRF-Token": "not-the-token"}):
        r = browser.post("/v1/datasets", json=DATASET, headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "forbidden" and "CSRF" in r.json()["message"]
    # another session's token is no good either
    _, other = world.sign_in("bob")
    assert browser.post("/v1/datasets", json=DATASET, headers=other).status_code == 403
    assert browser.post("/v1/datasets", json=DATASET, headers=csrf).status_code == 201
    # a bearer key needs no CSRF token, even from a browser holding a session cookie
    r = browser.post("/v1/datasets", json=DATASET, headers=world.keys["shop"])
    assert r.status_code == 201
    # the agents' console's writes too
    admin, admin_csrf = world.sign_in("ada")
    r = admin.post("/v1/agent/conversations/cv_0000000000000000/claim")
    assert r.status_code == 403 and "CSRF" in r.json()["message"]
    r = admin.post("/v1/agent/conversations/cv_0000000000000000/claim", headers=admin_csrf)
    assert r.status_code == 404


def test_agents_work_in_the_console_and_admins_supervise_there(world: World) -> None:
    agent, _ = world.sign_in("ana")
    r = agent.get("/v1/datasets")
    assert r.status_code == 403 and "/console/agents" in r.json()["message"]
    assert agent.get("/v1/auth/me").json()["scopes"] == []
    assert agent.get("/v1/agent/me").status_code == 200
    # a builder has no place in the agents' console, even with the right password
    r = world.browser().post(
        "/v1/agent/login", json={"tenant": "shop", "username": "bob", "password": PASSWORD}
    )
    assert r.status_code == 403 and "/studio" in r.json()["message"]
    builder, _ = world.sign_in("bob")
    assert builder.get("/v1/agent/inbox").status_code == 403
    # an admin signs in to the console (login answers the CSRF token) with a supervisor's rights
    admin = world.browser()
    r = admin.post(
        "/v1/agent/login", json={"tenant": "shop", "username": "ada", "password": PASSWORD}
    )
    assert r.status_code == 200 and r.json()["agent"]["role"] == "admin"
    assert r.json()["csrf_token"] == admin.get("/v1/agent/me").json()["csrf_token"]
    loads = admin.get("/v1/agent/agents")
    assert loads.status_code == 200
    assert {a["username"] for a in loads.json()} == {"ada", "ana", "sue"}  # no builders


def test_admins_manage_users_and_keys(world: World) -> None:
    admin, csrf = world.sign_in("ada")
    assert admin.get("/v1/keys").status_code == 200
    key = admin.post("/v1/keys", json={"scopes": ["predict"], "name": "ci"}, headers=csrf)
    assert key.status_code == 201, key.text
    users = admin.get("/v1/users").json()["users"]
    assert {u["username"]: u["role"] for u in users} == {
        "ada": "admin",
        "ana": "agent",
        "bob": "builder",
        "sue": "supervisor",
    }
    assert set(users[0]) == {"id", "username", "name", "role", "created_at", "disabled"}
    sue = world.users["sue"]
    r = admin.patch(f"/v1/users/{sue}", json={"role": "builder"}, headers=csrf)
    assert r.status_code == 200 and r.json()["role"] == "builder"
    bad = admin.patch(f"/v1/users/{sue}", json={"role": "owner"}, headers=csrf)
    assert bad.status_code == 422
    # the role change holds at once for sue's open session
    sue_browser, _ = world.sign_in("sue")
    assert sue_browser.get("/v1/datasets").status_code == 200
    admin.patch(f"/v1/users/{sue}", json={"role": "supervisor"}, headers=csrf)
    assert sue_browser.get("/v1/datasets").status_code == 403


def test_the_last_active_admin_stays(world: World) -> None:
    admin, csrf = world.sign_in("ada")
    ada = world.users["ada"]
    for change in ({"role": "builder"}, {"disabled": True}):
        r = admin.patch(f"/v1/users/{ada}", json=change, headers=csrf)
        assert r.status_code == 409 and "last active admin" in r.json()["message"], r.text
    # with a second admin, the first may step down (and back, through the other)
    bob = world.users["bob"]
    assert admin.patch(f"/v1/users/{bob}", json={"role": "admin"}, headers=csrf).status_code == 200
    assert (
        admin.patch(f"/v1/users/{ada}", json={"role": "builder"}, headers=csrf).status_code == 200
    )
    assert admin.get("/v1/users").status_code == 403  # ada is a builder now
    key = world.keys["shop"]
    assert world.client.patch(f"/v1/users/{ada}", json={"role": "admin"}, headers=key).is_success
    r = world.client.patch(f"/v1/users/{bob}", json={"role": "builder"}, headers=key)
    assert r.status_code == 200


def test_other_tenants_users_and_invites_are_not_found(world: World) -> None:
    admin, csrf = world.sign_in("ada")
    invite = admin.post(
        "/v1/users/invites", json={"username": "newbie", "role": "builder"}, headers=csrf
    ).json()["invite"]
    zed, zed_csrf = world.sign_in("zed", tenant="other")
    missing = "ag_0000000000000000"
    for user_id in (world.users["bob"], missing):
        r = zed.patch(f"/v1/users/{user_id}", json={"disabled": True}, headers=zed_csrf)
        assert r.status_code == 404 and r.json()["message"] == f"user {user_id} not found"
    for invite_id in (invite["id"], "inv_0000000000000000"):
        r = zed.delete(f"/v1/users/invites/{invite_id}", headers=zed_csrf)
        assert r.status_code == 404 and r.json()["message"] == f"invite {invite_id} not found"
    assert [u["username"] for u in zed.get("/v1/users").json()["users"]] == ["zed"]
    assert zed.get("/v1/users/invites").json() == {"invites": []}
    assert admin.delete(f"/v1/users/invites/{invite['id']}", headers=csrf).status_code == 204


def test_an_invited_user_accepts_and_signs_in(world: World) -> None:
    admin, csrf = world.sign_in("ada")
    body = {"username": "cleo", "name": "Cleo", "role": "builder"}
    r = admin.post("/v1/users/invites", json=body, headers=csrf)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["url"] == f"/studio/accept-invite?token={made['token']}"
    assert made["invite"]["username"] == "cleo" and made["invite"]["role"] == "builder"
    assert admin.post("/v1/users/invites", json=body, headers=csrf).status_code == 409
    taken = {"username": "bob", "role": "agent"}
    assert admin.post("/v1/users/invites", json=taken, headers=csrf).status_code == 409
    pending = admin.get("/v1/users/invites").json()["invites"]
    assert [i["username"] for i in pending] == ["cleo"]
    assert "token" not in pending[0]

    browser = world.browser()
    short = browser.post("/v1/auth/accept-invite", json={"token": made["token"], "password": "x"})
    assert short.status_code == 422
    accepted = browser.post(
        "/v1/auth/accept-invite", json={"token": made["token"], "password": "cleo's password"}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["user"]["name"] == "Cleo" and accepted.json()["scopes"] == [
        "predict",
        "train",
    ]
    assert browser.get("/v1/datasets").status_code == 200  # signed in by accepting
    again = world.browser().post(
        "/v1/auth/accept-invite", json={"token": made["token"], "password": "another password"}
    )
    assert again.status_code == 401 and "ask an admin" in again.json()["message"]
    assert admin.get("/v1/users/invites").json()["invites"] == []
    login = {"tenant": "shop", "username": "cleo", "password": "cleo's password"}
    assert world.browser().post("/v1/auth/login", json=login).status_code == 200
    # a revoked invite's link stops working
    made = admin.post(
        "/v1/users/invites", json={"username": "dan", "role": "agent"}, headers=csrf
    ).json()
    assert (
        admin.delete(f"/v1/users/invites/{made['invite']['id']}", headers=csrf).status_code == 204
    )
    r = world.browser().post(
        "/v1/auth/accept-invite", json={"token": made["token"], "password": "dan's password"}
    )
    assert r.status_code == 401


def test_failed_logins_lock_the_account_on_both_login_routes(world: World) -> None:
    engine = world.app.state.gateway.engine
    with session_scope(engine) as session:
        accounts.create_user(
            session,
            tenant_id=world.tenant_ids["shop"],
            username="lou",
            password=PASSWORD,
            role="builder",
        )
    wrong = {"tenant": "shop", "username": "lou", "password": "guess-guess"}
    browser = world.browser()
    codes = [browser.post("/v1/auth/login", json=wrong).status_code for _ in range(4)]
    codes.append(browser.post("/v1/agent/login", json=wrong).status_code)  # the same account
    codes.append(browser.post("/v1/auth/login", json=wrong).status_code)
    assert codes == [401] * 5 + [429]
    locked = world.browser().post("/v1/auth/login", json={**wrong, "password": PASSWORD})
    assert locked.status_code == 429 and "try again in" in locked.json()["message"]
    assert int(locked.headers["Retry-After"]) >= 1
    with session_scope(engine) as session:
        accounts.unlock(
            session, world.app.state.gateway.counter_store, tenant="shop", username="lou"
        )
    assert world.browser().post("/v1/auth/login", json={**wrong, "password": PASSWORD}).is_success


def test_sessions_end_on_logout_expiry_and_disabling(world: World) -> None:
    browser, csrf = world.sign_in("bob")
    assert browser.post("/v1/auth/logout").status_code == 403  # a write: the CSRF token too
    assert browser.post("/v1/auth/logout", headers=csrf).status_code == 204
    assert browser.get("/v1/auth/me").status_code == 401
    browser, _ = world.sign_in("bob")
    stale = browser.cookies["parley_agent"]
    with session_scope(world.app.state.gateway.engine) as session:
        session.execute(
            update(AgentSession)
            .where(AgentSession.agent_id == world.users["bob"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    r = browser.get("/v1/datasets")
    assert r.status_code == 401 and "sign in again" in r.json()["message"]
    fresh = world.browser()
    fresh.cookies.set("parley_agent", stale)
    assert fresh.get("/v1/auth/me").status_code == 401
    # disabling a user ends their sessions at once
    browser, _ = world.sign_in("ana")
    admin, csrf = world.sign_in("ada")
    ana = world.users["ana"]
    assert admin.patch(f"/v1/users/{ana}", json={"disabled": True}, headers=csrf).json()["disabled"]
    assert browser.get("/v1/agent/me").status_code == 401
    login = {"tenant": "shop", "username": "ana", "password": PASSWORD}
    assert world.browser().post("/v1/auth/login", json=login).status_code == 401
    admin.patch(f"/v1/users/{ana}", json={"disabled": False}, headers=csrf)
    assert world.browser().post("/v1/auth/login", json=login).status_code == 200
