"""Shared fixtures: settings on a temp data dir, databases (SQLite and a real PostgreSQL),
and a running gateway (TestClient + real worker subprocess)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.db import dispose_engines  # noqa: E402
from core.settings import Settings, get_settings  # noqa: E402
from tests.support.postgres import PostgresServer, find_postgres_bin  # noqa: E402
from tests.support.redis_server import RedisServer, redis_server_path  # noqa: E402
from tests.support.s3_server import S3Server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / ".pytest_cache" / "parley-cache"  # the encoder's ONNX graph, shared by runs


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("PARLEY_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(CACHE_DIR))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    if find_postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; scripts/install-system-deps installs it")
        pytest.skip("PostgreSQL server binaries not installed (scripts/install-system-deps)")
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    dispose_engines()
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (tests that stop it use their own)."""
    if redis_server_path() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; scripts/install-system-deps installs it")
        pytest.skip("redis-server not installed (scripts/install-system-deps redis-server)")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A Redis URL with nothing stored (flushed before the test)."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3-compatible server (moto, standing in for MinIO in tests only) for the session;
    tests that stop it use their own."""
    with S3Server() as server:
        yield server


_bucket_counter = 0


@pytest.fixture
def s3_url(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``s3://<fresh bucket>/parley`` on the session's server, with the AWS credential
    variables set; the bucket's local artifact cache is removed afterwards."""
    global _bucket_counter
    _bucket_counter += 1
    bucket = s3_server.create_bucket(f"parley-test-{os.getpid()}-{_bucket_counter}")
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    yield f"s3://{bucket}/parley"
    shutil.rmtree(CACHE_DIR / "artifacts" / bucket, ignore_errors=True)


_db_counter = 0


def make_db_url(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, *, migrate: bool = True
) -> str:
    """A fresh database: a SQLite file (migrated by the server itself) or a PostgreSQL
    database, migrated like an operator would with `parley db upgrade` unless ``migrate`` is
    false."""
    global _db_counter
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'parley.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    _db_counter += 1
    url = server.create_database(f"parley_test_{_db_counter}")
    if migrate:
        from core.db import upgrade

        upgrade(url)
    return url


def make_settings(tmp_path: Path, db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "db": {"url": db_url},
        "cache_path": CACHE_DIR,
        "operator_token": "operator-secret",
        "queue": {"workers": 1, "threads": 1, "poll_interval": 0.1},
        "log_level": "WARNING",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}  # type: ignore[dict-item]
        else:
            values[key] = value
    return Settings(**values)  # type: ignore[arg-type]


DB_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
]
