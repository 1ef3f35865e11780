"""The web chat widget in a real browser (Debian's Chromium through Playwright).

The tests here drive widget.js against ``tests.support.fake_chat_server``, a small server that
speaks the same protocol as the gateway: they check the widget, not the bot. The shop page is
loaded from one origin and the widget from another, as on a tenant's site.

``drive_order_tracking`` is the demo scenario (ask where an order is, answer the question with a
photo of the label, read the status); the end-to-end test against the real gateway calls it.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.support.fake_chat_server import HELP_URL, ORDER, ORDER_STATUS, FakeChatServer

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (test extra)")
Browser = sync_api.Browser
Locator = sync_api.Locator
Page = sync_api.Page
expect = sync_api.expect

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 15_000  # every wait below is an auto-retrying Playwright wait with this ceiling
ORDER_NUMBER_QUESTION = re.compile(r"order\s*(number|no\b|#|id\b)|tracking (number|code)", re.I)
LABEL_QUICK_REPLY = re.compile(r"photo|picture|label|image", re.I)

# -- the demo scenario (also driven against the real gateway) --------------------------------


def drive_order_tracking(
    page: Page,
    base_url: str,
    label_png: bytes,
    *,
    expected_status: str | re.Pattern[str],
    question: re.Pattern[str] = ORDER_NUMBER_QUESTION,
    quick_reply: re.Pattern[str] | None = LABEL_QUICK_REPLY,
    timeout_ms: int = 30_000,
) -> str:
    """Play the Parcelly demo on ``{base_url}/demo``: open the chat, send "where is my order?",
    wait for a bot message matching ``question`` (it asks for the order number), click a quick
    reply matching ``quick_reply`` if the bot offers one, upload ``label_png`` as a photo of the
    shipping label, and wait for a bot or agent message containing ``expected_status``.
    Returns that message's text. Fails with Playwright's assertion error at the step that did not
    happen within ``timeout_ms``."""
    page.goto(f"{base_url.rstrip('/')}/demo")
    host = page.locator("#parley-widget")
    launcher = host.locator("button.launcher")
    expect(launcher).to_be_visible(timeout=timeout_ms)
    if launcher.get_attribute("aria-expanded") != "true":
        launcher.click()
    expect(host).to_have_attribute("data-state", "connected open", timeout=timeout_ms)
    incoming = host.locator(".msg.bot, .msg.agent")

    asked = incoming.filter(has_text=question)
    asked_before = asked.count()
    _say(host, "where is my order?")
    expect(asked.nth(asked_before)).to_be_visible(timeout=timeout_ms)

    offered = host.locator(".quick-replies .chip")
    if quick_reply is not None and offered.filter(has_text=quick_reply).count():
        before = incoming.count()
        offered.filter(has_text=quick_reply).first.click()
        expect(incoming.nth(before)).to_be_visible(timeout=timeout_ms)

    answers = incoming.filter(has_text=expected_status)
    answers_before = answers.count()
    sent_images = host.locator(".msg.user img")
    images_before = sent_images.count()
    file = {"name": "label.png", "mimeType": "image/png", "buffer": label_png}
    host.locator("input[type=file]").set_input_files(file)
    expect(sent_images.nth(images_before)).to_be_visible(timeout=timeout_ms)
    expect(answers.nth(answers_before)).to_be_visible(timeout=timeout_ms)
    return answers.nth(answers_before).inner_text()


def _say(host: Locator, text: str) -> None:
    box = host.locator("input.input")
    box.fill(text)
    box.press("Enter")


# -- fixtures -------------------------------------------------------------------------------


def chromium() -> Iterator[Browser]:
    """A headless Chromium (skipped where it is not installed, failed on CI) until closed."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed; scripts/install-system-deps chromium")
        pytest.skip("Chromium not installed (scripts/install-system-deps chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture(scope="module")
def chat_server() -> Iterator[FakeChatServer]:
    server = FakeChatServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def page_problems() -> list[str]:
    """Script errors and console errors/warnings of the ``page`` fixture's page."""
    return []


@pytest.fixture
def page(browser: Browser, page_problems: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("pageerror", lambda err: page_problems.append(f"page error: {err}"))
    page.on(
        "console",
        lambda msg: (
            page_problems.append(f"console.{msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )
    yield page
    context.close()


def label_png(width: int = 96, height: int = 64) -> bytes:
    img = Image.new("RGB", (width, height), (250, 248, 240))
    draw = ImageDraw.Draw(img)
    draw.rectangle((4, 4, width - 5, height - 5), outline=(20, 20, 20), width=2)
    draw.text((10, 12), ORDER, fill=(0, 0, 0))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


class Widget:
    """Locators for the parts of the widget (inside its open shadow root)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.host = page.locator("#parley-widget")
        self.launcher = self.host.locator("button.launcher")
        self.window = self.host.get_by_role("dialog")
        self.log = self.host.get_by_role("log")
        self.input = self.host.get_by_role("textbox", name="Type your message")
        self.status = self.host.locator(".status")
        self.typing = self.host.locator(".typing")
        self.chips = self.host.locator(".quick-replies .chip")
        self.file = self.host.locator("input[type=file]")

    def say(self, text: str) -> None:
        _say(self.host, text)

    def launcher_focused(self) -> bool:
        return bool(
            self.page.evaluate(
                """() => {
                  const host = document.getElementById('parley-widget');
                  return document.activeElement === host &&
                    host.shadowRoot.activeElement === host.shadowRoot.querySelector('.launcher');
                }"""
            )
        )

    def watch_typing(self) -> None:
        """Record (in the page) whether the typing dots were ever shown from now on."""
        self.page.evaluate(
            """() => {
              const dots = document.getElementById('parley-widget').shadowRoot
                .querySelector('.typing');
              window.__typingSeen = false;
              new MutationObserver(() => { if (!dots.hidden) window.__typingSeen = true; })
                .observe(dots, {attributes: true});
            }"""
        )

    def typing_was_seen(self) -> bool:
        return bool(self.page.evaluate("() => window.__typingSeen"))

    def unnamed_controls(self) -> list[str]:
        return list(
            self.page.evaluate(
                """() => [...document.getElementById('parley-widget').shadowRoot
                    .querySelectorAll('button, input:not([type=file]), a')]
                  .filter(el => !(el.getAttribute('aria-label') || el.textContent.trim()))
                  .map(el => el.outerHTML)"""
            )
        )


def open_demo(page: Page, url: str) -> Widget:
    page.goto(f"{url}/demo")
    page.wait_for_function("() => window.Parley !== undefined", timeout=WAIT_MS)
    return Widget(page)


def user_frames(server: FakeChatServer) -> list[dict[str, object]]:
    return [f for f in server.frames if f.get("type") == "message"]


# -- tests ----------------------------------------------------------------------------------


def test_widget_against_protocol_server(
    chat_server: FakeChatServer, page: Page, page_problems: list[str]
) -> None:
    w = open_demo(page, chat_server.page_url)
    expect(w.launcher).to_have_attribute("aria-label", "Open chat")
    expect(w.launcher).to_have_attribute("aria-expanded", "false")
    expect(w.window).to_be_hidden()
    expect(w.launcher).to_have_css("background-color", "rgb(11, 95, 255)")  # data-color

    # Keyboard only: Tab reaches the launcher, Enter opens, Escape closes and returns focus.
    for _ in range(30):
        if w.launcher_focused():
            break
        page.keyboard.press("Tab")
    assert w.launcher_focused(), "Tab never reached the chat launcher"
    page.keyboard.press("Enter")
    expect(w.window).to_be_visible()
    expect(w.launcher).to_have_attribute("aria-expanded", "true")
    expect(w.input).to_be_focused()
    expect(w.window).to_have_attribute("aria-label", "Parcelly help chat")
    expect(w.log).to_have_attribute("aria-live", "polite")
    expect(w.host).to_have_attribute("data-state", "connected open")
    expect(w.log).to_contain_text("Hi! I'm Parcelly's assistant")  # data-greeting
    page.keyboard.press("Escape")
    expect(w.window).to_be_hidden()
    expect(w.launcher).to_have_attribute("aria-expanded", "false")
    expect(w.launcher).to_be_focused()
    expect(w.host).to_have_attribute("data-state", "connected")
    page.keyboard.press("Enter")
    expect(w.input).to_be_focused()

    # Text: the user's bubble, the typing dots, the bot's reply as plain text with a safe link.
    w.watch_typing()
    w.say("hi <b>there</b>")
    mine = w.log.locator(".msg.user").last
    expect(mine).to_contain_text("hi <b>there</b>")
    reply = w.log.locator(".msg.bot").filter(has_text="You said:")
    expect(reply).to_contain_text("You said: hi <b>there</b>")
    expect(w.log.locator("b")).to_have_count(0)  # escaped, never parsed as HTML
    assert "\n" in reply.locator(".text").inner_text()  # line breaks kept
    assert w.typing_was_seen(), "the typing indicator never showed"
    expect(w.typing).to_be_hidden()
    expect(mine).not_to_have_class(re.compile(r"\bpending\b"))  # acknowledged
    link = reply.get_by_role("link")
    expect(link).to_have_attribute("href", HELP_URL)  # the sentence's full stop is not in it
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", re.compile(r"\bnoopener\b"))
    first = user_frames(chat_server)[-1]
    assert first["text"] == "hi <b>there</b>" and first["client_id"]

    # Quick replies send title + payload and disappear; buttons stay and work.
    expect(w.chips).to_have_text(["Where is my order?", "Talk to a human"])
    w.host.get_by_role("button", name="Where is my order?").click()
    expect(w.log.locator(".msg.user").last).to_contain_text("Where is my order?")
    expect(w.log).to_contain_text("What is your order number?")
    expect(w.chips).to_have_text(["Send a photo of my label", "Talk to a human"])
    sent = user_frames(chat_server)[-1]
    assert (sent["text"], sent["payload"]) == ("Where is my order?", "/track_order")
    w.log.get_by_role("button", name="Opening hours").click()
    expect(w.log).to_contain_text("8:00 to 20:00")
    expect(w.chips).to_have_count(0)
    assert user_frames(chat_server)[-1]["payload"] == "/hours"

    # An image through the file input: a local preview, then the bot's image and card.
    png = label_png()
    uploads_before = set(chat_server.uploads)
    w.file.set_input_files({"name": "label.png", "mimeType": "image/png", "buffer": png})
    preview = w.log.locator(".msg.user img").last
    expect(preview).to_have_attribute("src", re.compile(r"^blob:"))
    expect(preview).to_have_attribute("alt", "Image you sent")
    expect(w.log).to_contain_text(ORDER_STATUS)
    (upload_id,) = set(chat_server.uploads) - uploads_before
    upload = chat_server.uploads[upload_id]
    assert upload.data == png and (upload.width, upload.height) == (96, 64)
    assert user_frames(chat_server)[-1]["attachments"] == [{"upload_id": upload_id}]
    bot_image = w.log.locator(".msg.bot img.media")
    session_token = page.evaluate("() => localStorage.getItem('parley:bot_parcelly:session_token')")
    assert upload.session_token == session_token  # the session's own image
    upload_url = (
        f"{chat_server.widget_url}/v1/bots/{chat_server.bot_id}/uploads/{upload_id}"
        f"?key={chat_server.widget_key}&session_token={session_token}"
    )
    expect(bot_image).to_have_attribute("src", upload_url)  # relative URL, resolved to the server
    expect(bot_image).to_have_attribute("alt", "Image from Parcelly help")
    page.wait_for_function(
        """() => [...document.getElementById('parley-widget').shadowRoot
              .querySelectorAll('.msg.bot img.media')]
              .some(i => i.complete && i.naturalWidth === 96)""",
        timeout=WAIT_MS,
    )
    card = w.log.locator(".card")
    expect(card.locator("h3")).to_have_text(f"Order {ORDER}")
    expect(card.locator("p")).to_have_text("In transit\nExpected Thursday")
    expect(card.get_by_role("img")).to_have_attribute("alt", f"Order {ORDER}")
    expect(card.get_by_role("button", name="Change delivery address")).to_be_visible()

    # Not an image: a friendly message, and nothing is uploaded.
    w.file.set_input_files({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"})
    expect(w.log.locator(".system.error").last).to_contain_text("Only images can be sent")
    assert set(chat_server.uploads) - uploads_before == {upload_id}

    # An error frame is a system line; the conversation goes on. Then a handoff.
    w.say("/error")
    expect(w.log.locator(".system.error").last).to_have_text("The bot tripped over.")
    w.say("talk to a human")
    expect(w.log.locator(".system").last).to_have_text("Connecting you to a person…")
    expect(w.log.locator(".msg.agent")).to_contain_text("Support agent")
    expect(w.log.locator(".msg.agent")).to_contain_text("I'm Sam from Parcelly")
    assert w.unnamed_controls() == []

    # A reload re-renders the conversation from the server's history and keeps it open.
    session = page.evaluate("() => localStorage.getItem('parley:bot_parcelly:session')")
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,64}", session)
    history = chat_server.conversations[session].history
    page.reload()
    w = Widget(page)
    expect(w.host).to_have_attribute("data-state", "connected open")
    expect(w.window).to_be_visible()
    expect(w.log.locator(".msg.user")).to_have_count(6)
    expect(w.log.locator(".msg.user img")).to_have_attribute("src", upload_url)
    expect(w.log.locator(".msg.bot, .msg.agent")).to_have_count(
        sum(1 for e in history if e["from"] != "user" and e["message"].get("text"))
    )
    expect(w.log.locator(".card")).to_have_count(1)
    w.log.locator(".card").scroll_into_view_if_needed()
    card_box = w.log.locator(".card").bounding_box()
    assert card_box is not None and card_box["height"] > 150  # not squashed by the log
    expect(w.log).to_contain_text("hi <b>there</b>")
    expect(w.log).to_contain_text(ORDER_STATUS)
    expect(w.log.locator(".system").last).to_have_text("Connecting you to a person…")
    expect(w.log).not_to_contain_text("Hi! I'm Parcelly's assistant")  # no greeting over history
    expect(w.chips).to_have_count(0)
    assert page.evaluate("() => localStorage.getItem('parley:bot_parcelly:session')") == session

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "widget.png"))
    assert page_problems == []


def test_widget_reconnects_and_sends_what_was_typed_offline(
    chat_server: FakeChatServer, page: Page, page_problems: list[str]
) -> None:
    w = open_demo(page, chat_server.page_url)
    page.evaluate("() => window.Parley.open()")
    expect(w.host).to_have_attribute("data-state", "connected open")
    expect(w.input).to_be_focused()

    chat_server.drop_connections(refuse_new=True)
    expect(w.host).to_have_attribute("data-connection", "reconnecting")
    expect(w.status).to_have_text("Reconnecting…")
    page.evaluate("() => window.Parley.send('are you still there?')")
    w.say("hello again")
    expect(w.log.locator(".msg.user.pending")).to_have_count(2)

    chat_server.resume()
    expect(w.host).to_have_attribute("data-state", "connected open", timeout=30_000)
    expect(w.log).to_contain_text("You said: are you still there?")
    expect(w.log).to_contain_text("You said: hello again")
    expect(w.log.locator(".msg.user.pending")).to_have_count(0)
    expect(w.status).to_be_hidden()
    texts = chat_server.texts_received()
    assert texts.count("are you still there?") == 1 and texts.count("hello again") == 1
    assert texts.index("are you still there?") < texts.index("hello again")  # in typing order

    # Drag and drop an image onto the window.
    png = base64.b64encode(label_png(40, 30)).decode()
    data = page.evaluate_handle(
        """(b64) => {
          const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
          const dt = new DataTransfer();
          dt.items.add(new File([bytes], 'parcel.png', {type: 'image/png'}));
          return dt;
        }""",
        png,
    )
    w.window.dispatch_event("dragenter", {"dataTransfer": data})
    expect(w.host.locator(".drop")).to_be_visible()
    w.window.dispatch_event("drop", {"dataTransfer": data})
    expect(w.host.locator(".drop")).to_be_hidden()
    expect(w.log).to_contain_text("Thanks, I can read your label.")
    expect(w.log.locator(".msg.user img")).to_have_count(1)

    # A reply that arrives while the window is closed raises a badge on the launcher.
    page.evaluate("() => window.Parley.close()")
    expect(w.window).to_be_hidden()
    page.evaluate("() => window.Parley.send('anyone there?')")
    badge = w.host.locator(".badge")
    expect(badge).to_have_text("1")
    expect(w.host.locator("#parley-unread")).to_have_text("1 new message")  # for screen readers
    w.launcher.click()
    expect(badge).to_be_hidden()
    expect(w.log).to_contain_text("You said: anyone there?")

    # Quick replies still on offer come back after a reload, under the newest message.
    page.reload()
    expect(w.host).to_have_attribute("data-state", "connected open")
    expect(w.chips).to_have_text(["Where is my order?", "Talk to a human"])
    expect(w.log.locator(":scope > :last-child")).to_have_class("quick-replies")
    assert page_problems == []


def test_widget_on_a_page_whose_origin_is_not_allowed(
    chat_server: FakeChatServer, page: Page, page_problems: list[str]
) -> None:
    w = open_demo(page, chat_server.widget_url)  # this origin is not in the allowed list
    page.evaluate("() => window.Parley.open()")
    expect(w.host).to_have_attribute("data-connection", "failed")
    expect(w.log.locator(".system.error")).to_have_text(
        "Chat is not enabled on this website. Please tell the site owner."
    )
    w.say("hello?")
    expect(w.log.locator(".msg.user.failed")).to_contain_text("Not sent")
    assert any("allowed origins" in p for p in page_problems)  # a hint for the developer
    expect(w.log).not_to_contain_text("allowed_origins")  # the server's note is for developers


def test_widget_is_full_screen_on_a_phone(chat_server: FakeChatServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 667}, has_touch=True)
    try:
        page = context.new_page()
        w = open_demo(page, chat_server.page_url)
        w.launcher.click()
        expect(w.window).to_be_visible()
        assert w.window.bounding_box() == {"x": 0, "y": 0, "width": 375, "height": 667}
        expect(w.launcher).to_be_hidden()
        w.host.get_by_role("button", name="Close chat").click()
        expect(w.window).to_be_hidden()
        expect(w.launcher).to_be_focused()
    finally:
        context.close()


def test_order_tracking_scenario_against_protocol_server(
    chat_server: FakeChatServer, page: Page
) -> None:
    text = drive_order_tracking(
        page, chat_server.page_url, label_png(), expected_status="is in transit", timeout_ms=WAIT_MS
    )
    assert ORDER in text
    payloads = [f.get("payload") for f in user_frames(chat_server)]
    assert "/label_photo" in payloads  # the quick reply offered with the question was used
