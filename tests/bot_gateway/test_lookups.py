"""The look-up caches of two gateway processes over one real (migrated) SQLite database: a
change made through one reaches the other through the change log, and only then; with Redis,
through a message published after the commit, at once (a real redis-server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from bot_gateway.serving.lookup import Lookups
from core import lookup_changes
from core.db import get_engine, session_scope, upgrade
from core.errors import NotFound, Unauthenticated
from core.settings import RedisSettings
from core.tables import Model
from core.tenants import create_tenant, hash_key, revoke_key
from tests.support.redis_server import RedisServer
from training import registry

HOUR = 3600.0  # the poller polls once at start; the tests call poll() themselves


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    upgrade(url)
    return get_engine(url)


@pytest.fixture
def gateways(engine: Engine) -> Iterator[tuple[Lookups, Lookups]]:
    a, b = Lookups(engine, ttl=HOUR), Lookups(engine, ttl=HOUR)
    a.poll(), b.poll()
    yield a, b
    a.stop(), b.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def add_tenant(engine: Engine, name: str = "acme") -> tuple[str, str, str]:
    """A tenant with a key, and two succeeded models: (tenant id, key secret, key id)."""
    with session_scope(engine) as session:
        tenant, key = create_tenant(session, name)
        for model_id in ("mdl_one", "mdl_two"):
            session.add(
                Model(
                    id=f"{model_id}_{name}",
                    tenant_id=tenant.id,
                    dataset_id="ds_x",
                    name=model_id,
                    backend="embedding-head",
                    task="intent",
                    status="succeeded",
                    artifact_key=f"models/{model_id}",
                    artifact_sha256="0" * 64,
                )
            )
        session.commit()
        return tenant.id, key.secret, key.record.id


def test_a_key_revoked_elsewhere_stops_working_after_the_next_poll(
    engine: Engine, gateways: tuple[Lookups, Lookups]
) -> None:
    a, b = gateways
    tenant_id, secret, key_id = add_tenant(engine)
    assert run(a.principal(secret)).tenant_id == tenant_id  # now cached in A
    with session_scope(engine) as session:  # another process revokes it
        revoke_key(session, tenant_id, key_id)
        session.commit()
    assert run(a.principal(secret)).tenant_id == tenant_id  # A has not polled yet
    with pytest.raises(Unauthenticated, match="revoked"):
        run(b.principal(secret))  # B never cached it
    a.poll()
    with pytest.raises(Unauthenticated, match="revoked"):
        run(a.principal(secret))


def test_an_alias_moved_elsewhere_is_followed_after_the_next_poll(
    engine: Engine, gateways: tuple[Lookups, Lookups]
) -> None:
    a, _ = gateways
    tenant_id, _, _ = add_tenant(engine)
    other_id, _, _ = add_tenant(engine, "globex")
    with session_scope(engine) as session:
        registry.set_alias(session, tenant_id, "production", "mdl_one_acme")
        registry.set_alias(session, other_id, "production", "mdl_one_globex")
        session.commit()
    assert run(a.model(tenant_id, "production")).id == "mdl_one_acme"
    assert run(a.model(other_id, "production")).id == "mdl_one_globex"
    with session_scope(engine) as session:
        registry.set_alias(session, tenant_id, "production", "mdl_two_acme")
        registry.delete_model(session, other_id, "mdl_two_globex")
        session.commit()
    assert run(a.model(tenant_id, "production")).id == "mdl_one_acme"  # not polled yet
    a.poll()
    assert run(a.model(tenant_id, "production")).id == "mdl_two_acme"
    assert run(a.model(other_id, "production")).id == "mdl_one_globex"
    with pytest.raises(NotFound):
        run(a.model(other_id, "mdl_two_globex"))


def test_another_tenants_changes_keep_this_tenants_entries(
    engine: Engine, gateways: tuple[Lookups, Lookups], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = gateways
    tenant_id, secret, _ = add_tenant(engine)
    other_id, _, other_key = add_tenant(engine, "globex")
    run(a.principal(secret)), run(a.model(tenant_id, "mdl_one_acme"))
    with session_scope(engine) as session:
        revoke_key(session, other_id, other_key)
        session.commit()
    a.poll()

    def no_database(*args: object) -> None:
        raise AssertionError("a cached entry went back to the database")

    monkeypatch.setattr(a, "_authenticate", no_database)
    monkeypatch.setattr(a, "_resolve", no_database)
    assert run(a.principal(secret)).tenant_id == tenant_id
    assert run(a.model(tenant_id, "mdl_one_acme")).id == "mdl_one_acme"


def test_a_failed_poll_empties_the_caches_until_one_succeeds(
    engine: Engine, gateways: tuple[Lookups, Lookups], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = gateways
    tenant_id, secret, key_id = add_tenant(engine)
    run(a.principal(secret))
    assert a.caching

    def database_away(*args: object) -> None:
        raise OSError("database unreachable")

    monkeypatch.setattr(lookup_changes, "after", database_away)
    a.poll()
    assert not a.caching
    with session_scope(engine) as session:
        revoke_key(session, tenant_id, key_id)
        session.commit()
    with pytest.raises(Unauthenticated, match="revoked"):
        run(a.principal(secret))  # read from the database, not the emptied cache
    monkeypatch.undo()
    a.poll()
    assert a.caching


def test_a_value_read_before_an_invalidation_is_not_cached_after_it(
    engine: Engine, gateways: tuple[Lookups, Lookups], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = gateways
    tenant_id, secret, _ = add_tenant(engine)
    real = a._authenticate

    def revoked_while_reading(s: str | None) -> Any:
        principal = real(s)
        a.forget_keys(tenant_id)  # an invalidation lands while the read is in flight
        return principal

    monkeypatch.setattr(a, "_authenticate", revoked_while_reading)
    run(a.principal(secret))
    calls: list[str | None] = []
    monkeypatch.setattr(a, "_authenticate", lambda s: calls.append(s) or real(s))
    run(a.principal(secret))
    assert calls == [secret]  # the first read was not kept


def test_a_revocation_is_logged_once(engine: Engine) -> None:
    tenant_id, _, key_id = add_tenant(engine)
    with session_scope(engine) as session:
        revoke_key(session, tenant_id, key_id)
        revoke_key(session, tenant_id, key_id)  # already revoked: no second change
        session.commit()
    with engine.connect() as conn:
        assert [(t, k) for _, t, k in lookup_changes.after(conn, 0)] == [(tenant_id, "keys")]
        assert lookup_changes.latest(conn) == lookup_changes.after(conn, 0)[0][0]


# --- with Redis: changes published after the commit, received at once -----------------------


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@contextmanager
def subscribed(engine: Engine, url: str) -> Iterator[tuple[Lookups, Lookups]]:
    """Two gateways' caches following Redis (``ttl`` an hour: nothing is polled)."""
    redis = RedisSettings(url=url)
    lookup_changes.publish_on(engine, redis)
    a, b = Lookups(engine, ttl=HOUR, redis=redis), Lookups(engine, ttl=HOUR, redis=redis)
    try:
        wait_until(lambda: a.caching and b.caching)
        yield a, b
    finally:
        a.stop(), b.stop()


def test_with_redis_a_key_revoked_elsewhere_is_refused_at_once(
    engine: Engine, redis_url: str
) -> None:
    tenant_id, secret, key_id = add_tenant(engine)
    with subscribed(engine, redis_url) as (a, b):
        assert run(a.principal(secret)).tenant_id == tenant_id  # cached in both
        assert run(b.principal(secret)).tenant_id == tenant_id
        with session_scope(engine) as session:  # rolled back: nothing is published
            revoke_key(session, tenant_id, key_id)
            session.rollback()
        time.sleep(0.3)
        assert b._principals.get(hash_key(secret), time.monotonic()) is not None
        with session_scope(engine) as session:
            revoke_key(session, tenant_id, key_id)
        for gateway in (a, b):
            wait_until(
                lambda g=gateway: g._principals.get(hash_key(secret), time.monotonic()) is None, 2.0
            )
            with pytest.raises(Unauthenticated, match="revoked"):
                run(gateway.principal(secret))


def test_with_redis_an_alias_moved_by_a_worker_reaches_every_gateway(
    engine: Engine, redis_url: str, tmp_path: Path
) -> None:
    tenant_id, _, _ = add_tenant(engine)
    with session_scope(engine) as session:
        registry.set_alias(session, tenant_id, "production", "mdl_one_acme")
    with subscribed(engine, redis_url) as (a, b):
        for gateway in (a, b):
            assert run(gateway.model(tenant_id, "production")).id == "mdl_one_acme"
        worker = create_engine(str(engine.url))  # a worker process has its own engine
        lookup_changes.publish_on(worker, RedisSettings(url=redis_url))
        with session_scope(worker) as session:  # e.g. auto_promote after a train job
            registry.set_alias(session, tenant_id, "production", "mdl_two_acme")
        worker.dispose()
        for gateway in (a, b):
            wait_until(lambda g=gateway: run(g.model(tenant_id, "production")).id == "mdl_two_acme")


def test_without_redis_the_caches_empty_and_refill_once_it_is_back(engine: Engine) -> None:
    tenant_id, secret, key_id = add_tenant(engine)
    with RedisServer() as server, subscribed(engine, server.url) as (a, _):
        run(a.principal(secret))
        assert a._principals.get(hash_key(secret), time.monotonic()) is not None
        server.stop()
        wait_until(lambda: not a.caching)
        assert a._principals.get(hash_key(secret), time.monotonic()) is None  # emptied
        assert run(a.principal(secret)).tenant_id == tenant_id  # from the database
        assert a._principals.get(hash_key(secret), time.monotonic()) is None  # not filled
        with session_scope(engine) as session:  # committed; publishing it fails (logged)
            revoke_key(session, tenant_id, key_id)
        with pytest.raises(Unauthenticated, match="revoked"):
            run(a.principal(secret))
        server.start()
        wait_until(lambda: a.caching, timeout=10)
        with pytest.raises(Unauthenticated, match="revoked"):
            run(a.principal(secret))
