"""Aliases: names (``production``) that point at a model and move atomically."""

from __future__ import annotations

from fastapi import APIRouter, Response

from bot_gateway.deps import GatewayDep, PredictDep, SessionDep, TrainDep
from bot_gateway.schemas import AliasPublic, AliasSet
from training import registry

router = APIRouter(prefix="/aliases", tags=["aliases"])


@router.put("/{name}", response_model=AliasPublic)
def set_alias(
    name: str, body: AliasSet, principal: TrainDep, session: SessionDep, gateway: GatewayDep
) -> AliasPublic:
    """Point ``name`` at a succeeded model; predictions in flight keep working."""
    alias = registry.set_alias(session, principal.tenant_id, name, body.model_id)
    session.commit()
    gateway.lookups.forget_models(principal.tenant_id)
    return AliasPublic(name=alias.name, model_id=alias.model_id, updated_at=alias.updated_at)


@router.get("", response_model=list[AliasPublic])
def list_aliases(principal: PredictDep, session: SessionDep) -> list[AliasPublic]:
    return [
        AliasPublic(name=a.name, model_id=a.model_id, updated_at=a.updated_at)
        for a in registry.list_aliases(session, principal.tenant_id)
    ]


@router.delete("/{name}", status_code=204, response_class=Response)
def delete_alias(
    name: str, principal: TrainDep, session: SessionDep, gateway: GatewayDep
) -> Response:
    registry.delete_alias(session, principal.tenant_id, name)
    session.commit()
    gateway.lookups.forget_models(principal.tenant_id)
    return Response(status_code=204)
