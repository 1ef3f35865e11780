"""The plug-in registry, and tenants with their API keys on a real (migrated) SQLite database."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from core.db import get_engine, session_scope, upgrade
from core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
    UnknownPluginError,
)
from core.registry import Registry
from core.tenants import (
    Principal,
    authenticate,
    create_key,
    create_tenant,
    list_keys,
    revoke_key,
)

# --- Registry ---------------------------------------------------------------------------------


class Alpha:
    pass


class Beta:
    pass


@pytest.fixture
def widgets() -> Registry[type]:
    registry: Registry[type] = Registry("widget")
    registry.register("beta")(Beta)
    registry.register("alpha")(Alpha)
    return registry


def test_registry_get_and_names(widgets: Registry[type]) -> None:
    assert widgets.get("alpha") is Alpha
    assert widgets.names() == ["alpha", "beta"]
    assert list(widgets.items()) == [("alpha", Alpha), ("beta", Beta)]
    assert "beta" in widgets
    assert "gamma" not in widgets


def test_unknown_plugin_names_the_known_ones(widgets: Registry[type]) -> None:
    with pytest.raises(UnknownPluginError) as exc:
        widgets.get("gamma")

    assert exc.value.message == "unknown widget 'gamma'; known: alpha, beta"
    assert exc.value.details == {"known": ["alpha", "beta"]}
    assert isinstance(exc.value, InvalidInput)


def test_unknown_plugin_in_an_empty_registry_says_none() -> None:
    with pytest.raises(UnknownPluginError, match="known: none"):
        Registry[type]("gadget").get("x")


def test_registering_a_different_object_under_a_taken_name_is_refused(
    widgets: Registry[type],
) -> None:
    with pytest.raises(ValueError, match="widget 'alpha' is registered twice"):
        widgets.register("alpha")(Beta)

    assert widgets.get("alpha") is Alpha


def test_registering_the_same_object_again_is_harmless(widgets: Registry[type]) -> None:
    assert widgets.register("alpha")(Alpha) is Alpha
    assert widgets.names() == ["alpha", "beta"]


# --- tenants and keys -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test works on its own copy."""
    path = tmp_path_factory.mktemp("template") / "parley.db"
    upgrade(f"sqlite:///{path}")  # alembic's own engine (NullPool): the file is complete after
    return path


@pytest.fixture
def engine(migrated_db: Path, tmp_path: Path) -> Iterator[Engine]:
    path = tmp_path / "parley.db"
    shutil.copyfile(migrated_db, path)
    engine = get_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def test_new_tenant_admin_key_authenticates(engine: Engine) -> None:
    with session_scope(engine) as session:
        tenant, key = create_tenant(session, "  acme  ")

    with session_scope(engine) as session:
        principal = authenticate(session, key.secret)

    assert tenant.name == "acme"
    assert key.secret.startswith("pk_")
    assert principal == Principal(
        tenant_id=tenant.id, key_id=key.record.id, scopes=frozenset({"admin"})
    )
    for scope in ("admin", "train", "predict"):
        principal.require(scope)


def test_key_is_stored_hashed_never_in_clear(engine: Engine) -> None:
    with session_scope(engine) as session:
        tenant, first = create_tenant(session, "acme")
        second = create_key(session, tenant.id, scopes=["predict"], name="bot")

    with engine.connect() as conn:
        stored = conn.execute(text("SELECT * FROM api_keys")).all()

    assert len(stored) == 2
    dump = repr(stored)
    for key in (first, second):
        assert key.secret not in dump
        assert key.secret[3:] not in dump  # not even without the pk_ prefix
        assert hashlib.sha256(key.secret.encode()).hexdigest() in dump


def test_migration_reached_the_api_keys_table(engine: Engine) -> None:
    with engine.connect() as conn:
        names = {row[0] for row in conn.execute(text("SELECT name FROM sqlite_master"))}

    assert {"tenants", "api_keys", "alembic_version"} <= names


@pytest.mark.parametrize("secret", [None, ""])
def test_missing_key_is_unauthenticated_and_says_how_to_send_one(
    engine: Engine, secret: str | None
) -> None:
    with session_scope(engine) as session, pytest.raises(Unauthenticated) as exc:
        authenticate(session, secret)

    assert "Authorization: Bearer" in exc.value.message


def test_wrong_key_is_unauthenticated(engine: Engine) -> None:
    with session_scope(engine) as session:
        _, key = create_tenant(session, "acme")

    for wrong in (key.secret + "x", key.secret[:-1], key.secret.upper(), "pk_nope"):
        with session_scope(engine) as session, pytest.raises(Unauthenticated, match="invalid"):
            authenticate(session, wrong)


def test_revoked_key_is_unauthenticated_and_other_keys_still_work(engine: Engine) -> None:
    with session_scope(engine) as session:
        tenant, admin = create_tenant(session, "acme")
        bot = create_key(session, tenant.id, scopes=["predict"], name="bot")

    with session_scope(engine) as session:
        revoked = revoke_key(session, tenant.id, bot.record.id)
        assert revoked.revoked_at is not None

    with session_scope(engine) as session, pytest.raises(Unauthenticated, match="revoked"):
        authenticate(session, bot.secret)
    with session_scope(engine) as session:
        assert authenticate(session, admin.secret).tenant_id == tenant.id


def test_revoking_twice_keeps_the_first_time(engine: Engine) -> None:
    with session_scope(engine) as session:
        tenant, key = create_tenant(session, "acme")
    with session_scope(engine) as session:
        first = revoke_key(session, tenant.id, key.record.id).revoked_at
    with session_scope(engine) as session:
        assert revoke_key(session, tenant.id, key.record.id).revoked_at == first


def test_predict_only_key_cannot_train(engine: Engine) -> None:
    with session_scope(engine) as session:
        tenant, _ = create_tenant(session, "acme")
        key = create_key(session, tenant.id, scopes=["predict"])
    with session_scope(engine) as session:
        principal = authenticate(session, key.secret)

    principal.require("predict")
    with pytest.raises(Forbidden) as exc:
        principal.require("train")

    assert "lacks the 'train' scope" in exc.value.message
    assert "it has: predict" in exc.value.message
    assert "--scope train" in exc.value.message
    assert exc.value.details == {"missing_scope": "train"}


def test_key_scopes_are_deduplicated_and_sorted(engine: Engine) -> None:
    with session_scope(engine) as session:
        tenant, _ = create_tenant(session, "acme")
        key = create_key(session, tenant.id, scopes=["train", "predict", "train"])
    with session_scope(engine) as session:
        principal = authenticate(session, key.secret)

    assert key.record.scopes == ["predict", "train"]
    assert principal.scopes == frozenset({"predict", "train"})


def test_unknown_scope_is_refused_naming_the_known_ones(engine: Engine) -> None:
    with session_scope(engine) as session:
        tenant, _ = create_tenant(session, "acme")
        with pytest.raises(InvalidInput) as exc:
            create_key(session, tenant.id, scopes=["predict", "superuser"])
        with pytest.raises(InvalidInput, match="at least one scope"):
            create_key(session, tenant.id, scopes=[])

    assert "superuser" in exc.value.message
    assert "admin, train, predict" in exc.value.message
    with session_scope(engine) as session:
        assert len(list_keys(session, tenant.id)) == 1


@pytest.mark.parametrize("second_name", ["acme", " acme "])
def test_duplicate_tenant_name_is_a_conflict(engine: Engine, second_name: str) -> None:
    with session_scope(engine) as session:
        create_tenant(session, "acme")

    with session_scope(engine) as session, pytest.raises(Conflict, match="'acme' already exists"):
        create_tenant(session, second_name)

    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tenants")).scalar_one() == 1


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_tenant_name_must_be_1_to_200_characters(engine: Engine, name: str) -> None:
    with session_scope(engine) as session, pytest.raises(InvalidInput, match="1-200"):
        create_tenant(session, name)


def test_revoking_another_tenants_key_is_not_found_and_the_key_keeps_working(
    engine: Engine,
) -> None:
    with session_scope(engine) as session:
        acme, _ = create_tenant(session, "acme")
        globex, globex_key = create_tenant(session, "globex")

    with session_scope(engine) as session, pytest.raises(NotFound):
        revoke_key(session, acme.id, globex_key.record.id)
    with session_scope(engine) as session, pytest.raises(NotFound):
        revoke_key(session, acme.id, "key_does_not_exist")

    with session_scope(engine) as session:
        assert authenticate(session, globex_key.secret).tenant_id == globex.id
