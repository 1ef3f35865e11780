"""Sessions over an engine: committed on success, rolled back on error, nothing kept per engine."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from core.db import session_scope


def _engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (body TEXT)"))
    return engine


def _bodies(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT body FROM notes"))]


def test_session_commits_on_success_and_rolls_back_on_error(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "a.db")
    with session_scope(engine) as session:
        session.execute(text("INSERT INTO notes VALUES ('kept')"))
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.execute(text("INSERT INTO notes VALUES ('dropped')"))
        raise RuntimeError("boom")

    assert _bodies(engine) == ["kept"]
    engine.dispose()


def test_a_disposed_engine_nobody_holds_is_freed(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "a.db")
    with session_scope(engine) as session:
        session.execute(text("INSERT INTO notes VALUES ('x')"))
    gone = weakref.ref(engine)

    engine.dispose()
    del engine, session
    gc.collect()

    assert gone() is None  # session_scope kept no factory (nor anything else) bound to it


def test_sessions_of_a_new_engine_reach_its_own_database(tmp_path: Path) -> None:
    """An engine made after another was freed (its id may be reused) gets its own sessions."""
    for name in ("first.db", "second.db", "third.db"):
        engine = _engine(tmp_path / name)
        with session_scope(engine) as session:
            session.execute(text("INSERT INTO notes VALUES (:b)"), {"b": name})
        assert _bodies(engine) == [name]
        engine.dispose()
        del engine, session
        gc.collect()
