"""What a model chart refuses to draw: a confusion matrix of more labels than
``insight.MAX_MATRIX_LABELS`` (its cells grow with the square of the labels), while a model
with few labels takes any ``max_labels``. Models are stored rows with their metrics (no
training), so the refusal is seen before anything is drawn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine

from bot_gateway.services import insight
from core.db import get_engine, session_scope, upgrade, utcnow
from core.errors import InvalidInput
from core.tables import Model
from core.tenants import create_tenant


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    upgrade(url)
    engine = get_engine(url)
    yield engine
    engine.dispose()


def stored_model(engine: Engine, labels: int) -> tuple[str, str]:
    """(tenant id, id) of a succeeded intent model whose confusion matrix has ``labels``."""
    names = [f"label{i}" for i in range(labels)]
    matrix = [[5 if i == j else 0 for j in range(labels)] for i in range(labels)]
    with session_scope(engine) as session:
        tenant, _ = create_tenant(session, f"acme{labels}")
        model = Model(
            id=f"mdl_{labels}",
            tenant_id=tenant.id,
            dataset_id="ds_x",
            name="many labels",
            backend="embedding-head",
            task="intent",
            status="succeeded",
            labels=names,
            metrics={"confusion_matrix": {"labels": names, "matrix": matrix}},
            finished_at=utcnow(),
        )
        session.add(model)
        return tenant.id, model.id


def plot(engine: Engine, tenant_id: str, model_id: str, **kw: Any) -> bytes:
    gateway: Any = SimpleNamespace(engine=engine)
    return insight.model_plot(gateway, tenant_id, model_id, "confusion-matrix", "svg", **kw)


def test_a_confusion_matrix_of_too_many_labels_is_refused_naming_max_labels(
    engine: Engine,
) -> None:
    tenant_id, model_id = stored_model(engine, insight.MAX_MATRIX_LABELS + 50)
    with pytest.raises(InvalidInput) as caught:
        plot(engine, tenant_id, model_id, max_labels=insight.MAX_MATRIX_LABELS + 1)
    assert f"max_labels={insight.MAX_MATRIX_LABELS} or fewer" in caught.value.message
    assert caught.value.details["details"][0]["field"] == "max_labels"


def test_a_model_with_few_labels_takes_any_max_labels(engine: Engine) -> None:
    tenant_id, model_id = stored_model(engine, 3)
    svg = plot(engine, tenant_id, model_id, max_labels=500)
    assert b'id="cell-2-2"' in svg
