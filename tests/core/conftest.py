"""Fixtures for the storage tests: settings and stores on the session's S3-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from tests.support.s3_server import S3Server


@pytest.fixture
def s3_settings(tmp_path: Path, s3_server: S3Server, s3_url: str) -> Settings:
    """Settings on a fresh bucket, the local artifact cache below ``tmp_path/cache``."""
    return Settings(
        data_dir=tmp_path / "data",
        cache_path=tmp_path / "cache",
        storage={
            "url": s3_url,
            "endpoint_url": s3_server.endpoint_url,
            "region": "us-east-1",
            "timeout_s": 3,
        },
    )
