"""Models: train (queue a job), read status and metrics, learning curve, charts and held-out
examples, move an intent model's out-of-scope threshold, cancel, delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from bot_gateway.charts import CHART_RESPONSES, DEFAULT_MAX_LABELS, MaxLabels, chart_response
from bot_gateway.deps import GatewayDep, PredictDep, SessionDep, TrainDep
from bot_gateway.schemas import (
    HeldOutPage,
    LearningCurve,
    LearningCurvePoint,
    ModelCreate,
    ModelPublic,
    ModelUpdate,
    RowNumber,
)
from bot_gateway.services import insight
from core.backends import builtin_models
from core.errors import NotReady
from core.plots import parse_format
from core.tables import Model
from training import registry
from training.jobs import artifact_key

BUILTIN_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

router = APIRouter(prefix="/models", tags=["models"])


def public(session: Session, model: Model) -> ModelPublic:
    return ModelPublic.of(model, registry.queue_position(session, model))


@router.post("", status_code=202, response_model=ModelPublic)
def create_model(
    body: ModelCreate, principal: TrainDep, session: SessionDep, gateway: GatewayDep
) -> ModelPublic:
    """Queue a training job for a dataset; poll the model until ``succeeded``."""
    model = registry.create_model(
        session,
        tenant_id=principal.tenant_id,
        dataset_id=body.dataset_id,
        name=body.name,
        backend=body.backend,
        params=body.params,
        alias=body.alias,
    )
    session.commit()
    gateway.queue.submit(model.id)
    return public(session, model)


@router.get("", response_model=list[ModelPublic])
def list_models(
    principal: PredictDep, session: SessionDep, dataset_id: str | None = None
) -> list[ModelPublic]:
    return [
        public(session, m) for m in registry.list_models(session, principal.tenant_id, dataset_id)
    ]


@router.get("/{model_id}", response_model=ModelPublic)
def get_model(model_id: str, principal: PredictDep, session: SessionDep) -> ModelPublic:
    """A model by id or alias; built-in models (``prebuilt-entities``) by name."""
    if model_id in builtin_models:
        return builtin_public(model_id)
    return public(session, registry.resolve(session, principal.tenant_id, model_id))


def builtin_public(name: str) -> ModelPublic:
    builtin = builtin_models.get(name)
    return ModelPublic(
        id=name,
        dataset_id="",
        name=builtin.description,
        backend=builtin.backend,
        backend_version=None,
        task=builtin.task,
        params={},
        status="succeeded",
        progress=1.0,
        queue_position=None,
        failure_message=None,
        labels=None,
        metrics=None,
        dataset_hash=None,
        artifact_sha256=None,
        alias=None,
        created_at=BUILTIN_EPOCH,
        started_at=None,
        finished_at=None,
    )


@router.get("/{model_id}/learning-curve", response_model=LearningCurve)
def learning_curve(model_id: str, principal: PredictDep, session: SessionDep) -> LearningCurve:
    """Per epoch: training loss and accuracy / macro-F1 on the held-out split."""
    model = registry.resolve(session, principal.tenant_id, model_id)
    if model.status != "succeeded":
        raise NotReady(
            f"model {model.id} is {model.status}; the learning curve comes when it succeeds",
            status=model.status,
        )
    return LearningCurve(
        model_id=model.id, points=[LearningCurvePoint(**p) for p in model.learning_curve or []]
    )


@router.get("/{model_id}/plots/{kind}.{fmt}", response_class=Response, responses=CHART_RESPONSES)
def model_plot(
    model_id: str,
    kind: str,
    fmt: str,
    principal: TrainDep,
    gateway: GatewayDep,
    max_labels: MaxLabels = DEFAULT_MAX_LABELS,
) -> Response:
    """A succeeded model's chart as SVG or PNG: ``confusion-matrix`` (every cell an element
    with id ``cell-{i}-{j}``: true label i, predicted j, in ``metrics.confusion_matrix.labels``
    order), ``learning-curve``, ``out-of-scope`` (intent models), ``per-label``,
    ``ap-per-label`` (detectors, multi-label classifiers)."""
    chart_format = parse_format(fmt)
    data = insight.model_plot(
        gateway, principal.tenant_id, model_id, kind, chart_format, max_labels=max_labels
    )
    return chart_response(data, chart_format)


@router.get("/{model_id}/held-out", response_model=HeldOutPage)
def held_out(
    model_id: str,
    principal: TrainDep,
    gateway: GatewayDep,
    label: str | None = None,
    predicted: str | None = None,
    offset: RowNumber = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> HeldOutPage:
    """The held-out examples a classifier was scored on, with its prediction and confidence;
    ``label`` and ``predicted`` pick a confusion-matrix cell."""
    page = insight.held_out(
        gateway,
        principal.tenant_id,
        model_id,
        label=label,
        predicted=predicted,
        offset=offset,
        limit=limit,
    )
    return HeldOutPage.model_validate(page, from_attributes=True)


@router.patch("/{model_id}", response_model=ModelPublic)
def update_model(
    model_id: str, body: ModelUpdate, principal: TrainDep, session: SessionDep, gateway: GatewayDep
) -> ModelPublic:
    """Move a succeeded intent model's out-of-scope threshold (``null``: the calibrated one),
    without retraining; every alias serves the new threshold at once, with no reload. The
    change, and its effect on the held-out split, are recorded in ``metrics.out_of_scope``."""
    model = registry.set_out_of_scope_threshold(
        session,
        principal.tenant_id,
        model_id,
        body.out_of_scope_threshold,
        actor=principal.actor,
    )
    session.commit()
    gateway.lookups.forget_models(principal.tenant_id)
    return public(session, model)


@router.post("/{model_id}/cancel", response_model=ModelPublic)
def cancel_model(model_id: str, principal: TrainDep, session: SessionDep) -> ModelPublic:
    return public(session, registry.cancel_model(session, principal.tenant_id, model_id))


@router.delete("/{model_id}", status_code=204, response_class=Response)
def delete_model(
    model_id: str, principal: TrainDep, session: SessionDep, gateway: GatewayDep
) -> Response:
    model = registry.get_model(session, principal.tenant_id, model_id)
    if model.status in registry.ACTIVE:
        registry.cancel_model(session, principal.tenant_id, model_id)
    registry.delete_model(session, principal.tenant_id, model_id)
    session.commit()
    gateway.lookups.forget_models(principal.tenant_id)
    gateway.store.delete_prefix(artifact_key(principal.tenant_id, model_id))
    return Response(status_code=204)
