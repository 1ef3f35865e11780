"""Health and discovery: what the server runs and which backends it knows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from bot_gateway.deps import GatewayDep, OperatorDep, PredictDep
from bot_gateway.schemas import BackendsPublic, Health
from core.backends import backends, builtin_models
from core.metrics import counters
from training.datasets.types import DATASET_TYPES

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health)
def health(gateway: GatewayDep) -> Health:
    return Health(status="ok", models_loaded=len(gateway.cache))


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(_: OperatorDep) -> str:
    """The process's counters in Prometheus' text format (operator token): webhook signature
    failures, ignored webhooks, failed deliveries, per channel type."""
    return counters.prometheus()


@router.get("/backends", response_model=BackendsPublic)
def list_backends(_: PredictDep) -> dict[str, Any]:
    """Model backends with their parameters, and the dataset types."""
    return {
        "backends": [
            {
                "name": name,
                "version": cls.version,
                "task": cls.task,
                "params": cls.Config.model_json_schema().get("properties", {}),
            }
            for name, cls in backends.items()
        ],
        "builtin_models": [
            {"name": b.name, "task": b.task, "backend": b.backend, "description": b.description}
            for _, b in builtin_models.items()
        ],
        "dataset_types": [
            {"name": t.name, "task": t.task, "description": t.description}
            for t in DATASET_TYPES.values()
        ],
    }
