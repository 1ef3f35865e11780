"""The guarded API (issue 17, item 5): the OpenAPI document the gateway serves is the committed
snapshot ``docs/openapi.json``; a change to the API without the snapshot fails here and lists
each difference as breaking or additive (``bot_gateway.api_snapshot``); ``CHANGELOG.md``
keeps the Keep a Changelog layout."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot_gateway import api_snapshot
from bot_gateway.api_snapshot import Change, compare
from parley.cli import app as cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live() -> dict[str, Any]:
    return api_snapshot.current_document()


def test_the_api_matches_its_committed_snapshot(live: dict[str, Any]) -> None:
    committed = api_snapshot.SNAPSHOT.read_text(encoding="utf-8")
    if committed == api_snapshot.dumps(live):
        return
    changes = compare(api_snapshot.load_snapshot(), live)
    listed = "\n".join(f"  {c}" for c in changes) or "  (formatting or descriptions only)"
    pytest.fail(
        "The API differs from docs/openapi.json:\n"
        f"{listed}\n"
        "If this is intended: run `.venv/bin/parley openapi --write`, commit docs/openapi.json "
        "and say what changed for clients in CHANGELOG.md. Breaking changes are not allowed "
        "within /v1 (README: API compatibility policy).",
        pytrace=False,
    )


def test_the_snapshot_is_stable_text(live: dict[str, Any]) -> None:
    """Sorted keys and a final newline: a route added shows as a small diff in review."""
    text = api_snapshot.dumps(live)
    assert text.endswith("}\n")
    assert api_snapshot.dumps(api_snapshot.load_snapshot()) == api_snapshot.SNAPSHOT.read_text(
        encoding="utf-8"
    )
    assert api_snapshot.current_document() == live  # built the same way twice


def test_cli_check_passes_on_the_snapshot_and_write_updates_it(
    live: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["openapi", "--check"])
    assert result.exit_code == 0, result.output
    target = tmp_path / "docs" / "openapi.json"
    monkeypatch.setattr(api_snapshot, "SNAPSHOT", target)
    result = runner.invoke(cli, ["openapi", "--check"])
    assert result.exit_code == 1
    assert "additive: POST /v1/models/{model_id}/predict: operation added" in result.output
    assert "parley openapi --write" in " ".join(result.output.split())
    result = runner.invoke(cli, ["openapi", "--write"])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == api_snapshot.dumps(live)
    assert runner.invoke(cli, ["openapi", "--check"]).exit_code == 0


# compare(): what counts as breaking


def doc(schemas: dict[str, Any], **operations: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for key, op in operations.items():
        method, path = key.split("_", 1)
        paths.setdefault("/v1/" + path, {})[method] = op
    return {"paths": paths, "components": {"schemas": schemas}}


def op(request: str | None = None, response: str = "Thing", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": extra.pop("operationId", "thing"),
        "responses": {
            "200": {
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}
                }
            },
            "404": {
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/P"}}}
            },
        },
        **extra,
    }
    if request is not None:
        out["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}
            },
        }
    return out


THING = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "kind": {"type": "string", "enum": ["a", "b"]}},
    "required": ["id", "kind"],
}
THING_IN = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
BASE = doc(
    {"Thing": THING, "ThingIn": THING_IN, "P": {"type": "object"}}, post_things=op("ThingIn")
)


def changed(edit: Any) -> list[Change]:
    new = copy.deepcopy(BASE)
    edit(new)
    return compare(BASE, new)


def schemas(d: dict[str, Any]) -> dict[str, Any]:
    return dict(d["components"]["schemas"])


def test_an_unchanged_document_has_no_changes() -> None:
    assert compare(BASE, copy.deepcopy(BASE)) == []


def test_a_new_operation_and_a_new_answer_field_are_additive() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["paths"]["/v1/others"] = {"get": op(operationId="others")}
        schemas(d)["Thing"]["properties"]["note"] = {"type": "string"}

    found = changed(edit)
    assert [str(c) for c in found] == [
        "additive: GET /v1/others: operation added",
        "additive: schema Thing: field 'note' added",
    ]


def test_a_removed_operation_or_answer_field_is_breaking() -> None:
    assert changed(lambda d: d["paths"].pop("/v1/things")) == [
        Change(True, "POST /v1/things", "operation removed")
    ]
    found = changed(lambda d: schemas(d)["Thing"]["properties"].pop("kind"))
    assert Change(True, "schema Thing", "field 'kind' removed") in found


def test_a_new_required_request_field_is_breaking_but_an_optional_one_is_not() -> None:
    def required(d: dict[str, Any]) -> None:
        schemas(d)["ThingIn"]["properties"]["size"] = {"type": "integer"}
        schemas(d)["ThingIn"]["required"].append("size")

    assert changed(required) == [Change(True, "schema ThingIn", "field 'size' added (required)")]
    optional = changed(
        lambda d: schemas(d)["ThingIn"]["properties"].update(size={"type": "integer"})
    )
    assert optional == [Change(False, "schema ThingIn", "field 'size' added")]


def test_enums_types_parameters_and_statuses() -> None:
    found = changed(lambda d: schemas(d)["Thing"]["properties"]["kind"].update(enum=["a"]))
    assert found == [Change(True, "schema Thing.kind", "enum values ['b'] removed")]
    found = changed(
        lambda d: schemas(d)["Thing"]["properties"]["kind"].update(enum=["a", "b", "c"])
    )
    assert found == [Change(False, "schema Thing.kind", "enum values ['c'] added")]
    found = changed(lambda d: schemas(d)["Thing"]["properties"]["id"].update(type="integer"))
    assert found == [Change(True, "schema Thing.id", "type string -> integer")]

    def param(required: bool) -> Any:
        def edit(d: dict[str, Any]) -> None:
            d["paths"]["/v1/things"]["post"]["parameters"] = [
                {
                    "in": "query",
                    "name": "dry_run",
                    "required": required,
                    "schema": {"type": "boolean"},
                }
            ]

        return edit

    assert changed(param(False)) == [
        Change(False, "POST /v1/things", "query parameter 'dry_run' added")
    ]
    assert changed(param(True))[0].breaking
    assert changed(lambda d: d["paths"]["/v1/things"]["post"]["responses"].pop("200")) == [
        Change(True, "POST /v1/things", "answer 200 removed")
    ]
    found = changed(lambda d: d["paths"]["/v1/things"]["post"]["responses"].update({"409": {}}))
    assert found == [Change(False, "POST /v1/things", "answer 409 added")]


def test_a_field_an_answer_may_now_leave_out_is_breaking() -> None:
    found = changed(lambda d: schemas(d)["Thing"]["required"].remove("kind"))
    assert found == [Change(True, "schema Thing", "field 'kind' may now be missing in answers")]


# CHANGELOG.md


def test_the_changelog_keeps_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/" in text
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[0] == "[Unreleased]"
    for heading in headings[1:]:
        assert re.fullmatch(r"\[\d+\.\d+\.\d+\] - \d{4}-\d{2}-\d{2}", heading), heading
    kinds = set(re.findall(r"^### (.+)$", text, flags=re.M))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, kinds
    version = api_snapshot.load_snapshot()["info"]["version"]
    assert f"## [{version}]" in text, f"CHANGELOG.md has no section for the API's {version}"
