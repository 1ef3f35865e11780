"""``python -m tests.support.celery_worker worker --queues cpu``: ``parley`` with the ``toy-bow``
test backend registered, so a real Celery worker subprocess can train it in tests."""

from __future__ import annotations

import tests.support.toy_backend  # noqa: F401 - registers ``toy-bow``
from parley.cli import app

if __name__ == "__main__":
    app()
