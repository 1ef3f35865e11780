"""``GET /v1/models/{id}/card`` and ``parley models card`` on a running gateway whose real
worker trains the default intent backend (the bundled MiniLM encoder + head) on the small test
dataset: the card's numbers are the model's own metrics and the dataset's counts, the YAML front
matter parses, Markdown and JSON are negotiated by ``Accept``, and 404 / 409 where due.

The same gateway has ``PARLEY_MLFLOW__TRACKING_URI`` set to a real MLflow store (SQLite), so the
job its worker process ran is checked there too: the embedded queue's worker logs it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bot_gateway.api.model_cards import wants_json
from parley import cli
from tests.bot_gateway.conftest import Api, running_api
from tests.conftest import DB_KINDS
from tests.support.data import intent_csv

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
SECTIONS = [
    "## Model details",
    "## Intended uses & limitations",
    "## Training data",
    "## Training procedure",
    "## Evaluation results",
    "## How to use",
]


@pytest.fixture(scope="module", params=DB_KINDS)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, str | None]]:
    tmp = tmp_path_factory.mktemp("cards")
    overrides: dict[str, Any] = {}
    uri = None
    if HAS_MLFLOW:
        from mlflow.tracking import MlflowClient

        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        # what an ML team does once: the experiment, its artifacts under tmp
        MlflowClient(tracking_uri=uri).create_experiment(
            "parley/tenant-a", artifact_location=(tmp / "mlruns").as_uri()
        )
        overrides["mlflow"] = {"tracking_uri": uri}
    with running_api(request, tmp, **overrides) as api:
        yield api, uri


@pytest.fixture(scope="module")
def api(gateway: tuple[Api, str | None]) -> Api:
    return gateway[0]


@pytest.fixture(scope="module")
def trained(api: Api) -> dict[str, Any]:
    dataset = api.upload(intent_csv(), name="intents").json()
    model = api.train(dataset["id"], name="support-intents", params={"epochs": 40})
    assert model["status"] == "succeeded", model["failure_message"]
    return model


@pytest.fixture(scope="module")
def dataset(api: Api, trained: dict[str, Any]) -> dict[str, Any]:
    r = api.client.get(f"/v1/datasets/{trained['dataset_id']}", headers=api.a)
    assert r.status_code == 200
    return dict(r.json())


def card_json(api: Api, model_id: str) -> dict[str, Any]:
    r = api.client.get(
        f"/v1/models/{model_id}/card", headers={**api.a, "Accept": "application/json"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return dict(r.json())


def front_matter(markdown: str) -> dict[str, Any]:
    match = re.match(r"^---\n(.*?)\n---\n", markdown, re.S)
    assert match, markdown[:200]
    return dict(yaml.safe_load(match.group(1)))


def test_the_json_card_holds_the_model_s_metrics_and_the_dataset_s_counts(
    api: Api, trained: dict[str, Any], dataset: dict[str, Any]
) -> None:
    card = card_json(api, trained["id"])
    metrics = trained["metrics"]

    assert (card["id"], card["name"], card["task"]) == (trained["id"], "support-intents", "intent")
    assert card["backend"] == trained["backend"]
    assert card["backend_version"] == trained["backend_version"]
    assert card["params"] == trained["params"]
    assert card["metrics"]["accuracy"] == metrics["accuracy"]
    assert card["metrics"]["macro_f1"] == metrics["macro_f1"]
    assert {
        row["label"]: {k: row[k] for k in ("precision", "recall", "f1", "support")}
        for row in card["per_label"]
    } == metrics["per_label"]
    assert card["out_of_scope"]["threshold"] == metrics["out_of_scope"]["threshold"]
    assert card["dataset"]["id"] == dataset["id"]
    assert card["dataset"]["num_examples"] == dataset["num_examples"]
    counts = {c["name"]: c["num_examples"] for c in dataset["labels"]}
    assert card["dataset"]["label_counts"] == counts
    for row in card["per_label"]:
        assert row["examples"] == counts[row["label"]]
    training = card["training"]
    assert training["held_out_examples"] == metrics["num_evaluated"]
    assert training["train_examples"] == metrics["train_examples"]
    assert training["device"] == "cpu"
    curve = api.client.get(f"/v1/models/{trained['id']}/learning-curve", headers=api.a).json()
    assert training["epochs"] == len(curve["points"]) > 0
    assert training["duration_seconds"] > 0
    assert training["started_at"] is not None and training["finished_at"] is not None
    # the test data is small: its held-out split is named as a limitation, with its size
    assert any(f"only {metrics['num_evaluated']} examples" in n for n in card["limitations"])
    assert any(n.startswith("Weakest labels by held-out F1") for n in card["limitations"])


def test_the_markdown_card_has_parsable_front_matter_and_the_hugging_face_sections(
    api: Api, trained: dict[str, Any]
) -> None:
    r = api.client.get(f"/v1/models/{trained['id']}/card", headers=api.a)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/markdown; charset=utf-8"
    text = r.text

    matter = front_matter(text)
    assert matter["library_name"] == "parley"
    assert matter["pipeline_tag"] == "text-classification"
    assert "intent" in matter["tags"]
    results = matter["model-index"][0]["results"][0]
    assert matter["model-index"][0]["name"] == "support-intents"
    reported = {m["type"]: m["value"] for m in results["metrics"]}
    assert reported["accuracy"] == trained["metrics"]["accuracy"]
    assert reported["macro_f1"] == trained["metrics"]["macro_f1"]

    assert "\n# support-intents\n" in text
    positions = [text.index(f"\n{section}\n") for section in SECTIONS]
    assert positions == sorted(positions)
    for label, row in trained["metrics"]["per_label"].items():
        assert (
            f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} |" in text
        )
    assert f"**{trained['metrics']['out_of_scope']['threshold']:.4f}**" in text
    assert f"/v1/models/{trained['id']}/predict" in text


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, "text/markdown; charset=utf-8"),
        ("*/*", "text/markdown; charset=utf-8"),
        ("text/markdown", "text/markdown; charset=utf-8"),
        ("application/json", "application/json"),
        ("text/markdown;q=0.5, application/json", "application/json"),
        ("application/json;q=0.2, text/*", "text/markdown; charset=utf-8"),
    ],
)
def test_accept_chooses_markdown_or_json(
    api: Api, trained: dict[str, Any], accept: str | None, media: str
) -> None:
    headers = dict(api.a) if accept is None else {**api.a, "Accept": accept}
    r = api.client.get(f"/v1/models/{trained['id']}/card", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == media
    assert "Accept" in r.headers["vary"]


def test_wants_json_reads_quality_values() -> None:
    assert wants_json("application/json")
    assert not wants_json(None)
    assert not wants_json("application/json;q=0, text/markdown")
    assert wants_json("text/markdown;q=0.1, application/*;q=0.9")
    assert not wants_json("application/json;q=oops")


def test_another_tenant_s_model_and_an_unknown_id_are_404(
    api: Api, trained: dict[str, Any]
) -> None:
    r = api.client.get(f"/v1/models/{trained['id']}/card", headers=api.b)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert api.client.get("/v1/models/mdl_nope/card", headers=api.a).status_code == 404


def test_a_model_that_has_not_succeeded_is_409_not_ready(api: Api, trained: dict[str, Any]) -> None:
    r = api.client.post("/v1/models", json={"dataset_id": trained["dataset_id"]}, headers=api.a)
    assert r.status_code == 202
    model_id = r.json()["id"]
    api.client.post(f"/v1/models/{model_id}/cancel", headers=api.a)
    model = api.wait_model(model_id)
    assert model["status"] == "cancelled"

    r = api.client.get(f"/v1/models/{model_id}/card", headers=api.a)
    assert r.status_code == 409
    assert r.json()["error"] == "not_ready"
    assert "cancelled" in r.json()["message"]


def test_a_built_in_model_gets_a_card_of_what_is_known(api: Api) -> None:
    r = api.client.get("/v1/models/prebuilt-entities/card", headers=api.a)
    assert r.status_code == 200
    assert front_matter(r.text)["library_name"] == "parley"
    assert "built-in" in r.text
    card = card_json(api, "prebuilt-entities")
    assert card["builtin"] is True and card["dataset"] is None and card["metrics"] == {}


def test_the_card_is_in_the_openapi_document_with_both_media_types(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    content = spec["paths"]["/v1/models/{model_id}/card"]["get"]["responses"]["200"]["content"]
    assert {"text/markdown", "application/json"} <= set(content)
    assert "ModelCard" in spec["components"]["schemas"]


def test_the_cli_writes_the_card_as_markdown_or_json(
    api: Api,
    trained: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "_client", api.python_client)
    out = tmp_path / "card.md"
    result = CliRunner().invoke(cli.app, ["models", "card", trained["id"], "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert front_matter(out.read_text())["model-index"][0]["name"] == "support-intents"

    result = CliRunner().invoke(cli.app, ["models", "card", trained["id"], "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["accuracy"] == trained["metrics"]["accuracy"]

    result = CliRunner().invoke(cli.app, ["models", "card", "mdl_nope"])
    assert result.exit_code == 1
    assert "not_found" in result.output


@pytest.mark.skipif(not HAS_MLFLOW, reason="the mlflow extra (mlflow-skinny) is not installed")
def test_the_worker_process_logged_the_job_to_mlflow(
    gateway: tuple[Api, str | None], trained: dict[str, Any]
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=gateway[1])
    experiment = client.get_experiment_by_name("parley/tenant-a")
    assert experiment is not None
    deadline = time.monotonic() + 90  # the worker logs once the job has ended
    while True:
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`parley.model_id` = '{trained['id']}'",
        )
        if runs and runs[0].info.status != "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "support-intents"
    assert run.data.params["epochs"] == "40"
    assert run.data.metrics["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])
    api = gateway[0]
    curve = api.client.get(f"/v1/models/{trained['id']}/learning-curve", headers=api.a).json()
    history = client.get_metric_history(run.info.run_id, "train_loss")
    logged = sorted((m.step, m.value) for m in history)
    assert [step for step, _ in logged] == [p["epoch"] for p in curve["points"]]
    assert [value for _, value in logged] == pytest.approx(
        [p["train_loss"] for p in curve["points"]]
    )
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "model_card.md",
        "model_card.json",
    }
