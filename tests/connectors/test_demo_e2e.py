"""The web chat demo end to end: a real ``parley serve`` (demo on) and its ``/demo`` page in real
Chromium. A customer says hello, takes the "Track my order" quick reply, answers the question for
the order number with a photo of the shipping label (read by ``prebuilt-ocr``), reads the order's
status from the sample orders service, then asks for a person; the API then lists the
conversation as waiting for an agent. Everything the page loads comes from the one server.

A screenshot of the finished conversation is saved to ``var/test-artifacts/``.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from tests.connectors.test_widget_browser import ARTIFACTS, drive_order_tracking
from tests.connectors.test_widget_browser import browser as browser  # the Chromium fixture
from tests.parley.test_e2e_cli import Server, base_env, start_server
from tests.support.images import shipping_label_png

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (test extra)")
Browser = sync_api.Browser
Page = sync_api.Page
expect = sync_api.expect

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ORDER = "PX-100234"  # in parley.demo_orders: shipped with DHL
MODEL_WAIT_S = 180
WAIT_MS = 30_000  # each step of the conversation
READ_WAIT_MS = 90_000  # the label photo: the server loads the OCR engine on first use
BOT_GREETING = "I can track an order"  # the bot's utter_greet (not the widget's data-greeting)
GREETING_CHOICES = ["Track my order", "Cancel an order", "My parcel arrived damaged"]
ASK_ORDER = "What is your order number?"
HANDOFF = "I'm passing you to a member of our team"


# -- the label photo ------------------------------------------------------------------------


# -- the server -----------------------------------------------------------------------------


class DemoServer:
    """A ``parley serve`` subprocess with the demo, its demo API key and its demo bot."""

    def __init__(self, server: Server, data_dir: Path) -> None:
        self.server = server
        self.url = server.url
        self.key = (data_dir / "demo-api-key").read_text().strip()
        self.api = httpx.Client(
            base_url=f"{self.url}/v1", headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )
        self.bot_id = ""
        self._drain = threading.Thread(target=self._read_output, daemon=True)
        self._drain.start()

    def _read_output(self) -> None:
        """Keep reading the server's output (so its pipe never fills) into ``server.output``."""
        stdout = self.server.proc.stdout
        assert stdout is not None
        os.set_blocking(stdout.fileno(), True)
        for line in stdout:
            self.server.output.append(line)

    def log(self) -> str:
        return "".join(self.server.output)

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def wait_until_ready(self) -> None:
        """Wait for the demo intent model to train and the demo bot to be ``ready``."""
        deadline = time.monotonic() + MODEL_WAIT_S
        model: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = self.api.get("/models/production")
            model = response.json() if response.status_code == 200 else {}
            if model.get("status") in ("succeeded", "failed"):
                break
            time.sleep(1)
        assert model.get("status") == "succeeded", (model, self.log())
        bots: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            bots = self.get("/bots")
            if bots and bots[0]["status"] == "ready":
                break
            time.sleep(0.5)
        assert [b["status"] for b in bots] == ["ready"], (bots, self.log())
        self.bot_id = bots[0]["id"]

    def stop(self) -> None:
        self.api.close()
        self.server.stop()
        self._drain.join(timeout=10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    data_dir = tmp_path_factory.mktemp("demo") / "var"
    server = start_server(base_env(data_dir))
    try:
        demo = DemoServer(server, data_dir)
    except BaseException:
        server.stop()
        raise
    try:
        demo.wait_until_ready()
        yield demo
    finally:
        demo.stop()


# -- the browser ----------------------------------------------------------------------------


class Traffic:
    """What a page asked for: every request's and every websocket's URL, and its problems
    (script errors, console errors and warnings)."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.problems: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("websocket", lambda ws: self.urls.append(ws.url))
        page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))
        page.on(
            "console",
            lambda msg: (
                self.problems.append(f"console.{msg.type}: {msg.text}")
                if msg.type in ("error", "warning")
                else None
            ),
        )

    def foreign(self, base_url: str) -> list[str]:
        """URLs that went anywhere but ``base_url``'s host and port (``data:`` is local)."""
        home = urlsplit(base_url).netloc
        out = []
        for url in self.urls:
            if url.startswith("data:"):
                continue
            inner = url.removeprefix("blob:")  # blob:http://host:port/uuid
            if urlsplit(inner).netloc != home:
                out.append(url)
        return out


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


# -- tests ----------------------------------------------------------------------------------


def test_the_label_photo_reads_back_with_prebuilt_ocr() -> None:
    """The photo the browser test sends is one the OCR model reads (else that test proves
    nothing about the bot)."""
    from core.backends import BackendContext, builtin_models
    from vision.ocr import prebuilt  # noqa: F401 - registers prebuilt-ocr

    model = builtin_models.get("prebuilt-ocr").load(BackendContext(cache_dir=Path("unused")))
    image = Image.open(io.BytesIO(shipping_label_png()))
    (result,) = model.read([image])
    assert re.search(r"PX[-\s]?100234", result["text"]), result["text"]


def test_order_tracking_with_a_label_photo_in_chromium(demo: DemoServer, page: Page) -> None:
    traffic = Traffic(page)
    page.goto(f"{demo.url}/demo")
    script = page.locator("script[src$='/widget.js']")
    expect(script).to_have_attribute("src", f"{demo.url}/widget.js")
    expect(script).to_have_attribute("data-bot", demo.bot_id)

    host = page.locator("#parley-widget")
    log = host.get_by_role("log")
    incoming = log.locator(".msg.bot, .msg.agent")
    chips = host.locator(".quick-replies .chip")
    box = host.get_by_role("textbox", name="Type your message")

    # Open the chat: the widget connects to the server's websocket.
    host.locator("button.launcher").click()
    expect(host).to_have_attribute("data-state", "connected open")
    expect(box).to_be_focused()

    # "hello": the bot greets and offers quick replies.
    box.fill("hello")
    box.press("Enter")
    greeting = incoming.filter(has_text=BOT_GREETING)
    expect(greeting).to_have_count(1)
    expect(greeting).to_contain_text("Parcelly assistant")
    expect(chips).to_contain_text(GREETING_CHOICES)

    # The "Track my order" quick reply: the bot asks for the order number.
    host.get_by_role("button", name="Track my order").click()
    expect(log.locator(".msg.user").last).to_have_text(re.compile("Track my order"))
    expect(incoming.filter(has_text=ASK_ORDER)).to_have_count(1)
    expect(chips).to_have_count(0)

    # A photo of the shipping label through the widget's file input: the bot reads the order
    # number off it, looks the order up and tells its status.
    label = shipping_label_png()
    host.locator("input[type=file]").set_input_files(
        {"name": "label.png", "mimeType": "image/png", "buffer": label}
    )
    expect(log.locator(".msg.user img")).to_have_count(1)
    status = incoming.filter(has_text=ORDER)
    expect(status).to_have_count(1, timeout=READ_WAIT_MS)
    expect(status).to_contain_text("shipped")
    expect(status).to_contain_text("DHL")
    expect(log.locator(".system.error")).to_have_count(0)

    # Asking for a person hands the conversation off.
    box.fill("talk to a human")
    box.press("Enter")
    expect(incoming.filter(has_text=HANDOFF)).to_have_count(1)
    expect(log.locator(".system").last).to_have_text("Connecting you to a person…")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-order-tracking.png"))

    # The API agrees: one web chat conversation, waiting for an agent, with the order read.
    conversations = demo.get("/conversations", bot_id=demo.bot_id)["items"]
    assert len(conversations) == 1, conversations
    (conversation,) = conversations
    assert conversation["channel"] == "webchat"
    assert conversation["status"] == "waiting_for_agent", conversation
    assert conversation["slots"].get("order_id") == ORDER, conversation["slots"]
    waiting = demo.get("/conversations", bot_id=demo.bot_id, status="waiting_for_agent")
    assert [c["id"] for c in waiting["items"]] == [conversation["id"]]

    # Everything came from the one server: the page, the widget, the socket, the upload.
    assert f"{demo.url}/widget.js" in traffic.urls
    assert any(u.startswith(f"ws://{urlsplit(demo.url).netloc}/") for u in traffic.urls)
    assert any(u.startswith(f"{demo.url}/v1/bots/{demo.bot_id}/uploads") for u in traffic.urls)
    assert traffic.foreign(demo.url) == []
    assert traffic.problems == []


def test_where_is_my_order_scenario_against_the_real_demo(demo: DemoServer, page: Page) -> None:
    """The shared demo scenario (typed question, then the label photo) on the real gateway."""
    traffic = Traffic(page)
    text = drive_order_tracking(
        page, demo.url, shipping_label_png(), expected_status="shipped", timeout_ms=READ_WAIT_MS
    )
    assert ORDER in text and "DHL" in text
    assert traffic.foreign(demo.url) == []
    assert traffic.problems == []
