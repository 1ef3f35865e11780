"""Parley Studio's shell, sign-in, Datasets, Training and Admin in real Chromium against a real
gateway (one server and one browser for the package; ``tests/studio/conftest.py``).

A builder signs in (a wrong password first: the API's 401 message is shown), uploads a CSV
with a bad line and sees the error with its line, uploads a good one, reads the label counts,
searches and relabels an example, starts training a tiny intent model from the form built from
the backend's parameter schema, and watches the job reach ``succeeded``. The builder has no
Admin in the navigation and, opening /studio/admin by URL, is told the API's 403; the admin
creates an API key (shown once) and invites someone. Another tenant's admin opening this
tenant's dataset URL gets the not-found page; an agent is sent to the agents' console.

Screenshots: ``var/test-artifacts/studio-{login,datasets,dataset,training,admin}.png``.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.connectors.test_widget_browser import Locator, Page, expect
from tests.studio.conftest import (
    Studio,
    fits_a_tablet,
    heading_levels,
    shot,
    sign_in,
    skips_no_level,
)
from tests.support.data import intent_csv, intent_rows
from tests.support.images import detection_zip

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BAD_CSV = b"text,label\nwhere is my order,track_order\nhi,greet\nrefund me,refund,x\nbye,goodbye\n"
TRAIN_MS = 120_000  # a tiny embedding-head model trains in seconds; a busy CI machine is slow


def upload(page: Page, name: str, filename: str, data: bytes) -> None:
    page.get_by_test_id("upload-name").fill(name)
    page.get_by_test_id("upload-type").select_option("text-intent")
    page.get_by_test_id("upload-file").set_input_files(
        {"name": filename, "mimeType": "text/csv", "buffer": data}
    )
    page.get_by_test_id("upload-submit").click()


def loaded(page: Page, img: Locator) -> None:
    """Wait until the image has arrived and decoded (a broken one never does)."""
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())


def no_problems(page: Page) -> None:
    problems: list[str] = page.problems  # type: ignore[attr-defined]
    assert not problems, problems


def test_builder_uploads_fixes_and_trains(studio: Studio) -> None:
    page = studio.open_page()
    page.goto("/studio/datasets")  # signed out: the sign-in page, which comes back here after
    expect(page).to_have_url(re.compile(r"/studio/login\?next=%2Fstudio%2Fdatasets$"))
    expect(page.get_by_role("heading", name="Sign in to Parley Studio")).to_be_focused()
    page.get_by_label("Tenant").fill(studio.builder.tenant)
    page.get_by_label("Username").fill(studio.builder.username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("login-error")).to_contain_text(re.compile(r"\S"))
    expect(page.get_by_test_id("who-name")).to_be_hidden()
    shot(page, "login")
    page.get_by_label("Password").fill(studio.builder.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/studio/datasets$"))
    expect(page.get_by_test_id("who-name")).to_have_text("Bob Builder")
    expect(page.get_by_test_id("who-role")).to_have_text("builder")
    nav = page.get_by_test_id("nav")
    expect(nav.get_by_role("link", name="Datasets")).to_have_attribute("aria-current", "page")
    expect(nav.get_by_role("link", name="Training")).to_be_visible()
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)

    # a CSV with a bad line: the error names the line, and no dataset is made
    upload(page, "support", "support.csv", BAD_CSV)
    error = page.get_by_test_id("upload-error")
    expect(error).to_contain_text("line 4")
    expect(error.get_by_test_id("error-details")).to_contain_text("expected 2 fields, found 3")
    expect(page).to_have_url(re.compile(r"/studio/datasets$"))
    # fixed: the dataset page with its label counts
    upload(page, "support", "support.csv", intent_csv())
    expect(page).to_have_url(re.compile(r"/studio/datasets/[^/]+$"))
    dataset = {"id": page.url.rsplit("/", 1)[1]}
    expect(page.get_by_role("heading", level=1)).to_contain_text("support")
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    rows = intent_rows()
    expect(page.get_by_test_id("dataset-summary")).to_contain_text(f"{len(rows)} examples")
    labels = page.get_by_test_id("labels-table")
    counts = {label: sum(1 for _, lab in rows if lab == label) for _, label in rows}
    for label, count in counts.items():
        expect(labels.get_by_role("row", name=re.compile(rf"^{label} {count}$"))).to_have_count(1)
    chart = page.get_by_role("img", name="Examples per label (bar chart)")
    chart.scroll_into_view_if_needed()
    loaded(page, chart)
    expect(page.get_by_test_id("examples-range")).to_contain_text(f"of {len(rows)}")

    # search, relabel
    page.get_by_test_id("examples-search").fill("refund")
    page.get_by_test_id("examples-search-submit").click()
    refund_rows = [t for t, _ in rows if "refund" in t]
    expect(page.get_by_test_id("examples-range")).to_have_text(
        f"1–{len(refund_rows)} of {len(refund_rows)}"
    )
    first = page.get_by_test_id("examples-table").locator("tbody tr").first
    first.get_by_test_id("example-label").fill("refunds")
    first.get_by_test_id("example-save").click()
    expect(page.get_by_test_id("toast").last).to_contain_text("is now refunds")
    edited = studio.api.get(
        f"/v1/datasets/{dataset['id']}/examples", params={"label": "refunds"}
    ).json()
    assert edited["total"] == 1, edited
    shot(page, "dataset")
    assert fits_a_tablet(page)
    assert skips_no_level(levels := heading_levels(page)), levels

    page.get_by_test_id("nav").get_by_role("link", name="Datasets").click()
    expect(page.get_by_test_id("datasets-table")).to_contain_text("support")
    shot(page, "datasets")
    assert fits_a_tablet(page)

    # train: the form is the backend's parameter schema
    page.goto(f"/studio/datasets/{dataset['id']}")
    page.get_by_test_id("train-link").click()
    expect(page).to_have_url(re.compile(r"/studio/training/new\?dataset="))
    expect(page.get_by_test_id("train-backend")).to_have_value("embedding-head")
    epochs = page.get_by_label("Epochs")
    expect(epochs).to_have_value("30")  # the schema's default
    expect(epochs).to_have_attribute("max", "500")
    expect(page.get_by_label("Encoder Precision")).to_have_value("auto")  # an enum: a select
    expect(page.get_by_test_id("train-params")).to_contain_text("sentence encoder")  # help
    epochs.fill("0")
    page.get_by_test_id("train-submit").click()  # the API's 422 names the parameter
    expect(page.get_by_test_id("train-error")).to_contain_text("epochs")
    epochs.fill("8")
    page.get_by_test_id("train-alias").fill("staging")
    page.get_by_test_id("train-submit").click()
    expect(page).to_have_url(re.compile(r"/studio/training\?job="))
    job = page.get_by_test_id("job")
    expect(job).to_have_attribute("data-status", "succeeded", timeout=TRAIN_MS)
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded")
    expect(job.locator("progress")).to_have_js_property("value", 1)
    expect(page.get_by_test_id("jobs-table")).to_contain_text("succeeded")
    shot(page, "training")
    assert fits_a_tablet(page)
    assert skips_no_level(levels := heading_levels(page)), levels
    model_id = page.url.rsplit("=", 1)[1]
    model = studio.api.get(f"/v1/models/{model_id}").json()
    assert model["params"].get("epochs") == 8, model["params"]
    assert studio.api.get("/v1/models/staging").json()["id"] == model_id
    no_problems(page)


def test_admin_is_for_admins(studio: Studio) -> None:
    page = studio.open_page()
    sign_in(page, studio.builder.tenant, studio.builder.username, studio.builder.password)
    page.goto("/studio/admin")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.get_by_test_id("forbidden")).to_contain_text(re.compile(r"\S"))
    expect(page.get_by_test_id("keys")).to_have_count(0)

    page = studio.open_page()
    sign_in(page, studio.admin.tenant, studio.admin.username, studio.admin.password)
    page.get_by_test_id("nav").get_by_role("link", name="Admin").click()
    expect(page.get_by_role("heading", name="Admin", level=1)).to_be_focused()
    page.get_by_test_id("key-name").fill("checkout service")
    page.get_by_label("train").check()
    page.get_by_test_id("key-create").click()
    secret = page.get_by_test_id("key-secret")
    expect(secret).to_have_text(re.compile(r"\S{20,}"))
    key = secret.inner_text()
    assert page.get_by_test_id("key-secret-box").get_by_test_id("copy").get_attribute(
        "data-copy"
    ) == (key)
    keys = page.get_by_test_id("keys-table")
    expect(keys).to_contain_text("checkout service")
    expect(keys.get_by_role("row", name=re.compile("checkout service"))).to_contain_text(
        "predict, train"
    )
    # the new key works for what its scopes allow
    with httpx.Client(base_url=studio.url, timeout=30) as client:
        ok = client.get("/v1/datasets", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200, ok.text
        denied = client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"})
        assert denied.status_code == 403, denied.text
    expect(page.get_by_test_id("users-table")).to_contain_text("bob")

    page.get_by_test_id("invite-username").fill("carla")
    page.get_by_test_id("invite-role").select_option("builder")
    page.get_by_test_id("invite-create").click()
    expect(page.get_by_test_id("invite-link")).to_contain_text("/studio/accept-invite?token=")
    expect(page.get_by_test_id("invites-table")).to_contain_text("carla")
    shot(page, "admin")
    assert fits_a_tablet(page)
    assert skips_no_level(levels := heading_levels(page)), levels
    # signing out ends the session: the Studio's pages ask to sign in again
    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(re.compile(r"/studio/login$"))
    page.goto("/studio/admin")
    expect(page).to_have_url(re.compile(r"/studio/login\?next=%2Fstudio%2Fadmin$"))
    expect(page.get_by_test_id("who-name")).to_be_hidden()
    no_problems(page)


def test_other_tenants_and_agents_see_none_of_it(studio: Studio) -> None:
    r = studio.api.post(
        "/v1/datasets",
        files={"file": ("secret.csv", intent_csv())},
        data={"name": "secret-plans", "type": "text-intent"},
    )
    assert r.status_code == 201, r.text
    dataset = r.json()
    page = studio.open_page()
    sign_in(page, studio.rival.tenant, studio.rival.username, studio.rival.password)
    page.goto(f"/studio/datasets/{dataset['id']}")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_test_id("not-found")).to_contain_text(re.compile(r"\S"))
    expect(page.get_by_text("secret-plans")).to_have_count(0)
    page.goto("/studio/datasets")
    expect(page.get_by_test_id("datasets-table")).not_to_contain_text("secret-plans")

    # an agent accepts an invite in the Studio and is sent to the agents' console
    r = studio.api.post("/v1/users/invites", json={"username": "anna", "role": "agent"})
    assert r.status_code == 201, r.text
    page = studio.open_page(width=768, height=1024)  # a tablet
    page.goto(r.json()["url"])
    page.get_by_test_id("invite-name").fill("Anna Agent")
    page.get_by_test_id("invite-password").fill("a long new password")
    page.get_by_test_id("invite-password2").fill("a different one")
    page.get_by_test_id("invite-submit").click()
    expect(page.get_by_test_id("invite-error")).to_contain_text("passwords differ")
    page.get_by_test_id("invite-password2").fill("a long new password")
    page.get_by_test_id("invite-submit").click()
    expect(page.get_by_test_id("who-name")).to_have_text("Anna Agent")
    expect(page.get_by_test_id("who-role")).to_have_text("agent")
    expect(page.get_by_test_id("agents-only")).to_be_visible()
    expect(page.get_by_test_id("agents-console-link")).to_have_attribute("href", "/console/agents")
    expect(page.get_by_test_id("nav")).to_be_hidden()
    no_problems(page)


def test_image_examples_are_thumbnails_with_their_boxes(studio: Studio) -> None:
    page = studio.open_page()
    sign_in(page, studio.builder.tenant, studio.builder.username, studio.builder.password)
    page.get_by_test_id("upload-name").fill("parcels")
    page.get_by_test_id("upload-type").select_option("image-detection")
    page.get_by_test_id("upload-file").set_input_files(
        {"name": "parcels.zip", "mimeType": "application/zip", "buffer": detection_zip(4)}
    )
    page.get_by_test_id("upload-submit").click()
    expect(page).to_have_url(re.compile(r"/studio/datasets/[^/]+$"))
    dataset_id = page.url.rsplit("/", 1)[1]
    examples = studio.api.get(f"/v1/datasets/{dataset_id}/examples").json()["examples"]
    thumbs = page.get_by_test_id("thumb")
    expect(thumbs).to_have_count(len(examples))
    expect(page.get_by_test_id("box")).to_have_count(sum(len(e["boxes"]) for e in examples))
    # each box sits where it is on the picture, scaled with the thumbnail
    for thumb, example in zip(thumbs.all(), examples, strict=True):
        img = thumb.locator("img")
        loaded(page, img)
        frame = img.bounding_box()
        assert frame is not None
        scale = frame["width"] / example["width"]
        for box, truth in zip(thumb.get_by_test_id("box").all(), example["boxes"], strict=True):
            drawn = box.bounding_box()
            assert drawn is not None
            assert abs(drawn["x"] - frame["x"] - truth["x_min"] * scale) < 2, (drawn, truth)
            assert abs(drawn["y"] - frame["y"] - truth["y_min"] * scale) < 2, (drawn, truth)
            width = (truth["x_max"] - truth["x_min"]) * scale
            assert abs(drawn["width"] - width) < 2, (drawn, truth)
            expect(box).to_have_attribute("title", truth["label"])
    shot(page, "dataset-images")
    no_problems(page)
