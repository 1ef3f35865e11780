"""The demo tenant: an order-tracking intent dataset, a model trained on it, alias ``production``,
and the order-tracking bot (``demo_data/order_bot.yaml``) that uses it and the sample orders
service (``parley.demo_orders``, mounted at ``/demo/orders-api``).

``ensure_demo`` is idempotent: the first start creates the tenant, saves its API key to
``<data dir>/demo-api-key`` (mode 600) and queues training; later starts only read the key.

It also makes two users of the demo tenant, ``admin`` (role admin: the Studio) and ``agent``
(role agent: the agents' console), with random passwords saved in ``<data dir>/demo-logins.json``
(mode 600). Later starts leave a user whose password is saved there unchanged; a user missing,
or one whose password is not saved here (say, a demo made by another machine), is created or
gets a new password, which is saved.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot_gateway.conversations.bots import Nlu, create_bot, update_bot
from bot_gateway.conversations.definition import parse_definition
from bot_gateway.services.accounts import create_user, hash_password
from core.db import session_scope
from core.storage import ArtifactStore
from core.tables import Agent, Alias, Bot, Model, Tenant
from core.tenants import create_tenant
from training import registry
from training.datasets import service
from training.datasets.importers import Limits

DEMO_TENANT = "demo"
DEMO_DATA = Path(__file__).parent / "demo_data" / "order_tracking.csv"
DEMO_BOT = Path(__file__).parent / "demo_data" / "order_bot.yaml"
ORDERS_API = "/demo/orders-api"
KEY_FILE = "demo-api-key"
LOGINS_FILE = "demo-logins.json"
DEMO_USERS = (("admin", "admin"), ("agent", "agent"))
"""(username, role) of the demo tenant's users."""


@dataclass(frozen=True)
class Demo:
    tenant_id: str
    api_key: str | None
    model_id: str | None
    created: bool
    logins: dict[str, str] = field(default_factory=dict)  # username -> password
    logins_changed: tuple[str, ...] = ()  # usernames created or given a new password now


def ensure_demo(engine: Engine, store: ArtifactStore, data_dir: Path, limits: Limits) -> Demo:
    key_path = data_dir / KEY_FILE
    with session_scope(engine) as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == DEMO_TENANT))
        if tenant is not None:
            api_key = key_path.read_text().strip() if key_path.exists() else None
            model_id = _ensure_model(session, tenant.id)
            logins, changed = ensure_demo_users(session, tenant.id, data_dir)
            return Demo(tenant.id, api_key, model_id, False, logins, changed)
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
        logins, changed = ensure_demo_users(session, tenant_id, data_dir)
    _write_private(key_path, key.secret + "\n")
    return Demo(tenant_id, key.secret, model_id, True, logins, changed)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    os.chmod(path, 0o600)
    path.write_text(text)


def ensure_demo_users(
    session: Session, tenant_id: str, data_dir: Path
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The demo users' passwords (``DEMO_USERS``; see the module docstring), and which of them
    were created or given a new password now."""
    path = data_dir / LOGINS_FILE
    saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    changed = []
    for username, role in DEMO_USERS:
        user = session.scalar(
            select(Agent).where(Agent.tenant_id == tenant_id, Agent.username == username)
        )
        if user is not None and username in saved:
            continue
        password = secrets.token_urlsafe(12)
        if user is None:
            create_user(
                session, tenant_id=tenant_id, username=username, password=password, role=role
            )
        else:
            user.password_hash = hash_password(password)
        saved[username] = password
        changed.append(username)
    if changed:
        _write_private(path, json.dumps(saved, indent=2) + "\n")
    return saved, tuple(changed)


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


def demo_bot_definition(base_url: str) -> dict[str, Any]:
    """The demo bot's definition for a server at ``base_url`` (its orders API and origin)."""
    text = DEMO_BOT.read_text()
    text = text.replace("{orders_api}", base_url.rstrip("/") + ORDERS_API)
    text = text.replace("{origin}", base_url.rstrip("/"))
    data = yaml.safe_load(text)
    parse_definition(data)
    return data


def ensure_demo_bot(engine: Engine, tenant_id: str, base_url: str) -> str:
    """Create the demo bot, or give it a new version when the server's address changed."""
    data = demo_bot_definition(base_url)
    nlu = Nlu(model_id="production", training=False)
    with session_scope(engine) as session:
        bot = session.scalar(select(Bot).where(Bot.tenant_id == tenant_id).order_by(Bot.created_at))
        if bot is None:
            bot = create_bot(session, tenant_id=tenant_id, data=data, nlu=nlu)
        elif bot.definition != data:
            update_bot(session, bot, data=data, nlu=nlu)
        return bot.id
