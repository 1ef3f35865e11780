"""Parley Studio's bots, channels, analytics and improve pages in real Chromium against a real
gateway (``tests/studio/conftest.py``).

A builder opens the tenant's bots, puts a mistake in a bot's definition (an ``if`` on a slot
that does not exist) and sees the problem listed at its path with its line marked, by Validate
and by Save (the ``PUT``'s 422), fixes it into a second version and reads the diff, sees the
flows drawn and runs story tests (one passes, one fails). On the channels page a Twilio form
built from the channel type's schema refuses a bad account SID at its field, connects with a
write-only auth token (never shown back) and gives the webhook URL and setup steps. A customer
says something the bot does not understand in the test chat (the real web chat widget, inline);
it reaches the improve inbox, is assigned an intent, the model is retrained from the page, and
the bot then answers it, in the test chat too. Analytics shows the server's charts and the
numbers. Another tenant's admin gets "Not found" for the bot.

Screenshots: ``var/test-artifacts/studio-{bots,bot,channels,improve,analytics}.png``.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
import yaml

from tests.connectors.test_widget_browser import Page, expect
from tests.studio.conftest import (
    TENANT,
    Studio,
    fits_a_tablet,
    heading_levels,
    shot,
    sign_in,
    skips_no_level,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ALIAS = "parcel-nlu"
INTENTS = {
    "greet": ["hi", "hello", "good morning", "hey there", "hello bot", "hiya"],
    "track_order": [
        "where is my order",
        "track my parcel",
        "has my package shipped",
        "where is my parcel",
        "when will my order arrive",
        "order status please",
    ],
    "talk_to_human": [
        "talk to a human",
        "get me a person",
        "agent please",
        "a real person please",
        "can I speak to someone",
        "I want a human",
    ],
}
UNKNOWN = "yo wassup"  # out of scope for the first model; a greeting once labelled
GREETING = "Hello from Parcelly!"
FALLBACK = "Sorry, I didn't quite get that. Could you rephrase?"  # the engine's default
SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-never-shown"


def definition(origin: str) -> dict[str, Any]:
    """The bot: greets, tracks an order (an ``if`` on the order number), hands off."""
    return {
        "name": "parcel-helper",
        "nlu": {"model": ALIAS},
        "slots": {
            "order_id": {
                "type": "text",
                "mappings": [{"type": "from_regex", "pattern": "PX-[0-9]+"}],
            }
        },
        "responses": {
            "utter_greet": [{"text": GREETING}],
            "utter_ask_order_id": [{"text": "What is your order number?"}],
            "utter_lost": [{"text": "Order PX-1 is lost, sorry."}],
            "utter_on_its_way": [{"text": "Order {order_id} is on its way."}],
        },
        "flows": {
            "greet": {"intents": ["greet"], "steps": [{"reply": "utter_greet"}]},
            "track": {
                "intents": ["track_order"],
                "steps": [
                    {"ask": "order_id"},
                    {
                        "if": [
                            {
                                "slot": "order_id",
                                "equals": "PX-1",
                                "then": [{"reply": "utter_lost"}],
                            }
                        ],
                        "else": [{"reply": "utter_on_its_way"}],
                    },
                ],
            },
        },
        "handoff": {"intents": ["talk_to_human"]},
        "fallback": {"handoff": False},
        "allowed_origins": [origin],
    }


def as_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def ok(r: httpx.Response, *codes: int) -> Any:
    assert r.status_code in (codes or (200,)), r.text
    return r.json()


@pytest.fixture(scope="module")
def bot(studio: Studio) -> dict[str, Any]:
    """The tenant's bot over model alias ``parcel-nlu`` (a tiny intent model, trained here)."""
    examples = [{"text": t, "label": label} for label, texts in INTENTS.items() for t in texts]
    body = {"name": "parcel intents", "type": "text-intent", "examples": examples}
    dataset = ok(studio.api.post("/v1/datasets", json=body), 201)
    model = ok(
        studio.api.post("/v1/models", json={"dataset_id": dataset["id"], "alias": ALIAS}), 202
    )
    wait_for(
        lambda: ok(studio.api.get(f"/v1/models/{model['id']}"))["status"] == "succeeded",
        what="the first model's training",
    )
    return ok(studio.api.post("/v1/bots", json=definition(studio.url)), 201)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def page(studio: Studio) -> Page:
    """The builder, signed in."""
    page = studio.open_page()
    sign_in(page, TENANT, studio.builder.username, studio.builder.password)
    return page


def say(studio: Studio, bot_id: str, sender: str, text: str) -> list[str]:
    r = studio.api.post(
        f"/v1/bots/{bot_id}/webhooks/rest", json={"sender": sender, "message": text}
    )
    return [m.get("text", "") for m in ok(r)]


def test_a_definition_with_a_mistake_shows_the_error_at_its_path(
    studio: Studio, bot: dict[str, Any], page: Page
) -> None:
    page.goto("/studio/bots")
    expect(page.get_by_role("heading", name="Bots", exact=True)).to_be_visible()
    shot(page, "bots")
    assert fits_a_tablet(page)
    page.get_by_role("link", name=bot["name"]).click()
    expect(page.get_by_role("heading", name=bot["name"], level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Versions", level=2)).to_be_visible()
    assert skips_no_level(levels := heading_levels(page)), levels

    wrong = copy.deepcopy(bot["definition"])
    wrong["flows"]["track"]["steps"][1]["if"][0]["slot"] = "order_number"
    text = as_yaml(wrong)
    bad_line = next(i for i, line in enumerate(text.splitlines(), 1) if "order_number" in line)
    path = "flows.track.steps[1].if[0].slot"
    editor = page.get_by_test_id("definition")
    editor.fill(text)
    for button in ("validate", "save"):  # Validate, then the PUT's 422
        page.get_by_test_id(button).click()
        problem = page.locator(f'[data-testid="problems"] li[data-path="{path}"]')
        expect(problem).to_contain_text('unknown slot "order_number"')
        expect(problem).to_have_attribute("data-line", str(bad_line))
        expect(page.locator(f'[data-testid="gutter"] [data-line="{bad_line}"]')).to_have_class(
            "ln error"
        )
    assert ok(studio.api.get(f"/v1/bots/{bot['id']}"))["version"] == 1  # nothing saved
    page.get_by_role("button", name=path).click()  # takes the cursor to the line
    selected = editor.evaluate("a => a.value.slice(a.selectionStart, a.selectionEnd)")
    assert "order_number" in selected

    fixed = copy.deepcopy(bot["definition"])
    fixed["responses"]["utter_lost"] = [{"text": "Order PX-1 went missing; we will refund it."}]
    editor.fill(as_yaml(fixed))
    page.get_by_test_id("validate").click()
    expect(page.get_by_test_id("valid")).to_be_visible()
    page.get_by_test_id("save").click()
    expect(page.get_by_test_id("bot-meta")).to_contain_text("version 2")
    diff = page.get_by_test_id("diff")  # the latest change, shown at once
    expect(diff.locator(".diff-add")).to_contain_text(["went missing"])
    expect(diff.locator(".diff-del")).to_contain_text(["is lost, sorry"])

    track = page.locator("#flow-track")
    expect(track.locator(".step-ask")).to_contain_text("slot order_id")
    expect(track.locator(".branch .cond")).to_have_text(['if order_id = "PX-1"', "else"])
    expect(track.locator(".branch-else .step-reply")).to_contain_text("utter_on_its_way")

    stories = """stories:
  - name: greets
    steps:
      - user: hello
        intent: greet
      - bot: Hello from Parcelly!
  - name: says goodbye
    steps:
      - user: hello
      - bot: Goodbye!
"""
    page.get_by_test_id("stories").fill(stories)
    page.get_by_test_id("run-stories").click()
    results = page.get_by_test_id("story-results")
    expect(results).to_contain_text("1 passed, 1 failed")
    cases = results.get_by_test_id("story-case")
    expect(cases.filter(has_text="greets")).to_contain_text("PASS")
    expect(cases.filter(has_text="says goodbye")).to_contain_text("FAIL")
    expect(cases.filter(has_text="says goodbye").locator(".failures")).to_contain_text("Goodbye!")
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_channel_is_connected_from_its_schema_with_a_write_only_secret(
    studio: Studio, bot: dict[str, Any], page: Page
) -> None:
    page.goto(f"/studio/channels?bot={bot['id']}")
    expect(page.get_by_role("heading", name="Channels", exact=True)).to_be_visible()
    expect(page.get_by_label("Bot", exact=True)).to_have_value(bot["id"])
    page.get_by_test_id("channel-type").select_option("twilio")
    token = page.locator("#cfg-auth_token")
    expect(token).to_have_attribute("type", "password")  # writeOnly in the schema
    page.locator("#cfg-account_sid").fill("not-a-sid")
    token.fill(AUTH_TOKEN)
    page.locator("#cfg-from_number").fill("+15551234567")
    page.get_by_test_id("connect").click()
    expect(page.get_by_test_id("error-box")).to_contain_text("account_sid")
    expect(page.locator('[data-field="account_sid"]')).to_have_class("field invalid")
    page.locator("#cfg-account_sid").fill(SID)
    page.get_by_test_id("connect").click()

    created = page.get_by_test_id("created")
    expect(created).to_be_visible()
    (channel,) = ok(studio.api.get(f"/v1/bots/{bot['id']}/channels"))
    assert channel["type"] == "twilio"
    expect(created.locator("code").first).to_have_text(channel["webhook_url"])
    expect(created.get_by_test_id("setup-steps").locator("li").first).to_be_visible()
    expect(page.get_by_test_id("webhook-url")).to_have_text([channel["webhook_url"]])
    expect(page.locator("#cfg-auth_token")).to_have_value("")  # not kept in the form
    assert AUTH_TOKEN not in page.content()  # the secret is never shown back
    shot(page, "channels")
    assert fits_a_tablet(page)
    assert skips_no_level(levels := heading_levels(page)), levels

    page.get_by_role("button", name=f"Delete the twilio channel {channel['id']}").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_text("No channels yet")).to_be_visible()
    assert ok(studio.api.get(f"/v1/bots/{bot['id']}/channels")) == []
    assert page.problems == []  # type: ignore[attr-defined]


def chat_says(page: Page, text: str) -> None:
    """Type ``text`` into the inline test chat (the widget's shadow DOM) and send it."""
    box = page.locator("parley-widget .input")
    box.fill(text)
    box.press("Enter")


def test_a_fallback_from_the_test_chat_is_labelled_retrained_and_then_understood(
    studio: Studio, bot: dict[str, Any], page: Page
) -> None:
    page.goto(f"/studio/bots/{bot['id']}")
    page.get_by_test_id("open-chat").click()
    log = page.locator("parley-widget .log")
    expect(page.get_by_test_id("test-chat").locator("parley-widget")).to_be_attached()  # inline
    chat_says(page, UNKNOWN)
    expect(log).to_contain_text(FALLBACK)

    page.goto(f"/studio/improve?bot={bot['id']}")
    group = page.get_by_test_id("improve-group").filter(has_text=UNKNOWN)
    expect(group).to_be_visible()
    expect(group.get_by_test_id("improve-item").filter(has_text=UNKNOWN)).to_contain_text(
        "not understood"
    )
    group.get_by_test_id("group-intent").select_option("greet")
    shot(page, "improve")
    assert fits_a_tablet(page)
    assert skips_no_level(levels := heading_levels(page)), levels
    group.get_by_test_id("assign").click()
    expect(page.get_by_test_id("feedback")).to_contain_text(UNKNOWN)
    expect(group).to_have_count(0)
    page.get_by_test_id("retrain").click()
    retrained = page.get_by_test_id("retrained")
    expect(retrained).to_be_visible(timeout=90_000)

    # the retrained model answers it: over the API, and in the test chat
    wait_for(
        lambda: say(studio, bot["id"], "after", UNKNOWN) == [GREETING],
        timeout=15,
        what="a greeting",
    )
    page.goto(f"/studio/bots/{bot['id']}")
    page.get_by_test_id("open-chat").click()
    chat_says(page, UNKNOWN)
    expect(page.locator("parley-widget .log .msg").last).to_contain_text(GREETING)
    shot(page, "bot")
    assert fits_a_tablet(page)
    assert page.problems == []  # type: ignore[attr-defined]


def test_analytics_shows_the_charts_and_the_numbers(
    studio: Studio, bot: dict[str, Any], page: Page
) -> None:
    say(studio, bot["id"], "visitor", "where is my order")  # a channel and an intent more
    page.goto(f"/studio/analytics?bot={bot['id']}")
    expect(page.get_by_role("heading", name="Analytics", exact=True)).to_be_visible()
    charts = page.get_by_test_id("analytics").locator("img.chart-img")
    expect(charts).to_have_count(4)
    for i in range(4):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        wait_for(
            lambda c=chart: c.evaluate("img => img.complete && img.naturalWidth > 0"), timeout=20
        )
    totals = page.get_by_test_id("totals")
    expect(totals.locator(".total").first).not_to_contain_text("—")
    tables = page.get_by_test_id("analytics").locator("table")
    expect(tables.first).to_contain_text("track_order")
    expect(page.get_by_text("rest", exact=True).first).to_be_visible()  # the REST channel's row
    shot(page, "analytics")
    assert fits_a_tablet(page)
    assert page.problems == []  # type: ignore[attr-defined]


def test_another_tenants_admin_does_not_see_the_bot(studio: Studio, bot: dict[str, Any]) -> None:
    page = studio.open_page()
    sign_in(page, studio.rival.tenant, studio.rival.username, studio.rival.password)
    page.goto(f"/studio/bots/{bot['id']}")
    expect(page.get_by_test_id("not-found")).to_be_visible()
    page.goto("/studio/bots")
    expect(page.get_by_role("link", name=bot["name"])).to_have_count(0)
