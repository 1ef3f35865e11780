"""`parley models threshold` and `parley models metrics` around a moved out-of-scope threshold:
a value that is no number from 0 to 1 fails with a message before any request; the metrics
of a model with no held-out split (only a threshold set by hand) print, with n/a."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from parley import cli
from parley.client import ParleyClient


def serve(monkeypatch: pytest.MonkeyPatch, model: dict[str, Any]) -> list[httpx.Request]:
    """The server: answers ``model`` to GET and PATCH /v1/models/mdl_1; returns what it got."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        if request.url.path != "/v1/models/mdl_1":
            return httpx.Response(404, json={"error": "not_found", "message": "no such route"})
        return httpx.Response(200, json=model)

    def client() -> ParleyClient:
        return ParleyClient(
            "http://parley.test", api_key="pk_test", transport=httpx.MockTransport(handler)
        )

    monkeypatch.setattr(cli, "_client", client)
    return seen


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1.5", "-0.1", "high"])
def test_a_threshold_that_is_no_number_from_0_to_1_fails_with_a_message(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    seen = serve(monkeypatch, {})
    result = CliRunner().invoke(cli.app, ["models", "threshold", "mdl_1", "--", value])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "give a number from 0 to 1" in result.output
    assert seen == []  # refused before any request


def test_metrics_of_a_model_without_a_held_out_split_after_a_manual_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    oos = {
        "threshold": 0.4,
        "method": "manual",
        "calibrated_threshold": None,
        "calibrated_method": "none",
        "in_scope_accuracy": None,
        "out_of_scope_recall": None,
    }
    serve(monkeypatch, {"id": "mdl_1", "status": "succeeded", "metrics": {"out_of_scope": oos}})
    result = CliRunner().invoke(cli.app, ["models", "metrics", "mdl_1"])
    assert result.exit_code == 0, result.output
    assert "accuracy n/a" in result.output and "out of scope below 0.400 (manual)" in result.output
