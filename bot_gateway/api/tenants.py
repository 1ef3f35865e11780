"""Tenants (operator token) and API keys (admin scope)."""

from __future__ import annotations

from fastapi import APIRouter

from bot_gateway.deps import AdminDep, GatewayDep, OperatorDep, SessionDep
from bot_gateway.schemas import KeyCreate, KeyCreated, KeyPublic, TenantCreate, TenantCreated
from core import tenants

router = APIRouter(tags=["tenants and keys"])


@router.post("/tenants", status_code=201, response_model=TenantCreated)
def create_tenant(body: TenantCreate, _: OperatorDep, session: SessionDep) -> TenantCreated:
    """Create a tenant and its first API key (scope ``admin``); the key is shown once."""
    tenant, key = tenants.create_tenant(session, body.name)
    return TenantCreated(
        tenant_id=tenant.id, name=tenant.name, api_key=key.secret, key_id=key.record.id
    )


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, principal: AdminDep, session: SessionDep) -> KeyCreated:
    key = tenants.create_key(session, principal.tenant_id, scopes=body.scopes, name=body.name)
    return KeyCreated(**KeyPublic.of(key.record).model_dump(), api_key=key.secret)


@router.get("/keys", response_model=list[KeyPublic])
def list_keys(principal: AdminDep, session: SessionDep) -> list[KeyPublic]:
    return [KeyPublic.of(k) for k in tenants.list_keys(session, principal.tenant_id)]


@router.delete("/keys/{key_id}", response_model=KeyPublic)
def revoke_key(
    key_id: str, principal: AdminDep, session: SessionDep, gateway: GatewayDep
) -> KeyPublic:
    """Revoke a key: it stops working at once (on other gateways within the lookup TTL)."""
    key = tenants.revoke_key(session, principal.tenant_id, key_id)
    session.commit()
    gateway.lookups.forget_keys(principal.tenant_id)
    return KeyPublic.of(key)
