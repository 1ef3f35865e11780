"""The Studio's new surface probed as an outsider would: sign-in, users and invites, CSRF, the
session cookie where it must be refused, hostile query values and bodies, and the Studio's
static files. Each probe is a request a stranger (or a careless user) could send; each must be
answered with a 4xx that says what is wrong, never a 500, and the gateway keeps serving.

Most run in-process (TestClient) on a fresh SQLite gateway with two tenants, each with an admin,
a builder and an agent; one runs against the real ``parley serve`` of ``live_gateway``.
"""

from __future__ import annotations

import io
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

from bot_gateway.app import create_app
from bot_gateway.services import accounts
from core.db import session_scope, utcnow
from core.tables import Invite
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.probes.conftest import AGENT_PASSWORD, LiveGateway
from tests.support.sessions import sign_in

PASSWORD = "correct horse battery"
MAX_LABELS = 5  # the world's PARLEY_LIMITS__MAX_LABELS
STATIC_PROBES = [
    "/studio/static/%00",
    "/studio/static/studio.js%00.png",
    "/studio/static/" + "a" * 300,  # longer than a file name may be
    "/studio/static/" + "a/" * 3000,  # longer than a path may be
    "/studio/static/..%2f..%2fpyproject.toml",
    "/studio/static/pages/..%2f..%2f..%2f..%2fpyproject.toml",
    "/console/agents/static/%00",
    "/console/agents/static/" + "b" * 300,
]


@dataclass
class World:
    app: Any
    tenant_ids: dict[str, str]
    addresses: Iterator[int]

    def browser(self) -> TestClient:
        """A new browser (its own cookie jar) at an address of its own."""
        return TestClient(
            self.app, raise_server_exceptions=False, client=(f"10.3.0.{next(self.addresses)}", 1)
        )

    def sign_in(
        self, username: str, tenant: str = "shop", password: str = PASSWORD
    ) -> tuple[TestClient, dict[str, str]]:
        """A browser signed in as ``username`` and the header with its CSRF token."""
        browser = self.browser()
        return browser, sign_in(browser, tenant=tenant, username=username, password=password)


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("studio_probe")
    url = make_db_url("sqlite", tmp, request)
    settings = make_settings(tmp, url, queue={"workers": 0}, limits={"max_labels": MAX_LABELS})
    app = create_app(settings, warm_encoder=False)
    with TestClient(app) as client:
        made = {
            n: client.post("/v1/tenants", json={"name": n}, headers=OPERATOR).json()
            for n in ("shop", "other")
        }
        with session_scope(app.state.gateway.engine) as session:
            for tenant in made:
                for username, role in (("ada", "admin"), ("bob", "builder"), ("ana", "agent")):
                    accounts.create_user(
                        session,
                        tenant_id=made[tenant]["tenant_id"],
                        username=username,
                        password=PASSWORD,
                        role=role,
                    )
        yield World(app, {n: t["tenant_id"] for n, t in made.items()}, iter(range(1, 250)))


def invite(world: World, username: str, role: str = "builder") -> httpx.Response:
    admin, csrf = world.sign_in("ada")
    return admin.post("/v1/users/invites", json={"username": username, "role": role}, headers=csrf)


@pytest.mark.parametrize("path", STATIC_PROBES, ids=lambda p: p[:48])
def test_a_hostile_static_file_name_is_not_found(world: World, path: str) -> None:
    """A NUL byte or a name longer than the file system takes was a 500 (the path could not
    be resolved); every such name is a plain 404, and the Studio keeps loading."""
    browser = world.browser()
    r = browser.get(path)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found"
    assert browser.get("/studio/static/studio.js").status_code == 200


def test_a_username_is_the_same_however_its_accents_were_typed(world: World) -> None:
    """An invite for "José" typed with a combining accent (NFD, as macOS keyboards send it)
    made a user who could not sign in when the accent came as one character (NFC)."""
    nfd = unicodedata.normalize("NFD", "José")
    nfc = unicodedata.normalize("NFC", "José")
    r = invite(world, nfd)
    assert r.status_code == 201, r.text
    assert r.json()["invite"]["username"] == nfc
    accepted = world.browser().post(
        "/v1/auth/accept-invite", json={"token": r.json()["token"], "password": PASSWORD}
    )
    assert accepted.status_code == 200, accepted.text
    for typed in (nfc, nfd):
        _, csrf = world.sign_in(typed)
        assert csrf["X-CSRF-Token"]
    again = invite(world, nfd)  # the same name, however typed, is taken
    assert again.status_code == 409, again.text


@pytest.mark.parametrize(
    "username",
    ["\u202eadmin", "ad\u200bmin", "ada\u0007"],
    ids=["right-to-left-override", "zero-width-space", "bell"],
)
def test_a_username_with_invisible_characters_is_refused(world: World, username: str) -> None:
    """A name that hides characters (one that flips the text, an invisible space) could pass
    for another user in the admins' list; it is refused, naming the character."""
    r = invite(world, username)
    assert r.status_code == 422, r.text
    assert "U+" in r.json()["message"]


def test_an_empty_datasets_label_chart_is_drawn(world: World) -> None:
    """A dataset whose examples were all deleted drew its label chart on a singular axis
    (matplotlib's warning, an error under a strict server); it is an empty chart."""
    builder, csrf = world.sign_in("bob")
    r = builder.post(
        "/v1/datasets",
        json={
            "name": "emptied",
            "type": "text-intent",
            "examples": [{"text": "hello", "label": "greet"}, {"text": "bye", "label": "bye"}],
        },
        headers=csrf,
    )
    assert r.status_code == 201, r.text
    ds = r.json()["id"]
    for example in builder.get(f"/v1/datasets/{ds}/examples").json()["examples"]:
        gone = builder.delete(f"/v1/datasets/{ds}/examples/{example['id']}", headers=csrf)
        assert gone.status_code == 204, gone.text
    chart = builder.get(f"/v1/datasets/{ds}/plots/labels.svg")
    assert chart.status_code == 200, chart.text
    assert chart.headers["content-type"].startswith("image/svg+xml")


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_a_label_with_dollar_signs_is_drawn_as_written(world: World, fmt: str) -> None:
    """matplotlib read a label between ``$`` signs as TeX: "$\\badcommand$" or an unpaired
    "$x^{$" made every chart of the dataset (or model, or bot) a 500, and "$5 off ... $10"
    was typeset as math. A label is text."""
    builder, csrf = world.sign_in("bob")
    labels = ["$5 off or $10 back", "$\\badcommand$", "x^{$"]
    r = builder.post(
        "/v1/datasets",
        json={
            "name": "prices",
            "type": "text-intent",
            "examples": [{"text": f"text {i}", "label": label} for i, label in enumerate(labels)],
        },
        headers=csrf,
    )
    assert r.status_code == 201, r.text
    chart = builder.get(f"/v1/datasets/{r.json()['id']}/plots/labels.{fmt}")
    assert chart.status_code == 200, chart.text
    if fmt == "svg":
        assert all(label in chart.text for label in labels)


def test_editing_an_images_boxes_keeps_the_datasets_label_limit(world: World) -> None:
    """PATCH of a detection example's boxes took any number of new labels (5,000 boxes of
    5,000 labels were kept), past the per-dataset label limit an import enforces; over the
    limit the edit is refused and the dataset is as it was."""
    builder, csrf = world.sign_in("bob")
    pictures = io.BytesIO()
    with zipfile.ZipFile(pictures, "w") as archive:
        for i in range(2):
            png = io.BytesIO()
            Image.new("RGB", (40, 30), (90 * i, 0, 0)).save(png, "PNG")
            archive.writestr(f"{i}.png", png.getvalue())
        archive.writestr(
            "annotations.csv",
            "file,label,x_min,y_min,x_max,y_max\n0.png,cat,1,1,10,10\n1.png,dog,2,2,20,20\n",
        )
    r = builder.post(
        "/v1/datasets",
        files={"file": ("boxes.zip", pictures.getvalue())},
        data={"name": "boxes", "type": "image-detection"},
        headers=csrf,
    )
    assert r.status_code == 201, r.text
    ds = r.json()["id"]
    first = builder.get(f"/v1/datasets/{ds}/examples").json()["examples"][0]["id"]
    box = {"x_min": 1, "y_min": 1, "x_max": 5, "y_max": 5}
    within = [{"label": f"l{i}", **box} for i in range(MAX_LABELS - 1)]  # + dog = the limit
    r = builder.patch(f"/v1/datasets/{ds}/examples/{first}", json={"boxes": within}, headers=csrf)
    assert r.status_code == 200, r.text
    over = [*within, {"label": "one-too-many", **box}]
    r = builder.patch(f"/v1/datasets/{ds}/examples/{first}", json={"boxes": over}, headers=csrf)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "limit_exceeded" and "max_labels" in r.text.lower()
    dataset = builder.get(f"/v1/datasets/{ds}").json()
    assert dataset["num_labels"] == MAX_LABELS
    assert "one-too-many" not in {label["name"] for label in dataset["labels"]}


def test_sign_in_and_invites_refuse_what_they_must(world: World) -> None:
    """Invites: a builder cannot send one, a role must be one of the four (exactly), a link
    works once, another tenant's admin cannot revoke it; CSRF: another session's token or a
    wrong one is refused; an agent's cookie reaches no /v1 route; the operator's routes never
    take a cookie; a long password (scrypt's input) is bounded."""
    builder, b_csrf = world.sign_in("bob")
    r = builder.post("/v1/users/invites", json={"username": "eve", "role": "admin"}, headers=b_csrf)
    assert r.status_code == 403, r.text
    for role in ("root", "ADMIN", "", None):
        assert invite(world, "eve", role).status_code == 422  # type: ignore[arg-type]

    made = invite(world, "carl")
    assert made.status_code == 201, made.text
    zed, z_csrf = world.sign_in("ada", tenant="other")
    revoke = zed.delete(f"/v1/users/invites/{made.json()['invite']['id']}", headers=z_csrf)
    assert revoke.status_code == 404, revoke.text
    long_password = "p" * 500
    first = world.browser().post(
        "/v1/auth/accept-invite", json={"token": made.json()["token"], "password": long_password}
    )
    assert first.status_code == 200, first.text
    reused = world.browser().post(
        "/v1/auth/accept-invite", json={"token": made.json()["token"], "password": PASSWORD}
    )
    assert reused.status_code == 401, reused.text
    world.sign_in("carl", password=long_password)
    too_long = world.browser().post(
        "/v1/auth/login", json={"tenant": "shop", "username": "carl", "password": "p" * 501}
    )
    assert too_long.status_code == 422, too_long.text

    admin, _ = world.sign_in("ada")
    body = {"username": "dan", "role": "builder"}
    for headers in ({}, {"X-CSRF-Token": "0" * 64}, b_csrf, z_csrf):
        r = admin.post("/v1/users/invites", json=body, headers=headers)
        assert r.status_code == 403 and "CSRF" in r.json()["message"], r.text
    assert admin.get("/v1/auth/logout").status_code == 405  # no sign-out by a mere link

    agent, a_csrf = world.sign_in("ana")
    for method, path in (("GET", "/v1/datasets"), ("GET", "/v1/users"), ("POST", "/v1/keys")):
        r = agent.request(method, path, json={"name": "k", "scopes": ["admin"]}, headers=a_csrf)
        assert r.status_code == 403, (path, r.text)
    tenants = admin.post("/v1/tenants", json={"name": "evil"}, headers=_csrf_of(admin))
    assert tenants.status_code == 401, tenants.text
    assert admin.get("/v1/auth/me").status_code == 200  # and the admin is still signed in


def _csrf_of(browser: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": browser.get("/v1/auth/me").json()["csrf_token"]}


def test_an_expired_invite_is_refused_and_can_be_sent_again(world: World) -> None:
    """An invite past its 7 days: its link is 401, it is no longer pending, and the admin can
    invite the same name again (the new link works)."""
    made = invite(world, "late")
    assert made.status_code == 201, made.text
    with session_scope(world.app.state.gateway.engine) as session:
        session.execute(
            update(Invite)
            .where(Invite.id == made.json()["invite"]["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    late = world.browser().post(
        "/v1/auth/accept-invite", json={"token": made.json()["token"], "password": PASSWORD}
    )
    assert late.status_code == 401, late.text
    admin, _ = world.sign_in("ada")
    pending = {i["username"] for i in admin.get("/v1/users/invites").json()["invites"]}
    assert "late" not in pending
    again = invite(world, "late")
    assert again.status_code == 201, again.text
    accepted = world.browser().post(
        "/v1/auth/accept-invite", json={"token": again.json()["token"], "password": PASSWORD}
    )
    assert accepted.status_code == 200 and accepted.json()["user"]["username"] == "late"


def test_hostile_bot_definitions_to_validate_are_refused_quickly(world: World) -> None:
    """A 5 MB definition is over the JSON body limit (413); a deeply nested or alias-bombed
    YAML definition is over the document limits (422), before anything parses it whole."""
    builder, csrf = world.sign_in("bob")
    huge = "name: x\nresponses: {u: [{text: " + "a" * 5_000_000 + "}]}\n"
    r = builder.post("/v1/bots/validate", json={"definition": huge}, headers=csrf)
    assert r.status_code == 413, r.text[:300]
    deep = "a: " + "[" * 10_000 + "]" * 10_000
    r = builder.post("/v1/bots/validate", json={"definition": deep}, headers=csrf)
    assert r.status_code == 422 and r.json()["limit"] == "max_document_depth", r.text[:300]
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
    )
    r = builder.post("/v1/bots/validate", json={"definition": bomb}, headers=csrf)
    assert r.status_code == 422 and r.json()["limit"] == "max_document_nodes", r.text[:300]


@pytest.mark.slow
def test_a_live_gateway_answers_hostile_static_names_and_keeps_serving(
    live_gateway: LiveGateway,
) -> None:
    """The same static-file names against a real ``parley serve``: 404s, no 500, still up."""
    with live_gateway.client() as client:
        for path in STATIC_PROBES:
            r = client.get(path)
            assert r.status_code in (404, 414), (path[:60], r.status_code, r.text[:200])
        assert client.get("/studio/datasets").status_code == 200
    assert live_gateway.alive(), live_gateway.log_tail()


@pytest.mark.slow
def test_a_live_gateways_studio_session_over_real_http(live_gateway: LiveGateway) -> None:
    """Over real HTTP: the session cookie is HttpOnly, SameSite=Strict, for the whole site;
    a builder's write needs its CSRF token; an admin of another tenant finds none of this
    tenant's users (404) and a builder manages no users (403)."""
    shop, other = live_gateway.new_tenant("studio-shop"), live_gateway.new_tenant("studio-other")
    builder_id = live_gateway.add_agent(shop, "bea", role="builder")
    live_gateway.add_agent(other, "oz", role="admin")

    def sign_in(tenant: str, username: str) -> tuple[httpx.Client, dict[str, str]]:
        client = live_gateway.client()
        r = client.post(
            "/v1/auth/login",
            json={"tenant": tenant, "username": username, "password": AGENT_PASSWORD},
        )
        assert r.status_code == 200, r.text
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        return client, {"X-CSRF-Token": r.json()["csrf_token"]}

    builder, csrf = sign_in(shop.name, "bea")
    oz, oz_csrf = sign_in(other.name, "oz")
    try:
        body = {"name": "faq", "type": "text-intent", "examples": [{"text": "hi", "label": "a"}]}
        assert builder.post("/v1/datasets", json=body).status_code == 403
        assert builder.post("/v1/datasets", json=body, headers=csrf).status_code == 201
        assert builder.get("/v1/users").status_code == 403
        r = oz.patch(f"/v1/users/{builder_id}", json={"disabled": True}, headers=oz_csrf)
        assert r.status_code == 404, r.text
        assert builder.get("/v1/auth/me").status_code == 200  # still signed in, not disabled
    finally:
        builder.close()
        oz.close()
    assert live_gateway.alive(), live_gateway.log_tail()
