"""The demo tenant: an order-tracking intent dataset, a model trained on it, alias ``production``.

``ensure_demo`` is idempotent: the first start creates the tenant, saves its API key to
``<data dir>/demo-api-key`` (mode 600) and queues training; later starts only read the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.storage import ArtifactStore
from core.tables import Alias, Model, Tenant
from core.tenants import create_tenant
from training import registry
from training.datasets import service
from training.datasets.importers import Limits

DEMO_TENANT = "demo"
DEMO_DATA = Path(__file__).parent / "demo_data" / "order_tracking.csv"
KEY_FILE = "demo-api-key"


@dataclass(frozen=True)
class Demo:
    tenant_id: str
    api_key: str | None
    model_id: str | None
    created: bool


def ensure_demo(engine: Engine, store: ArtifactStore, data_dir: Path, limits: Limits) -> Demo:
    key_path = data_dir / KEY_FILE
    with session_scope(engine) as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == DEMO_TENANT))
        if tenant is not None:
            api_key = key_path.read_text().strip() if key_path.exists() else None
            model_id = _ensure_model(session, tenant.id)
            return Demo(tenant.id, api_key, model_id, created=False)
        tenant, key = create_tenant(session, DEMO_TENANT)
        dataset = service.create_dataset(
            session,
            store,
            tenant_id=tenant.id,
            name="order-tracking",
            dataset_type="text-intent",
            filename=DEMO_DATA.name,
            data=DEMO_DATA.read_bytes(),
        )
        tenant_id, dataset_id = tenant.id, dataset.id
    service.run_import(engine, store, dataset_id, limits)
    with session_scope(engine) as session:
        model_id = _ensure_model(session, tenant_id)
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path.write_text(key.secret + "\n")
    os.chmod(key_path, 0o600)
    return Demo(tenant_id, key.secret, model_id, created=True)


def _ensure_model(session: Session, tenant_id: str) -> str | None:
    """Queue a demo model unless one serves ``production`` or is on its way."""
    alias = session.get(Alias, (tenant_id, "production"))
    if alias is not None:
        return alias.model_id
    active = session.scalar(
        select(Model.id).where(Model.tenant_id == tenant_id, Model.status.in_(registry.ACTIVE))
    )
    if active is not None:
        return active
    datasets = service.list_datasets(session, tenant_id)
    ready = [d for d in datasets if d.status == "ready"]
    if not ready:
        return None
    model = registry.create_model(
        session,
        tenant_id=tenant_id,
        dataset_id=ready[0].id,
        name="order-tracking intents",
        alias="production",
    )
    return model.id
