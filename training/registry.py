"""The model registry: model records (train jobs), their lifecycle, and aliases.

Status: ``queued → running → succeeded | failed | cancelled``; a remote model (served by the
tenant's own server, ``create_remote_model``) is ``succeeded`` from the start. Every function
filters by tenant; another tenant's model or alias is ``NotFound``. A succeeded intent model's
out-of-scope threshold can be moved without retraining (``set_out_of_scope_threshold``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core import lookup_changes
from core.backends import (
    INTENT,
    AnyBackend,
    BackendConfig,
    DatasetStats,
    EntityBackend,
    backends,
    builtin_models,
    default_backend,
)
from core.db import utcnow
from core.errors import Conflict, InvalidInput, NotFound, NotReady
from core.evaluation import OUT_OF_SCOPE, curve_point, held_out_count
from core.ids import new_id
from core.remote_models import BACKEND as REMOTE_BACKEND
from core.tables import Alias, Dataset, Example, Model
from training.datasets.service import get_dataset
from training.datasets.types import get_dataset_type

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")


class JobParams(BaseModel):
    """Parameters every training job understands, whatever the backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_split: float = Field(default=0.8, gt=0, lt=1)
    refit_on_all: bool = True
    seed: int = 0
    out_of_scope_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="intent models: fixed confidence threshold; default: calibrated; 0: off",
    )
    out_of_scope_share: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="intent models trained with out_of_scope examples: the share of messages "
        "you expect to be out of scope (e.g. 0.2); the threshold maximises accuracy over all "
        "messages at that share; default: the share in the held-out split",
    )
    entity_backend: str | None = Field(
        default=None,
        description="joint intent + entities models: the entity half's backend; "
        "default: the entities task's default backend",
    )
    with_feedback: bool = Field(
        default=False,
        description="also train on the dataset's feedback examples (source: feedback)",
    )


def parse_params(
    backend: type[AnyBackend], params: dict[str, Any]
) -> tuple[JobParams, BackendConfig]:
    """Split ``params`` into job and backend settings; unknown keys name what is allowed."""
    job_keys = set(JobParams.model_fields)
    backend_keys = set(backend.Config.model_fields)
    unknown = sorted(set(params) - job_keys - backend_keys)
    if unknown:
        raise InvalidInput(
            f"unknown params {', '.join(unknown)} for backend {backend.name!r}; allowed: "
            f"{', '.join(sorted(job_keys | backend_keys))}"
        )
    try:
        job = JobParams(**{k: v for k, v in params.items() if k in job_keys})
        config = backend.Config(**{k: v for k, v in params.items() if k in backend_keys})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise InvalidInput(f"invalid params: {problems}") from None
    return job, config


def create_model(
    session: Session,
    *,
    tenant_id: str,
    dataset_id: str,
    name: str | None = None,
    backend: str | None = None,
    params: dict[str, Any] | None = None,
    alias: str | None = None,
) -> Model:
    """A queued model (train job) for a ready dataset; checks all it can before queueing."""
    dataset = get_dataset(session, tenant_id, dataset_id)
    if dataset.status != "ready":
        raise NotReady(
            f"dataset {dataset_id} is {dataset.status}"
            + (f" ({dataset.status_message})" if dataset.status_message else "")
            + "; train on a ready dataset",
            status=dataset.status,
        )
    task = get_dataset_type(dataset.type).task
    backend_name = backend or default_backend(task)
    if backend_name is None:
        raise InvalidInput(
            f"no model backend trains {dataset.type!r} datasets in this release; "
            f"known backends: {', '.join(backends.names())}"
        )
    backend_cls = backends.get(backend_name)
    if backend_cls.task != task:
        raise InvalidInput(
            f"backend {backend_name!r} trains {backend_cls.task} models, but dataset "
            f"{dataset_id} is {dataset.type!r}"
        )
    job, _ = parse_params(backend_cls, params or {})
    if job.entity_backend is not None:
        if not backend_cls.joint_entities:
            raise InvalidInput(
                "params.entity_backend chooses the entity half of a joint intent model; "
                f"to train a {task} model with another backend, name it as the backend"
            )
        entity_cls = backends.get(job.entity_backend)
        if not issubclass(entity_cls, EntityBackend):
            raise InvalidInput(
                f"params.entity_backend {job.entity_backend!r} trains {entity_cls.task} models;"
                " name an entities backend"
            )
    if job.out_of_scope_share is not None:
        _check_out_of_scope_share(session, dataset, job)
    backend_cls.check_dataset(_stats(session, dataset))
    if alias is not None:
        check_alias_name(alias)
    model = Model(
        id=new_id("model"),
        tenant_id=tenant_id,
        dataset_id=dataset_id,
        name=(name or "").strip() or f"{dataset.name} ({backend_name})",
        backend=backend_name,
        backend_version=backend_cls.version,
        task=task,
        params=params or {},
        status="queued",
        promote_alias=alias,
    )
    session.add(model)
    session.flush()
    return model


def create_remote_model(
    session: Session,
    *,
    tenant_id: str,
    name: str,
    task: str,
    params: dict[str, Any],
    labels: list[str] | None,
) -> Model:
    """A model served by the tenant's own server (``core.remote_models``): no dataset, no
    training, ``succeeded`` at once; ``params`` as ``RemoteParams`` holds them."""
    now = utcnow()
    model = Model(
        id=new_id("model"),
        tenant_id=tenant_id,
        dataset_id="",
        name=name.strip(),
        backend=REMOTE_BACKEND,
        backend_version=params.get("protocol"),
        task=task,
        params=params,
        status="succeeded",
        progress=1.0,
        labels=labels,
        created_at=now,
        started_at=now,
        finished_at=now,
    )
    session.add(model)
    session.flush()
    return model


def _check_out_of_scope_share(session: Session, dataset: Dataset, job: JobParams) -> None:
    """``InvalidInput`` unless the share will weigh something: the held-out split gets
    out_of_scope examples (``stratified_split`` holds out none of a label with 1-2 at 0.8)
    and the threshold is calibrated, not fixed."""
    if job.out_of_scope_threshold is not None:
        raise InvalidInput(
            "params.out_of_scope_share chooses the calibrated threshold, but "
            "params.out_of_scope_threshold fixes it; leave one of them out"
        )
    where = [Example.dataset_id == dataset.id, Example.label == OUT_OF_SCOPE]
    if not job.with_feedback:  # the job trains without them (training.datasets.snapshot)
        where.append(Example.source != "feedback")
    count = int(session.scalar(select(func.count()).select_from(Example).where(*where)) or 0)
    if not count:
        raise InvalidInput(
            f"params.out_of_scope_share weighs out_of_scope examples, but dataset {dataset.id} "
            "has none; add examples labelled out_of_scope, or leave the param out"
        )
    needed = count
    while held_out_count(needed, job.train_split) < 1:
        needed += 1
    if needed > count:
        raise InvalidInput(
            f"params.out_of_scope_share weighs the out_of_scope examples of the held-out split, "
            f"but with train_split {job.train_split:g} none of dataset {dataset.id}'s {count} is "
            f"held out; add {needed - count} more labelled out_of_scope ({needed} in all), or "
            "leave the param out"
        )


def _stats(session: Session, dataset: Dataset) -> DatasetStats:
    annotated = session.scalar(
        select(func.count())
        .select_from(Example)
        .where(Example.dataset_id == dataset.id, Example.annotations.is_not(None))
    )
    return DatasetStats(
        dataset_id=dataset.id,
        label_counts=dict(dataset.label_counts or {}),
        annotated_examples=int(annotated or 0),
    )


def get_model(session: Session, tenant_id: str, model_id: str) -> Model:
    model = session.get(Model, model_id)
    if model is None or model.tenant_id != tenant_id:
        raise NotFound(f"model {model_id} not found")
    return model


def list_models(session: Session, tenant_id: str, dataset_id: str | None = None) -> list[Model]:
    query = select(Model).where(Model.tenant_id == tenant_id)
    if dataset_id is not None:
        query = query.where(Model.dataset_id == dataset_id)
    return list(session.scalars(query.order_by(Model.created_at)))


def queue_position(session: Session, model: Model) -> int | None:
    """0 for the next job to run; None once the job left the queue."""
    if model.status != "queued":
        return None
    return (
        session.scalar(
            select(func.count())
            .select_from(Model)
            .where(Model.status == "queued", Model.created_at < model.created_at)
        )
        or 0
    )


def cancel_model(session: Session, tenant_id: str, model_id: str) -> Model:
    """Cancel a queued or running job (a running worker stops at its next progress report)."""
    model = get_model(session, tenant_id, model_id)
    if model.status not in ACTIVE:
        raise Conflict(f"model {model_id} is {model.status}; only queued or running jobs cancel")
    session.execute(
        update(Model)
        .where(Model.id == model_id, Model.status.in_(ACTIVE))
        .values(status="cancelled", finished_at=utcnow(), failure_message=None)
    )
    session.refresh(model)
    return model


def delete_model(session: Session, tenant_id: str, model_id: str) -> Model:
    """Delete a model record (cancelling its job); its artifacts are the caller's to remove."""
    model = get_model(session, tenant_id, model_id)
    pointing = list(
        session.scalars(
            select(Alias.name).where(Alias.tenant_id == tenant_id, Alias.model_id == model_id)
        )
    )
    if pointing:
        raise Conflict(
            f"alias {', '.join(pointing)} points at model {model_id}; move or delete the alias "
            "first",
            aliases=pointing,
        )
    session.delete(model)
    lookup_changes.record(session, tenant_id, "models")
    return model


def set_out_of_scope_threshold(
    session: Session, tenant_id: str, model_id: str, threshold: float | None, *, actor: str
) -> Model:
    """Move a succeeded intent model's out-of-scope threshold without retraining (``None``:
    back to the calibrated one), record it in ``metrics.out_of_scope`` with its effect on the
    held-out split (read off the stored curve), and note the change for every gateway's
    look-up cache (the loaded model stays loaded; only the threshold it is served with moves).
    """
    model = get_model(session, tenant_id, model_id)
    if model.status != "succeeded":
        raise NotReady(
            f"model {model_id} is {model.status}; its out-of-scope threshold can be set once it "
            "has succeeded",
            status=model.status,
        )
    if model.task != INTENT:
        raise InvalidInput(
            f"model {model_id} is a {model.task} model; only intent models have an "
            "out-of-scope threshold"
        )
    if threshold is not None and not 0 <= threshold <= 1:
        raise InvalidInput(f"out_of_scope_threshold {threshold}: use a number from 0 to 1")
    metrics = dict(model.metrics or {})  # None: trained without a held-out split
    oos = dict(metrics.get("out_of_scope") or {})
    if "calibrated_threshold" not in oos:  # the first change keeps what training chose
        oos["calibrated_threshold"] = oos.get("threshold")
        oos["calibrated_method"] = oos.get("method") or "none"  # none: nothing was calibrated
        oos["calibrated_effect"] = {key: oos.get(key) for key in _EFFECT}
    if threshold is None:
        oos["threshold"], oos["method"] = oos["calibrated_threshold"], oos["calibrated_method"]
        # as measured at training (a threshold moved before the effect was kept: the curve)
        effect = oos.get("calibrated_effect") or _effect(oos, oos["calibrated_threshold"])
    else:
        oos["threshold"], oos["method"] = float(threshold), "manual"
        effect = _effect(oos, float(threshold))
    oos.update(effect)
    oos["set_by"], oos["set_at"] = actor, utcnow().isoformat()
    metrics["out_of_scope"] = oos
    model.metrics = metrics  # a new dict: the JSON column is written
    lookup_changes.record(session, tenant_id, "models")
    session.flush()
    return model


_EFFECT = ("in_scope_accuracy", "out_of_scope_recall", "overall_accuracy", "in_scope_flagged")
"""The held-out effect of an out-of-scope threshold, as ``metrics.out_of_scope`` reports it."""


def _effect(oos: dict[str, Any], threshold: float | None) -> dict[str, float | None]:
    """The held-out effect of ``threshold``, read off the stored curve; all None without one
    (trained before curves were stored, or without a held-out split)."""
    if not oos.get("curve"):
        return dict.fromkeys(_EFFECT)
    return curve_point(oos["curve"], float(threshold or 0.0), share=oos.get("out_of_scope_share"))


def check_alias_name(name: str) -> str:
    if not ALIAS_NAME.match(name) or name.startswith(("mdl_",)):
        raise InvalidInput(
            f"alias {name!r}: use 1-100 letters, digits, '_', '-' or '.', starting with a letter"
        )
    if name in builtin_models:
        raise InvalidInput(f"alias {name!r} is the name of a built-in model; choose another")
    return name


def set_alias(session: Session, tenant_id: str, name: str, model_id: str) -> Alias:
    """Point ``name`` at a succeeded model, in one transaction."""
    check_alias_name(name)
    model = get_model(session, tenant_id, model_id)
    if model.status != "succeeded":
        raise NotReady(
            f"model {model_id} is {model.status}; an alias can point only at a succeeded model",
            status=model.status,
        )
    alias = session.get(Alias, (tenant_id, name))
    if alias is None:
        alias = Alias(tenant_id=tenant_id, name=name, model_id=model_id)
        session.add(alias)
    else:
        alias.model_id = model_id
        alias.updated_at = utcnow()
    lookup_changes.record(session, tenant_id, "models")
    session.flush()
    return alias


def list_aliases(session: Session, tenant_id: str) -> list[Alias]:
    return list(
        session.scalars(select(Alias).where(Alias.tenant_id == tenant_id).order_by(Alias.name))
    )


def delete_alias(session: Session, tenant_id: str, name: str) -> None:
    alias = session.get(Alias, (tenant_id, name))
    if alias is None:
        raise NotFound(f"alias {name!r} not found")
    session.delete(alias)
    lookup_changes.record(session, tenant_id, "models")


def resolve(session: Session, tenant_id: str, id_or_alias: str) -> Model:
    """A model by id, or by the alias that points at it."""
    if id_or_alias.startswith("mdl_"):
        return get_model(session, tenant_id, id_or_alias)
    alias = session.get(Alias, (tenant_id, id_or_alias))
    if alias is None:
        raise NotFound(f"no model or alias named {id_or_alias!r}")
    return get_model(session, tenant_id, alias.model_id)
