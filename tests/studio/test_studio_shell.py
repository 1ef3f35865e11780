"""Parley Studio's shell (``studio.js``) where pages lean on it, in real Chromium against the
package's gateway (``tests/studio/conftest.py``): an inlined server chart keeps nothing that
runs or leads away (scripts, event attributes, outside or ``javascript:`` links under any
prefix, SMIL animation that could write them later, HTML islands); a session that ends while
a page is open leads to the sign-in page, which comes back to that page; the training page's
polls keep the jobs table's sort and the keyboard focus on a Cancel button, and stop when the
user leaves the page; an id taken from the page's URL stays an id in the API call.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.connectors.test_widget_browser import Page, expect
from tests.studio.conftest import Studio, sign_in, wait_for
from tests.support.data import intent_csv

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EVIL_SVG = """<?xml version="1.0" encoding="utf-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
     xmlns:x="http://www.w3.org/1999/xlink" xmlns:html="http://www.w3.org/1999/xhtml"
     width="200" height="100" onload="window.pwned = 'onload'">
  <script>window.pwned = 'script'</script>
  <defs><rect id="r" width="5" height="5"/></defs>
  <rect id="cell-0-0" width="10" height="10" style="fill: rgb(255, 0, 0)"
        onclick="window.pwned = 'onclick'"/>
  <use id="kept" href="#r" x="180" y="90"/>
  <a id="prefixed" x:href="javascript:window.pwned = 'prefixed'"><text x="20" y="50">aaaa</text></a>
  <a id="outside" xlink:href="https://evil.example/"><text x="70" y="50">bbbb</text></a>
  <a id="animated"><set attributeName="href" to="javascript:window.pwned = 'set'"/>
    <animate attributeName="href" values="javascript:window.pwned = 'animate'"/>
    <text x="120" y="50">cccc</text></a>
  <foreignObject><div xmlns="http://www.w3.org/1999/xhtml">island</div></foreignObject>
  <html:img src="/studio/static/nothing.png" alt=""/>
  <html:form action="javascript:window.pwned = 'form'"><html:button>go</html:button></html:form>
</svg>
"""


def builder(studio: Studio) -> Page:
    page = studio.open_page()
    sign_in(page, studio.builder.tenant, studio.builder.username, studio.builder.password)
    return page


def test_an_inlined_chart_keeps_nothing_that_runs_or_leads_away(studio: Studio) -> None:
    page = builder(studio)
    page.route(
        "**/v1/evil-chart.svg",
        lambda route: route.fulfill(status=200, content_type="image/svg+xml", body=EVIL_SVG),
    )
    markup = page.evaluate(
        """async () => {
          const studio = await import("/studio/static/studio.js");
          const svg = await studio.inlineSvg("/v1/evil-chart.svg");
          svg.id = "inlined";
          document.getElementById("main").append(svg);
          return svg.outerHTML;
        }"""
    )
    for gone in ("script", "onload", "onclick", "javascript:", "evil.example", "<set", "<animate"):
        assert gone not in markup, (gone, markup)
    for gone in ("foreignObject", "island", "img", "form", "button"):
        assert gone not in markup, (gone, markup)
    chart = page.locator("#inlined")
    # what a chart needs stays: its cells' ids and styles, links inside the chart
    expect(chart.locator("#cell-0-0")).to_have_css("fill", "rgb(255, 0, 0)")
    expect(chart.locator("#kept")).to_have_attribute("href", "#r")
    for target in ("#cell-0-0", "#prefixed text", "#outside text", "#animated text"):
        chart.locator(target).click()
    assert page.evaluate("window.pwned") is None
    expect(page).to_have_url(re.compile(r"/studio/datasets$"))
    assert not page.problems, page.problems  # type: ignore[attr-defined]


def test_a_session_that_ends_while_a_page_is_open_leads_to_sign_in(studio: Studio) -> None:
    r = studio.api.post(
        "/v1/datasets",
        files={"file": ("orders.csv", intent_csv())},
        data={"name": "orders", "type": "text-intent"},
    )
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    wait_for(
        lambda: studio.api.get(f"/v1/datasets/{dataset_id}").json()["status"] != "processing",
        what="the import",
    )
    page = builder(studio)
    page.goto(f"/studio/datasets/{dataset_id}")
    expect(page.get_by_test_id("examples-range")).to_contain_text("of")
    page.context.clear_cookies()  # the session ends (expired, or signed out elsewhere)
    page.get_by_test_id("examples-search").fill("refund")
    page.get_by_test_id("examples-search-submit").click()  # a call the section itself handles
    expect(page).to_have_url(
        re.compile(rf"/studio/login\?next=%2Fstudio%2Fdatasets%2F{dataset_id}$")
    )
    expect(page.get_by_role("heading", name="Sign in to Parley Studio")).to_be_focused()
    expect(page.get_by_test_id("toast").last).to_contain_text("session has ended")
    expect(page.get_by_test_id("who-name")).to_be_hidden()
    page.get_by_label("Username").fill(studio.builder.username)
    page.get_by_label("Password").fill(studio.builder.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(rf"/studio/datasets/{dataset_id}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("orders")


def live_jobs(calls: int) -> list[dict[str, Any]]:
    """Two jobs that never finish, as GET /v1/models answers them; progress moves each call."""
    now = datetime.now(UTC)
    common = {"backend": "embedding-head", "dataset_id": "ds_stub", "alias": None}
    return [
        {  # the newer, so first in the table until it is sorted
            **common,
            "id": "mdl_alpha",
            "name": "alpha",
            "status": "running",
            "progress": (calls % 100) / 100,
            "queue_position": None,
            "failure_message": None,
            "created_at": now.isoformat(),
            "started_at": now.isoformat(),
        },
        {
            **common,
            "id": "mdl_beta",
            "name": "beta",
            "status": "queued",
            "progress": 0.0,
            "queue_position": 1 + calls % 2,
            "failure_message": None,
            "created_at": (now - timedelta(minutes=1)).isoformat(),
            "started_at": None,
        },
    ]


def test_the_training_pages_polls_keep_the_sort_and_the_focus(studio: Studio) -> None:
    page = builder(studio)
    calls = {"n": 0}

    def answer(route: Any) -> None:
        calls["n"] += 1
        body = json.dumps(live_jobs(calls["n"]))
        route.fulfill(status=200, content_type="application/json", body=body)

    page.route(re.compile(r".*/v1/models$"), answer)  # the list only: jobs that stay live
    page.goto("/studio/training?job=mdl_alpha")
    status = page.get_by_test_id("job-status")
    expect(status).to_contain_text("running")

    def next_poll() -> None:
        """Wait until a poll's answer is on the page (the running job's progress moved)."""
        shown = status.inner_text()
        expect(status).not_to_have_text(shown)

    jobs = page.get_by_test_id("jobs-table")
    expect(jobs.locator("tbody tr").first).to_contain_text("alpha")
    by_name = jobs.get_by_role("button", name="Model", exact=True)
    by_name.click()
    by_name.click()  # descending: beta first
    header = jobs.locator("th", has=page.get_by_role("button", name="Model", exact=True))
    expect(header).to_have_attribute("aria-sort", "descending")
    expect(jobs.locator("tbody tr").first).to_contain_text("beta")
    next_poll()
    next_poll()
    expect(header).to_have_attribute("aria-sort", "descending")
    expect(jobs.locator("tbody tr").first).to_contain_text("beta")

    # a keyboard user on a Cancel button stays there while the page updates
    cancel = page.get_by_test_id("job-cancel")
    cancel.focus()
    next_poll()
    expect(cancel).to_be_focused()
    row_cancel = jobs.get_by_role("button", name="Cancel beta")
    row_cancel.focus()
    next_poll()
    expect(row_cancel).to_be_focused()

    # leaving the page (without a reload) stops its polling
    page.get_by_test_id("nav").get_by_role("link", name="Datasets").click()
    expect(page.get_by_role("heading", name="Datasets", level=1)).to_be_focused()
    left_at = calls["n"]
    page.wait_for_timeout(2500)  # no answer can show an absence: 2.5 poll periods pass
    assert calls["n"] == left_at, (left_at, calls["n"])
    assert not page.problems, page.problems  # type: ignore[attr-defined]


def test_an_id_in_the_url_cannot_lead_the_studio_to_another_route(studio: Studio) -> None:
    """/studio/bots/..%2Fdatasets must not make the bot page call /v1/datasets (a link someone
    sends could otherwise point the page's buttons at any route of the API)."""
    page = builder(studio)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(urlsplit(request.url).path))
    page.goto("/studio/bots/..%2Fdatasets")
    expect(page.get_by_test_id("not-found")).to_be_visible()
    api_calls = [p for p in asked if p.startswith("/v1/") and not p.startswith("/v1/auth/")]
    assert api_calls and all(path.startswith("/v1/bots/") for path in api_calls), api_calls
    page.goto("/studio/models/..%2Fkeys")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert "/v1/keys" not in asked, asked


def test_an_upload_that_ends_after_the_user_moved_on_leaves_them_there(studio: Studio) -> None:
    page = builder(studio)  # on the Datasets page
    held: list[Any] = []

    def hold_uploads(route: Any) -> None:
        if route.request.method == "POST":
            held.append(route)  # answered below, once the user is elsewhere
        else:
            route.continue_()

    page.route(re.compile(r".*/v1/datasets$"), hold_uploads)
    page.get_by_test_id("upload-name").fill("later")
    page.get_by_test_id("upload-file").set_input_files(
        {"name": "later.csv", "mimeType": "text/csv", "buffer": intent_csv()}
    )
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/datasets")):
        page.get_by_test_id("upload-submit").click()
    page.get_by_test_id("nav").get_by_role("link", name="Training").click()
    expect(page.get_by_role("heading", name="Training", level=1)).to_be_focused()
    (upload,) = held
    dataset = {"id": "ds_later", "name": "later", "status": "ready", "num_examples": 3}
    upload.fulfill(status=201, content_type="application/json", body=json.dumps(dataset))
    expect(page.get_by_test_id("toast").last).to_contain_text("Dataset later")
    expect(page).to_have_url(re.compile(r"/studio/training$"))
    expect(page.get_by_role("heading", name="Training", level=1)).to_be_visible()


def test_the_skip_link_keeps_the_page_as_it_is(studio: Studio) -> None:
    page = builder(studio)  # on the Datasets page
    page.get_by_test_id("upload-name").fill("half typed")
    skip = page.get_by_role("link", name="Skip to the page")
    skip.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/studio/datasets#main$"))
    expect(page.get_by_test_id("upload-name")).to_have_value("half typed")  # not drawn again
    page.go_back()  # the same page without the fragment: still as it was
    expect(page).to_have_url(re.compile(r"/studio/datasets$"))
    expect(page.get_by_test_id("upload-name")).to_have_value("half typed")
    assert not page.problems, page.problems  # type: ignore[attr-defined]
