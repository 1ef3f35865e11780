"""`parley test-bot`: the stories file and its images go up as one multipart request; the
report comes back as a table, and a failed story makes the command exit 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from parley import cli
from parley.client import ParleyClient

STORIES = """
stories:
  - name: track by label
    steps:
      - user: {image: label.png}
      - bot: {contains: shipped}
  - name: greet
    steps:
      - user: hi
      - bot: Hello!
"""


def serve(monkeypatch: pytest.MonkeyPatch, report: dict[str, Any]) -> list[httpx.Request]:
    """The server: answers ``report`` to POST /v1/bots/{bot}/test; returns what it got."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        if request.url.path != "/v1/bots/bot_1/test" or request.method != "POST":
            return httpx.Response(404, json={"error": "not_found", "message": "no such route"})
        return httpx.Response(200, json=report)

    def client() -> ParleyClient:
        return ParleyClient(
            "http://parley.test", api_key="pk_test", transport=httpx.MockTransport(handler)
        )

    monkeypatch.setattr(cli, "_client", client)
    return seen


def report(*cases: tuple[str, list[str]]) -> dict[str, Any]:
    rows = [{"name": n, "passed": not f, "failures": f} for n, f in cases]
    passed = sum(r["passed"] for r in rows)
    return {"passed": passed, "failed": len(rows) - passed, "cases": rows}


def test_uploads_stories_and_images_and_exits_1_on_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stories.yml").write_text(STORIES)
    (tmp_path / "label.png").write_bytes(b"\x89PNG-label")
    seen = serve(
        monkeypatch,
        report(
            ("track by label", []),
            ("greet", ["step 2: expected bot 'Hello!', got 'Hi there'"]),
        ),
    )
    result = CliRunner().invoke(cli.app, ["test-bot", "bot_1", str(tmp_path / "stories.yml")])
    assert result.exit_code == 1, result.output
    assert "track by label" in result.output and "passed" in result.output
    assert "step 2: expected bot 'Hello!', got 'Hi there'" in result.output
    assert "1 passed, 1 failed" in result.output
    (request,) = seen
    assert request.headers["authorization"] == "Bearer pk_test"
    body = request.content
    assert b'name="stories"; filename="stories.yml"' in body and b"track by label" in body
    assert b'name="files"; filename="label.png"' in body and b"\x89PNG-label" in body


def test_all_passed_exits_0_and_json_prints_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "label.png").write_bytes(b"png")
    (tmp_path / "stories.yml").write_text(STORIES)
    serve(monkeypatch, report(("track by label", []), ("greet", [])))
    args = ["test-bot", "bot_1", str(tmp_path / "stories.yml"), "--files", str(images), "--json"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert '"passed": 2' in result.output


def test_a_missing_image_or_a_bad_file_fails_before_any_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = serve(monkeypatch, report())
    (tmp_path / "stories.yml").write_text(STORIES)
    result = CliRunner().invoke(cli.app, ["test-bot", "bot_1", str(tmp_path / "stories.yml")])
    assert result.exit_code == 1
    assert "label.png" in result.output and "--files" in result.output
    (tmp_path / "bad.yml").write_text("stories:\n  - name: a\n    steps:\n      - bot: hi\n")
    result = CliRunner().invoke(cli.app, ["test-bot", "bot_1", str(tmp_path / "bad.yml")])
    assert result.exit_code == 1
    assert 'story "a", step 1 (line 4)' in result.output
    assert seen == []
