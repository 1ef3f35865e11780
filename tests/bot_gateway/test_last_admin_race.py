"""Accounts' changes racing on PostgreSQL, one transaction held open while the other runs:
two admins demoting each other (one wins, the other is ``Conflict``: ``accounts.update_user``
locks the active admins' rows while it counts them), and one invite link accepted twice at
once (one user; the second is ``Unauthenticated``, as a used link is: the invite is claimed by
a conditional update)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot_gateway.services import accounts
from core.db import get_engine, session_scope
from core.errors import Conflict, Unauthenticated
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


def test_an_invite_accepted_twice_at_once_makes_one_user(engine: Engine) -> None:
    with session_scope(engine) as session:
        tenant, _ = create_tenant(session, "acme")
        tenant_id = tenant.id
        admin = accounts.create_user(
            session, tenant_id=tenant_id, username="ada", password="password1", role="admin"
        )
        token = accounts.create_invite(
            session, tenant_id=tenant_id, username="cy", role="builder", created_by=admin.id
        ).token
    first = engine.connect()
    held = Session(bind=first)
    outcome: list[BaseException | None] = []
    try:
        accounts.accept_invite(held, token=token, password="password1")

        def other() -> None:
            try:
                with session_scope(engine) as session:
                    accounts.accept_invite(session, token=token, password="password2")
                outcome.append(None)
            except BaseException as e:  # noqa: BLE001 - reported to the test's thread
                outcome.append(e)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=1.0)
        held.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        held.close()
        first.close()
    assert len(outcome) == 1 and isinstance(outcome[0], Unauthenticated), outcome
    with session_scope(engine) as session:
        users = session.scalars(select(Agent.username).where(Agent.tenant_id == tenant_id)).all()
    assert sorted(users) == ["ada", "cy"]
