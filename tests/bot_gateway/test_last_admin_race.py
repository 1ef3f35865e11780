"""Two admins demoting each other at the same moment on PostgreSQL: one change wins, the other
is ``Conflict`` (the tenant keeps an active admin), because ``accounts.update_user`` locks the
active admins' rows while it counts them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot_gateway.services import accounts
from core.db import get_engine, session_scope
from core.errors import Conflict
from core.tables import Agent
from core.tenants import create_tenant
from tests.conftest import make_db_url

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    engine = get_engine(make_db_url("postgresql", tmp_path, request))
    yield engine
    engine.dispose()


def test_two_admins_demoting_each_other_at_once_leave_one_admin(engine: Engine) -> None:
    with session_scope(engine) as session:
        tenant, _ = create_tenant(session, "acme")
        tenant_id = tenant.id
        ids = [
            accounts.create_user(
                session, tenant_id=tenant_id, username=name, password="password1", role="admin"
            ).id
            for name in ("ada", "bob")
        ]
    first = engine.connect()
    held = Session(bind=first)
    outcome: list[BaseException | None] = []
    try:
        # ada is demoted in a transaction still open while bob's demotion is asked for
        accounts.update_user(held, tenant_id, ids[0], role="builder")

        def other() -> None:
            try:
                with session_scope(engine) as session:
                    accounts.update_user(session, tenant_id, ids[1], role="builder")
                outcome.append(None)
            except BaseException as e:  # noqa: BLE001 - reported to the test's thread
                outcome.append(e)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=1.0)  # it waits on ada's row, or (unlocked) finishes at once
        held.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        held.close()
        first.close()
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict), outcome
    with session_scope(engine) as session:
        admins = session.scalars(
            select(Agent.username).where(Agent.tenant_id == tenant_id, Agent.role == "admin")
        ).all()
    assert admins == ["bob"]
