"""Remote models: ``POST /v1/models/remote`` registers a model served by the tenant's own Open
Inference Protocol (KServe V2) server; it is then a model like any other (``/v1/models``)."""

from __future__ import annotations

from fastapi import APIRouter

from bot_gateway.deps import GatewayDep, TrainDep
from bot_gateway.openapi import REMOTE_FAILED
from bot_gateway.schemas import ModelPublic, RemoteModelCreate
from bot_gateway.services import remote_models

router = APIRouter(prefix="/models", tags=["models"])


@router.post("/remote", status_code=201, response_model=ModelPublic, responses=REMOTE_FAILED)
async def register_remote_model(
    body: RemoteModelCreate, principal: TrainDep, gateway: GatewayDep
) -> ModelPublic:
    """Register a model that runs on your own V2 server (MLServer, KServe, Triton): Parley
    checks that it is ready, reads its metadata, and stores it as a succeeded model. Predict,
    parse, aliases and bots then use it like a trained one; its calls go to
    ``{url}/v2/models/{model_name}/infer``. Header values are stored encrypted and never
    shown; private addresses need the operator's ``PARLEY_OUTBOUND__ALLOW_HOSTS``."""
    return await remote_models.register(gateway.remote, gateway.engine, principal, body)
