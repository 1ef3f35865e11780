"""The cluster of issue 14 on loopback, once per module (``bench.topology.Cluster``): real
redis-server, PostgreSQL, an S3-compatible server (moto, standing in for MinIO in tests only),
two gateways and two Celery workers, each Parley process on its own data dir.

Before every test the fixture brings back whatever an earlier test killed or stopped (a
gateway, a worker, Redis, the store), so tests may kill processes. When a test fails, the tails
of every process's log are printed with it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from bench.topology import Cluster
from tests.conftest import CACHE_DIR
from tests.support.postgres import find_postgres_bin
from tests.support.redis_server import redis_server_path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = [
        name
        for name, found in (
            ("redis-server", redis_server_path()),
            ("PostgreSQL", find_postgres_bin()),
        )
        if found is None
    ]
    if missing:
        message = f"{' and '.join(missing)} not installed (scripts/install-system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with Cluster(tmp_path_factory.mktemp("cluster"), shared_cache=CACHE_DIR) as running:
        yield running


@pytest.fixture(autouse=True)
def _whole_cluster(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[None]:
    """Everything up before the test; the logs printed after a failed one."""
    cluster.heal()
    yield
    if request.node.stash.get(FAILED, False):
        print(f"\n===== cluster logs =====\n{cluster.logs()}")
