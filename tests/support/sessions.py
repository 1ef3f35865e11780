"""Signing a test client in as a Studio user, as the Studio does: the session cookie in the
client's jar, and the header with the session's CSRF token for its writes."""

from __future__ import annotations

from fastapi.testclient import TestClient


def sign_in(browser: TestClient, *, tenant: str, username: str, password: str) -> dict[str, str]:
    """Sign ``browser`` in through ``POST /v1/auth/login``; the ``X-CSRF-Token`` header."""
    r = browser.post(
        "/v1/auth/login", json={"tenant": tenant, "username": username, "password": password}
    )
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}
