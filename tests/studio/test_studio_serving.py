"""The Studio's pages as served (no browser): ``/`` leads to ``/studio``; every ``/studio/...``
URL is the Studio's one page with the strict Content-Security-Policy; static files are served
from the Studio's folder only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bot_gateway.app import create_app
from tests.conftest import make_settings

STUDIO = Path(__file__).resolve().parents[2] / "console" / "studio"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("studio-pages")
    settings = make_settings(tmp, f"sqlite:///{tmp / 'parley.db'}")
    with TestClient(create_app(settings, warm_encoder=False)) as client:
        yield client


def test_the_root_leads_to_the_studio(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/studio"


@pytest.mark.parametrize(
    "path", ["/studio", "/studio/login", "/studio/datasets/ds_123", "/studio/models/compare"]
)
def test_every_studio_url_is_the_studio_page_with_a_strict_csp(
    client: TestClient, path: str
) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text == (STUDIO / "index.html").read_text()
    csp = r.headers["content-security-policy"]
    for directive in ("script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp, csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    # nothing inline for the CSP to block
    assert "style=" not in r.text and "<style" not in r.text
    assert "<script>" not in r.text and not re.search(r"\son[a-z]+=", r.text)


def test_static_files_come_from_the_studio_folder_only(client: TestClient) -> None:
    js = client.get("/studio/static/studio.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert "script-src 'self'" in js.headers["content-security-policy"]
    assert client.get("/studio/static/studio.css").status_code == 200
    assert client.get("/studio/static/pages/nothing-here.js").status_code == 404
    assert client.get("/studio/static/..%2Findex.html").status_code == 404
    assert client.get("/studio/static/..%2F..%2F..%2Fpyproject.toml").status_code == 404
