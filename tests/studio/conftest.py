"""Fixtures for Parley Studio's browser tests: one real gateway for the whole tests/studio
package (uvicorn on a loopback port, the shared encoder warm, a local train worker), tenant
``shop`` with an admin and a builder and tenant ``rival`` with an admin, all made through the
public API (invites accepted like a person would), and one Chromium for the package (the
widget's browser tests' ``chromium()``). Starting them once, not once per module, saves a
server start and a browser launch per module; the modules stay independent of each other's
order: each makes its own datasets, models and bots under its own names, and when a module
ends its browser contexts are closed and any training it left running is cancelled.

``studio.open_page()`` gives a fresh browser context (its own cookies) whose relative URLs go
to the gateway and whose script errors and CSP violations are collected in ``page.problems``;
``sign_in(page, tenant, user, password)`` signs in at /studio/login;
``shot(page, name)`` saves ``var/test-artifacts/studio-<name>.png``; ``fits_a_tablet(page)``
checks the page at 768 x 1024.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import httpx
import pytest

from bot_gateway.app import create_app
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.connectors.test_widget_browser import ARTIFACTS, Browser, Page, chromium, expect
from tests.console.test_agents_console import Served

WAIT_MS = 20_000  # each Playwright wait retries until this ceiling
PASSWORD = "correct horse battery"
TENANT = "shop"
OTHER_TENANT = "rival"


@dataclass(frozen=True)
class Account:
    tenant: str
    username: str
    password: str
    role: str


@dataclass
class Studio:
    """The gateway, its two tenants' admin-key clients and their Studio accounts."""

    url: str
    api: httpx.Client  # tenant ``shop``'s admin key
    other_api: httpx.Client  # tenant ``rival``'s admin key
    admin: Account
    builder: Account
    rival: Account  # an admin of tenant ``rival``
    browser: Browser
    contexts: list[Any] = field(default_factory=list)

    def open_page(self, *, width: int = 1280, height: int = 800) -> Page:
        """A page in a fresh context (no cookies) on the gateway; ``page.problems`` lists
        script errors and Content-Security-Policy violations."""
        expect.set_options(timeout=WAIT_MS)
        context = self.browser.new_context(
            base_url=self.url, viewport={"width": width, "height": height}
        )
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        problems: list[str] = []
        page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console.{msg.type}: {msg.text}")
                if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text
                else None
            ),
        )
        page.problems = problems  # type: ignore[attr-defined]
        return page


def invite(client: httpx.Client, tenant: str, username: str, role: str, name: str) -> Account:
    """``username`` joins ``tenant`` (the key's) as ``role``: an admin's invite, accepted."""
    r = client.post("/v1/users/invites", json={"username": username, "name": name, "role": role})
    assert r.status_code == 201, r.text
    accepted = httpx.post(
        f"{client.base_url}v1/auth/accept-invite",
        json={"token": r.json()["token"], "password": PASSWORD},
        timeout=30,
    )
    assert accepted.status_code == 200, accepted.text
    return Account(tenant, username, PASSWORD, role)


@pytest.fixture(scope="package")
def studio_browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture(scope="package")
def studio_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    studio_browser: Browser,
) -> Iterator[Studio]:
    """The package's gateway, tenants and accounts (use ``studio``)."""
    browser = studio_browser
    tmp = tmp_path_factory.mktemp("studio")
    app = create_app(make_settings(tmp, make_db_url("sqlite", tmp, request)))
    server = Served(app)
    server.start()
    clients: list[httpx.Client] = []
    studio: Studio | None = None
    try:
        for name in (TENANT, OTHER_TENANT):
            r = httpx.post(
                f"{server.url}/v1/tenants", json={"name": name}, headers=OPERATOR, timeout=30
            )
            assert r.status_code == 201, r.text
            clients.append(
                httpx.Client(
                    base_url=server.url + "/",
                    timeout=30,
                    headers={"Authorization": f"Bearer {r.json()['api_key']}"},
                )
            )
        studio = Studio(
            url=server.url,
            api=clients[0],
            other_api=clients[1],
            admin=invite(clients[0], TENANT, "ada", "admin", "Ada Admin"),
            builder=invite(clients[0], TENANT, "bob", "builder", "Bob Builder"),
            rival=invite(clients[1], OTHER_TENANT, "rita", "admin", "Rita Rival"),
            browser=browser,
        )
        yield studio
    finally:
        if studio is not None:
            for context in studio.contexts:
                context.close()
        for client in clients:
            client.close()
        server.stop()


LIVE = ("queued", "running")


@pytest.fixture(scope="module")
def studio(studio_server: Studio) -> Iterator[Studio]:
    """The shared gateway for one test module; afterwards the module's browser contexts are
    closed and the trainings it left queued or running are cancelled (the next module finds
    the queue empty)."""
    opened = len(studio_server.contexts)
    yield studio_server
    for context in studio_server.contexts[opened:]:
        context.close()
    del studio_server.contexts[opened:]
    for client in (studio_server.api, studio_server.other_api):
        for model in client.get("/v1/models").json():
            if model["status"] in LIVE:
                client.post(f"/v1/models/{model['id']}/cancel")


def sign_in(page: Page, tenant: str, user: str, password: str) -> None:
    """Sign in at /studio/login and wait for the signed-in header."""
    page.goto("/studio/login")
    page.get_by_label("Tenant").fill(tenant)
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("who-name")).to_be_visible()


def shot(page: Page, name: str) -> None:
    """The whole page as ``var/test-artifacts/studio-<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"studio-{name}.png"), full_page=True)


def fits_a_tablet(page: Page) -> bool:
    """At 768 x 1024 (a tablet held upright) the page needs no sideways scrolling: wide parts
    scroll inside their panels. The viewport goes back to 1280 x 800 after."""
    page.set_viewport_size({"width": 768, "height": 1024})
    try:
        return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def heading_levels(page: Page) -> list[int]:
    """The levels of the page's headings in document order; a screen reader's outline skips
    no level (an h1, then h2s, their h3s…)."""
    levels: list[int] = page.locator("main :is(h1, h2, h3, h4, h5, h6)").evaluate_all(
        "els => els.map(e => Number(e.tagName[1]))"
    )
    return levels


def skips_no_level(levels: list[int]) -> bool:
    return bool(levels) and levels[0] == 1 and all(b <= a + 1 for a, b in pairwise(levels))


def wait_for(check: Any, timeout: float = 60, what: str = "the condition") -> Any:
    """Poll ``check()`` until it returns something truthy (its value) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)
    return value
