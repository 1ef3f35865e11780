"""Tenants (operator token) and API keys (admin scope)."""

from __future__ import annotations

from fastapi import APIRouter

from bot_gateway.deps import AdminDep, GatewayDep, OperatorDep, SessionDep
from bot_gateway.schemas import (
    KeyCreate,
    KeyCreated,
    KeyPublic,
    TenantCreate,
    TenantCreated,
    TenantLimitsPublic,
    TenantLimitsUpdate,
)
from core import quotas, tenants

router = APIRouter(tags=["tenants and keys"])


@router.post("/tenants", status_code=201, response_model=TenantCreated)
def create_tenant(body: TenantCreate, _: OperatorDep, session: SessionDep) -> TenantCreated:
    """Create a tenant and its first API key (scope ``admin``); the key is shown once."""
    tenant, key = tenants.create_tenant(session, body.name)
    return TenantCreated(
        tenant_id=tenant.id, name=tenant.name, api_key=key.secret, key_id=key.record.id
    )


@router.patch("/tenants/{tenant_id}", response_model=TenantLimitsPublic)
def update_tenant_limits(
    tenant_id: str,
    body: TenantLimitsUpdate,
    _: OperatorDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> TenantLimitsPublic:
    """Operator: set or clear (``null``) the tenant's quotas and rate-limit overrides; this
    gateway applies them at once, others within 10 s. Quotas over a period (predictions per
    month, train minutes per day) answer 429 when used up, the others (models, storage
    bytes) 403; both ``{"error": "quota_exceeded", "quota", "limit", "used"}``."""
    tenant = quotas.update_limits(
        session,
        tenant_id,
        quotas={name: value for name, value in body.quotas.items()},  # as Mapping[str, ...]
        rates={k: v.model_dump() if v is not None else None for k, v in body.rate_limits.items()},
    )
    session.commit()
    gateway.admission.forget(tenant.id)
    limits = quotas.TenantLimits.of(tenant)
    return TenantLimitsPublic(
        tenant_id=tenant.id,
        name=tenant.name,
        quotas=dict(limits.quotas),
        rate_limits=dict(limits.rates),
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
