"""``training.cards`` on model rows of a real (migrated) SQLite database: what a card says for
a trained intent model, a remote one (no secrets), a built-in one and one whose dataset is gone,
and that the Markdown's front matter and tables survive odd label names. The card of a model
trained end to end is checked in ``tests/bot_gateway/test_model_cards.py``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.orm import Session

from core.db import get_engine, session_scope, upgrade
from core.errors import NotReady
from core.remote_models import BACKEND as REMOTE_BACKEND
from core.tables import Dataset, Model
from core.tenants import create_tenant
from training.cards import FEW_EXAMPLES, builtin_card, model_card, render_markdown

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    upgrade(url)
    engine = get_engine(url)
    with session_scope(engine) as s:
        yield s
    engine.dispose()


def per_label(f1s: dict[str, float], support: int = 4) -> dict[str, Any]:
    return {
        label: {"precision": f1, "recall": f1, "f1": f1, "support": support}
        for label, f1 in f1s.items()
    }


def intent_model(session: Session, counts: dict[str, int], f1s: dict[str, float]) -> Model:
    tenant_id = create_tenant(session, "acme")[0].id
    session.add(
        Dataset(
            id="ds_1",
            tenant_id=tenant_id,
            name="support",
            type="text-intent",
            status="ready",
            num_examples=sum(counts.values()),
            label_counts=counts,
        )
    )
    model = Model(
        id="mdl_1",
        tenant_id=tenant_id,
        dataset_id="ds_1",
        name="support-intents",
        backend="embedding-head",
        backend_version="3",
        task="intent",
        params={"epochs": 20},
        status="succeeded",
        labels=sorted(counts),
        metrics={
            "accuracy": 0.9,
            "macro_f1": 0.85,
            "num_evaluated": 120,
            "train_examples": 480,
            "refit_on_all": True,
            "device": "cuda",
            "per_label": per_label(f1s),
            "out_of_scope": {"threshold": 0.42, "method": "fixed", "in_scope_accuracy": 0.88},
        },
        learning_curve=[{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 21)],
        worker="host-1",
        created_at=START - timedelta(minutes=1),
        started_at=START,
        finished_at=START + timedelta(seconds=75),
        artifact_sha256="ab" * 32,
    )
    session.add(model)
    session.flush()
    return model


def front_matter(markdown: str) -> dict[str, Any]:
    match = re.match(r"^---\n(.*?)\n---\n", markdown, re.S)
    assert match
    return dict(yaml.safe_load(match.group(1)))


def test_an_intent_model_s_card_reads_its_row_and_dataset(session: Session) -> None:
    counts = {"greet": 300, "refund": 4, "track_order": 296}
    model = intent_model(session, counts, {"greet": 0.95, "refund": 0.5, "track_order": 0.9})
    card = model_card(session, model)

    assert card.metrics == {"accuracy": 0.9, "macro_f1": 0.85}
    assert card.dataset is not None and card.dataset.label_counts == counts
    assert [(r.label, r.f1, r.examples) for r in card.per_label] == [
        ("greet", 0.95, 300),
        ("refund", 0.5, 4),
        ("track_order", 0.9, 296),
    ]
    assert card.out_of_scope is not None and card.out_of_scope.threshold == 0.42
    t = card.training
    assert (t.duration_seconds, t.device, t.worker, t.epochs) == (75.0, "cuda", "host-1", 20)
    assert (t.train_examples, t.held_out_examples, t.refit_on_all) == (480, 120, True)
    notes = " ".join(card.limitations)
    assert f"fewer than {FEW_EXAMPLES} examples" in notes and "refund (4)" in notes
    assert "greet (" not in notes.split("Weakest")[0]  # 300 examples: not a few
    assert (
        "Weakest labels by held-out F1: refund (0.500), track_order (0.900), greet (0.950)" in notes
    )
    assert "below 0.420" in notes
    assert "only 120" not in notes  # 120 held-out examples: not called rough

    text = render_markdown(card, base_url="https://bots.acme.test/")
    matter = front_matter(text)
    assert matter["pipeline_tag"] == "text-classification"
    assert matter["datasets"] == ["support"]
    assert {m["type"]: m["value"] for m in matter["model-index"][0]["results"][0]["metrics"]} == {
        "accuracy": 0.9,
        "macro_f1": 0.85,
    }
    assert "| refund | 0.500 | 0.500 | 0.500 | 4 | 4 |" in text
    assert "- **Hardware:** cuda (worker host-1)" in text
    assert "- **Duration:** 75.0 s" in text
    assert "curl -s -X POST https://bots.acme.test/v1/models/mdl_1/predict" in text


def test_odd_label_names_keep_the_front_matter_and_tables_intact(session: Session) -> None:
    odd = {"a|b": 20, "yes: no": 20, "- dash": 20}
    model = intent_model(session, odd, dict.fromkeys(odd, 0.7))
    model.name = "name: with # yaml --- chars"
    text = render_markdown(model_card(session, model))
    assert front_matter(text)["model-index"][0]["name"] == "name: with # yaml --- chars"
    assert "| a\\|b | 0.700 |" in text
    table = [line for line in text.splitlines() if line.startswith("| a")]
    assert all(line.count(" | ") == 5 for line in table if "0.700" in line)


def test_a_model_that_has_not_succeeded_has_no_card(session: Session) -> None:
    model = intent_model(session, {"a": 20, "b": 20}, {"a": 1.0, "b": 1.0})
    model.status = "running"
    with pytest.raises(NotReady, match="running"):
        model_card(session, model)


def test_a_deleted_dataset_and_a_model_without_held_out_split(session: Session) -> None:
    model = intent_model(session, {"a": 3, "b": 3}, {})
    session.delete(session.get(Dataset, "ds_1"))
    model.metrics = None
    session.flush()
    card = model_card(session, model)
    assert card.dataset is not None and card.dataset.name is None
    assert card.metrics == {} and card.per_label == [] and card.out_of_scope is None
    assert card.training.device is None
    assert any("No held-out evaluation" in n for n in card.limitations)
    text = render_markdown(card)
    assert "(deleted since training)" in text and "not recorded" in text
    assert "model-index" not in front_matter(text)


def test_a_remote_model_s_card_never_shows_its_header_values(session: Session) -> None:
    model = intent_model(session, {"a": 20}, {})
    model.backend, model.metrics = REMOTE_BACKEND, None
    model.params = {
        "url": "https://models.acme.test",
        "model_name": "intents",
        "headers": {"Authorization": "Bearer s3cret"},
    }
    card = model_card(session, model)
    text = render_markdown(card) + card.model_dump_json()
    assert "s3cret" not in text and "headers" not in card.params
    assert card.remote and card.dataset is None
    assert "Not trained by Parley." in text


def test_a_built_in_model_s_card() -> None:
    import nlu.entities.builtin  # noqa: F401 - registers prebuilt-entities

    card = builtin_card("prebuilt-entities")
    assert card.builtin and card.task == "entities" and card.dataset is None
    text = render_markdown(card)
    assert front_matter(text)["pipeline_tag"] == "token-classification"
    assert "built-in" in text
