"""Structured events with dotted names: ``log_event("queue.job_failed", job=...)``."""

from __future__ import annotations

import json
import logging
from typing import Any

_logger = logging.getLogger("parley")


def configure_logging(level: str = "INFO") -> None:
    """Send Parley's events to stderr, one line each."""
    if not _logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        _logger.addHandler(handler)
    _logger.setLevel(level.upper())
    _logger.propagate = False
    # httpx logs every request URL at INFO; some carry secrets (Telegram's bot token)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def log_event(event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with key=value fields (values JSON-encoded)."""
    if not _logger.isEnabledFor(level):
        return
    parts = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
    _logger.log(level, f"{event} {parts}".rstrip())
