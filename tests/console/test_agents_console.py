"""The agents' service console in real Chromium against a real gateway.

A gateway (``create_app``, the Telegram provider faked with the Telegram kit's
``httpx.MockTransport``) is served by uvicorn on a loopback port. A Telegram customer says hello
(the bot answers through Telegram), then asks for a person: the agent, signed in at
``/console/agents``, sees the conversation arrive in the inbox without reloading, opens it, reads
the transcript, claims it and replies; the reply leaves through the Telegram connector. A second
agent is told who holds it. What the customer writes is shown as text, never as markup. The agent
writes an internal note (never sent), hands back, and the bot answers the next message again.

Screenshots are saved to ``var/test-artifacts/console-*.png``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from bot_gateway.app import create_app
from bot_gateway.services.accounts import create_agent
from connectors.registry import connectors
from core.db import get_engine, session_scope
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.connectors.telegram_kit import KIT
from tests.connectors.test_widget_browser import ARTIFACTS, Browser, Page, expect
from tests.connectors.test_widget_browser import browser as browser  # the Chromium fixture
from tests.support.bots import handoff_bot
from tests.support.images import encode, shape_image

pytestmark = [pytest.mark.slow, pytest.mark.integration]

WAIT_MS = 20_000  # each Playwright wait below retries until this ceiling
TENANT = "shop"
PASSWORD = "correct horse battery"
GREETING = "Hello from the bot!"  # the handoff bot's greeting
XSS = "<img src=x onerror=alert(1)>"
IMAGE = encode(shape_image("circle", 5))  # the customer's photo on Telegram, and the agent's
BOT = handoff_bot()


# -- the gateway ----------------------------------------------------------------------------


class Served:
    """An ASGI app served by uvicorn on a loopback port in a thread (the browser needs a real
    server)."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_level="warning", ws="websockets-sansio", timeout_graceful_shutdown=3
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="console-gateway", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self, timeout: float = 180) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout  # the lifespan loads the shared encoder
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start (see the log above)")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._socket.close()


@dataclass
class Desk:
    """The gateway, its tenant's bot and Telegram channel, and the fake Telegram's calls."""

    url: str
    api: httpx.Client  # the tenant's admin key
    calls: list[httpx.Request]
    channel: dict[str, Any]

    def customer(self, text: str, message_id: str, sender: str = "cust-1") -> None:
        """The customer writes on Telegram: the webhook call Telegram makes, secret included."""
        request = KIT.text_webhook(self._connector(), text, sender=sender, message_id=message_id)
        self._webhook(request)

    def customer_photo(self, message_id: str, sender: str = "cust-1") -> None:
        """The customer sends a photo (``IMAGE``, fetched from the fake Telegram)."""
        self._webhook(KIT.image_webhook(self._connector(), sender=sender, message_id=message_id))

    def _connector(self) -> Any:
        cls = connectors.get("telegram")
        return cls(
            cls.Config.model_validate(KIT.config()),
            httpx.AsyncClient(),
            webhook_url=self.channel["webhook_url"],
        )

    def _webhook(self, request: Any) -> None:
        r = httpx.post(
            f"{self.url}/webhooks/{self.channel['id']}",
            content=request.body,
            headers=request.headers,
            timeout=30,
        )
        assert r.status_code == 200, r.text

    def sent(self) -> list[str]:
        """Texts that left through the Telegram connector (sendMessage / sendPhoto)."""
        return [m["text"] for m in KIT.sent(list(self.calls))]

    def sent_messages(self) -> list[dict[str, Any]]:
        return KIT.sent(list(self.calls))

    def photos_sent(self) -> int:
        return sum(1 for call in list(self.calls) if call.url.path.endswith("/sendPhoto"))

    def wait_sent(self, text: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.sent().count(text) < count:
            assert time.monotonic() < deadline, f"{text!r} x{count} not sent: {self.sent()}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def desk(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Desk]:
    tmp = tmp_path_factory.mktemp("console")
    db_url = make_db_url("sqlite", tmp, request)
    calls: list[httpx.Request] = []
    app = create_app(make_settings(tmp, db_url), http_transport=KIT.provider(IMAGE, calls))
    server = Served(app)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            tenants = [
                client.post("/v1/tenants", json={"name": name}, headers=OPERATOR).json()
                for name in (TENANT, "other")
            ]
            client.headers["Authorization"] = f"Bearer {tenants[0]['api_key']}"
            with session_scope(get_engine(db_url)) as session:
                for username, name, role in (
                    ("ana", "Ana", "agent"),
                    ("bo", "Bo", "agent"),
                    ("sam", "Sam", "supervisor"),
                ):
                    create_agent(
                        session,
                        tenant_id=tenants[0]["tenant_id"],
                        username=username,
                        password=PASSWORD,
                        role=role,
                        name=name,
                    )
            bot = client.post("/v1/bots", json=BOT)
            assert bot.status_code == 201, bot.text
            bot_id = bot.json()["id"]
            deadline = time.monotonic() + 180
            while (status := client.get(f"/v1/bots/{bot_id}").json()["status"]) == "training":
                assert time.monotonic() < deadline, "the bot's intent model did not train"
                time.sleep(0.2)
            assert status == "ready", status
            channel = client.post(
                f"/v1/bots/{bot_id}/channels", json={"type": "telegram", "config": KIT.config()}
            )
            assert channel.status_code == 201, channel.text
            yield Desk(server.url, client, calls, channel.json())
    finally:
        server.stop()


# -- the browser ----------------------------------------------------------------------------


class Watch:
    """What went wrong on a page: script errors, console errors and warnings (a CSP violation
    is one), dialogs (an injected ``alert`` would be one), and refused requests as
    ``"STATUS METHOD PATH"`` (Chromium also logs each as a console error, without the URL; the
    scenario provokes some on purpose)."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.refused: list[str] = []
        page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("dialog", self._dialog)

    def _console(self, msg: Any) -> None:
        if msg.type in ("error", "warning") and not msg.text.startswith("Failed to load resource"):
            self.problems.append(f"console.{msg.type}: {msg.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            path = urlsplit(response.url).path
            self.refused.append(f"{response.status} {response.request.method} {path}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


def new_page(browser: Browser) -> tuple[Any, Page, Watch]:
    """A fresh browser context (its own cookies: one agent) with one watched page."""
    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    return context, page, Watch(page)


def sign_in(page: Page, url: str, username: str) -> None:
    page.goto(f"{url}/console/agents")
    page.get_by_label("Tenant").fill(TENANT)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("app-screen")).to_be_visible()
    expect(page.get_by_test_id("live-state")).to_have_attribute("data-state", "on")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


# -- tests ----------------------------------------------------------------------------------


def test_the_console_page_is_served_with_a_strict_csp(desk: Desk) -> None:
    page = httpx.get(f"{desk.url}/console/agents")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    for directive in ("script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp, csp
    assert "unsafe-inline" not in csp
    for name in ("console.js", "console.css"):
        static = httpx.get(f"{desk.url}/console/agents/static/{name}")
        assert static.status_code == 200, name
    assert httpx.get(f"{desk.url}/console/agents/static/..%2Findex.html").status_code == 404
    # nothing inline for the CSP to block: no style attributes, no inline scripts or styles
    html = page.text
    assert not re.search(r"<[^>]*\s(style|on[a-z]+)\s*=", html), "an inline style or handler"
    assert "<style" not in html and "<script>" not in html


def test_handoff_claim_reply_and_hand_back_in_chromium(desk: Desk, browser: Browser) -> None:
    context, page, watch = new_page(browser)
    try:
        response = page.goto(f"{desk.url}/console/agents")
        assert response is not None
        assert "script-src 'self'" in (response.headers.get("content-security-policy") or "")
        expect(page.get_by_test_id("login-form")).to_be_visible()
        # a wrong password is refused with a message, on the same form
        page.get_by_label("Tenant").fill(TENANT)
        page.get_by_label("Username").fill("ana")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("login-error")).not_to_be_empty()
        sign_in(page, desk.url, "ana")
        expect(page.get_by_test_id("whoami")).to_have_text("Ana")
        waiting = page.get_by_test_id("waiting-item")
        expect(page.get_by_test_id("waiting-empty")).to_be_visible()
        expect(waiting).to_have_count(0)
        page.evaluate("window.__notReloaded = true")  # gone if the page reloads

        # the bot answers a customer over Telegram; nobody waits yet
        desk.customer("hello", "m1")
        desk.wait_sent(GREETING)
        page.wait_for_timeout(300)
        expect(waiting).to_have_count(0)

        # the customer asks for a person: the inbox shows it live
        desk.customer("talk to a human", "m2")
        expect(waiting).to_have_count(1)
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"
        item = waiting.first
        expect(item.get_by_test_id("item-channel")).to_have_text("Telegram")
        expect(item.get_by_test_id("item-last")).to_have_text("talk to a human")
        expect(item.get_by_test_id("item-wait")).to_contain_text("waiting")
        expect(item.get_by_test_id("item-reason")).not_to_be_empty()
        expect(item.get_by_test_id("item-sentiment")).to_have_text("Sentiment: Neutral")
        expect(page.get_by_test_id("waiting-count")).to_have_text("1")
        shot(page, "inbox")

        # open it: the transcript so far, not yet claimed, no replying
        item.get_by_role("button").click()
        turns = page.get_by_test_id("turn")
        customer = page.locator(".turn-customer")
        expect(customer.filter(has_text="hello")).to_have_count(1)
        expect(customer.filter(has_text="talk to a human")).to_have_count(1)
        mood = customer.filter(has_text="talk to a human").get_by_test_id("turn-sentiment")
        expect(mood).to_have_text("Sentiment: Neutral")  # a word, not a colour alone
        expect(mood).to_have_attribute("title", re.compile(r"^Customer sentiment: neutral"))
        expect(page.get_by_test_id("conversation-sentiment")).to_have_text("Sentiment: Neutral")
        expect(page.locator(".turn-bot").filter(has_text=GREETING)).to_have_count(1)
        expect(page.locator(".turn-system").filter(has_text="Handed to a person")).to_be_visible()
        expect(page.get_by_test_id("conversation-status")).to_have_attribute(
            "data-status", "waiting_for_agent"
        )
        expect(page.get_by_test_id("parse-intent")).to_contain_text("talk_to_human")
        expect(page.get_by_test_id("reply-text")).to_be_disabled()

        # claim it: it moves from waiting to mine
        page.get_by_test_id("claim").click()
        expect(page.get_by_test_id("conversation-status")).to_have_attribute(
            "data-status", "with_agent"
        )
        expect(page.get_by_test_id("mine-item")).to_have_count(1)
        expect(waiting).to_have_count(0)

        # reply: it leaves through Telegram and shows once in the transcript
        box = page.get_by_test_id("reply-text")
        expect(box).to_be_enabled()
        box.fill("Hi, I'm Ana")
        box.press("Enter")
        desk.wait_sent("Hi, I'm Ana")
        agent_turns = page.locator(".turn-agent").filter(has_text="Hi, I'm Ana")
        expect(agent_turns).to_have_count(1)
        expect(box).to_have_value("")

        # quick replies ("title|payload" lines) leave as Telegram buttons
        page.get_by_text("Quick replies and image").click()
        box.fill("Which one?")
        page.get_by_test_id("reply-quick").fill("Track my order|/track\nSomething else")
        page.get_by_test_id("reply-send").click()
        desk.wait_sent("Which one?")
        (asked,) = [m for m in desk.sent_messages() if m["text"] == "Which one?"]
        assert asked["buttons"] == ["Track my order", "Something else"]
        chips = page.locator(".turn-agent").filter(has_text="Which one?").locator(".chip")
        expect(chips).to_have_text(["Track my order", "Something else"])

        # an image from the agent leaves as a Telegram photo
        photo = {"name": "label.jpg", "mimeType": "image/jpeg", "buffer": IMAGE}
        page.get_by_test_id("reply-file").set_input_files(photo)
        page.get_by_test_id("reply-send").click()
        deadline = time.monotonic() + 30
        while desk.photos_sent() < 1:
            assert time.monotonic() < deadline, desk.sent_messages()
            time.sleep(0.05)
        expect(page.locator(".turn-agent .image-link")).to_have_count(1)  # shown: checked last

        # the customer's photo arrives live and is shown
        desk.customer_photo("p1")
        customer_image = page.locator(".turn-customer .turn-image")
        expect(customer_image).to_have_count(1)
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=customer_image.element_handle()
        )

        # another agent is told who holds it
        other_context, other, other_watch = new_page(browser)
        try:
            sign_in(other, desk.url, "bo")
            expect(other.get_by_test_id("waiting-item")).to_have_count(0)
            cid = page.get_by_test_id("mine-item").first.get_attribute("data-id")
            other.goto(f"{desk.url}/console/agents#c={cid}")
            expect(other.get_by_test_id("conversation-status")).to_have_attribute(
                "data-status", "with_agent"
            )
            other.get_by_test_id("claim").click()
            expect(other.get_by_test_id("conversation-error")).to_have_text(
                "Already claimed by Ana."
            )
            expect(other.get_by_test_id("reply-text")).to_be_disabled()
            shot(other, "claimed-by-another")
            assert other_watch.problems == [] and other_watch.dialogs == []
            other_refused = list(other_watch.refused)
        finally:
            other_context.close()

        # a supervisor sees the team's load and reassigns; the holder's inbox follows live
        sup_context, sup, sup_watch = new_page(browser)
        try:
            sign_in(sup, desk.url, "sam")
            expect(sup.get_by_test_id("others-list").get_by_role("button")).to_have_count(1)
            ana_row = sup.get_by_test_id("agent-row").filter(has_text="Ana")
            expect(ana_row.get_by_test_id("agent-load")).to_have_text("1 claimed")
            sup.get_by_test_id("others-list").get_by_role("button").first.click()
            expect(sup.get_by_test_id("conversation-meta")).to_contain_text("held by Ana")
            bo_id = (
                sup.get_by_test_id("agent-row").filter(has_text="Bo").get_attribute("data-agent-id")
            )
            sup.get_by_test_id("reassign-agent").select_option(bo_id)
            sup.get_by_test_id("reassign-send").click()
            expect(sup.get_by_test_id("conversation-meta")).to_contain_text("held by Bo")
            expect(page.get_by_test_id("mine-item")).to_have_count(0)
            expect(page.get_by_test_id("reply-text")).to_be_disabled()
            shot(sup, "supervisor")
            ana_id = ana_row.get_attribute("data-agent-id")
            sup.get_by_test_id("reassign-agent").select_option(ana_id)
            sup.get_by_test_id("reassign-send").click()
            expect(sup.get_by_test_id("conversation-meta")).to_contain_text("held by Ana")
            expect(page.get_by_test_id("mine-item")).to_have_count(1)
            expect(page.get_by_test_id("reply-text")).to_be_enabled()
            assert sup_watch.problems == [] and sup_watch.dialogs == []
        finally:
            sup_context.close()

        # what the customer writes is text, never markup; it arrives live
        desk.customer(XSS, "m3")
        hostile = customer.filter(has_text="onerror")
        expect(hostile).to_have_count(1)
        expect(hostile.get_by_test_id("turn-text")).to_have_text(XSS)
        assert page.locator("img[src='x']").count() == 0
        assert page.locator("[onerror]").count() == 0
        expect(page.get_by_test_id("mine-item").first.get_by_test_id("item-last")).to_have_text(XSS)
        page.wait_for_timeout(500)  # an injected handler would have fired by now
        assert watch.dialogs == []

        # links in what customers write open only http(s) addresses
        desk.customer("track it at https://example.com/t?id=7. or javascript:alert(2)", "m5")
        linked = customer.filter(has_text="track it at")
        expect(linked).to_have_count(1)
        expect(linked.locator("a")).to_have_count(1)
        expect(linked.locator("a")).to_have_attribute("href", "https://example.com/t?id=7")
        expect(linked.locator("a")).to_have_attribute("rel", "noopener noreferrer nofollow")

        # an internal note: shown to agents, never sent to the customer
        page.get_by_test_id("note-text").fill("VIP: check the refund")
        page.get_by_test_id("note-send").click()
        expect(page.locator(".turn-note").filter(has_text="VIP: check the refund")).to_have_count(1)
        assert not any("VIP" in text for text in desk.sent())
        expect(turns.first).to_be_visible()
        shot(page, "conversation")

        # hand back: the bot answers the next message again
        page.get_by_test_id("handback").click()
        expect(page.get_by_test_id("conversation-status")).to_have_attribute("data-status", "bot")
        expect(page.get_by_test_id("mine-item")).to_have_count(0)
        expect(page.get_by_test_id("reply-text")).to_be_disabled()
        desk.customer("hello", "m4")
        desk.wait_sent(GREETING, count=2)
        expect(page.get_by_test_id("waiting-item")).to_have_count(0)
        shot(page, "handed-back")

        # handed off again and closed: the next message starts afresh with the bot
        desk.customer("talk to a human", "m6")
        expect(waiting).to_have_count(1)
        waiting.first.get_by_role("button").click()
        page.get_by_test_id("claim").click()
        status = page.get_by_test_id("conversation-status")
        expect(status).to_have_attribute("data-status", "with_agent")
        page.get_by_test_id("close").click()
        expect(status).to_have_attribute("data-status", "closed")
        expect(page.get_by_test_id("mine-item")).to_have_count(0)
        expect(page.get_by_test_id("close")).to_be_hidden()
        desk.customer("hello", "m7")
        desk.wait_sent(GREETING, count=3)
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"
        unshown = page.evaluate(
            """() => [...document.querySelectorAll('.turn .image-link')]
                .filter(a => !(a.querySelector('img') && a.querySelector('img').naturalWidth))
                .map(a => a.href)"""
        )
        assert unshown == [], (
            f"the console could not show these images: {unshown}; an image in the transcript "
            "must be at a URL the agent's cookie opens (/v1/agent/conversations/{id}/uploads/"
            "{upload_id}), not the bot's key-protected /v1/bots/{bot_id}/uploads/..."
        )
        assert other_refused == [
            "401 GET /v1/agent/me",
            f"409 POST /v1/agent/conversations/{cid}/claim",
        ]
        assert watch.problems == [], watch.problems
        assert watch.dialogs == []
        # refused on purpose only: not signed in (twice: the page was loaded twice), the wrong
        # password
        assert watch.refused == [
            "401 GET /v1/agent/me",
            "401 POST /v1/agent/login",
            "401 GET /v1/agent/me",
        ]
    finally:
        context.close()
