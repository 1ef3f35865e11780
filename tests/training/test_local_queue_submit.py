"""What a gateway without local train workers says when a job is queued: that no worker will
run it, unless another gateway's workers do (``parley serve --processes N``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from tests.conftest import make_settings
from training.queue.local import LocalQueue


@pytest.mark.parametrize(("elsewhere", "logged"), [(False, True), (True, False)])
def test_no_workers_is_logged_only_where_no_other_gateway_trains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, elsewhere: bool, logged: bool
) -> None:
    settings = make_settings(
        tmp_path, "sqlite://", queue={"workers": 0, "workers_elsewhere": elsewhere}
    )
    queue = LocalQueue.from_settings(settings, create_engine("sqlite://"))
    with caplog.at_level(logging.INFO, logger="parley"):
        queue.submit("model_1")
    assert ("queue.no_workers" in caplog.text) is logged
