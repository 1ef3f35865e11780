"""Typed, prefixed, random ids: ``ds_3f9a...`` tells a reader what it names."""

from __future__ import annotations

import secrets
from typing import NewType

TenantId = NewType("TenantId", str)
ApiKeyId = NewType("ApiKeyId", str)
DatasetId = NewType("DatasetId", str)
ModelId = NewType("ModelId", str)

PREFIXES = {
    "tenant": "ten",
    "key": "key",
    "dataset": "ds",
    "model": "mdl",
    "example": "ex",
    "bot": "bot",
    "conversation": "cv",
    "upload": "up",
    "channel": "ch",
    "agent": "ag",
}


def new_id(kind: str) -> str:
    """A fresh id for ``kind`` (tenant, key, dataset, model, example)."""
    return f"{PREFIXES[kind]}_{secrets.token_hex(8)}"
