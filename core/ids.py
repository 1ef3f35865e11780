"""Prefixed, random ids: ``ds_3f9a...`` tells a reader what it names.

Ids are plain ``str`` everywhere (route parameters, rows, JSON); the kind passed to
:func:`new_id` is checked by the type checker, so a misspelt kind fails ``scripts/check``.
"""

from __future__ import annotations

import secrets
from typing import Literal

IdKind = Literal[
    "tenant",
    "key",
    "dataset",
    "model",
    "example",
    "bot",
    "conversation",
    "upload",
    "channel",
    "agent",
    "invite",
]

PREFIXES: dict[IdKind, str] = {
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
    "invite": "inv",
}


def new_id(kind: IdKind) -> str:
    """A fresh id for ``kind``: its prefix from ``PREFIXES``, an underscore, 16 hex digits."""
    return f"{PREFIXES[kind]}_{secrets.token_hex(8)}"
