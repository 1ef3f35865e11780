"""Who may use a bot's public widget key: the page's ``Origin`` must be one of the bot's
``allowed_origins``, and after the socket's ``welcome`` every use of the key carries the web chat
session token it handed out.

The token is ``<conversation id>.<random>``; only its sha256 is stored (the gateway keeps it on
the conversation, ``bot_gateway.conversations.widget_sessions``). Nothing here touches the
database or the web framework.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from core.errors import Forbidden
from core.logging import log_event

__all__ = [
    "SESSION_TOKEN_HEADER",
    "WIDGET_KEY_HEADER",
    "check_origin",
    "new_session_token",
    "origin_allowed",
    "session_id",
    "token_conversation",
    "token_hash",
]

WIDGET_KEY_HEADER = "x-parley-widget-key"
SESSION_TOKEN_HEADER = "x-parley-session-token"
MAX_TOKEN_CHARS = 200
_SESSION_ID = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")


def origin_allowed(allowed: Iterable[str], origin: str | None, *, required: bool = False) -> bool:
    """A browser page may use the widget key only from the bot's ``allowed`` origins; a caller
    without an ``Origin`` (not a browser) is refused only where it is ``required`` (a websocket)
    and the bot names its origins (other than ``*``)."""
    names = [o.rstrip("/") for o in allowed]
    if origin is None:
        return not (required and names and "*" not in names)
    return "*" in names or origin.rstrip("/") in names


def check_origin(
    allowed: Iterable[str], origin: str | None, *, required: bool = False, bot_id: str
) -> None:
    """``Forbidden`` (logged) unless ``origin_allowed``."""
    if not origin_allowed(allowed, origin, required=required):
        log_event("webchat.origin_refused", bot=bot_id, origin=origin)
        raise Forbidden(
            f"origin {origin or '(none)'} may not use this bot's widget; add it to the "
            "bot's `allowed_origins`"
        )


def session_id(requested: str | None) -> str:
    """The socket's ``?session=`` when it is a well-formed one, else a new random one."""
    if requested and _SESSION_ID.match(requested):
        return requested
    return secrets.token_urlsafe(16)


def new_session_token(conversation_id: str) -> str:
    """A new web chat session token for a conversation."""
    return f"{conversation_id}.{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    """What is stored of a token (its sha256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_conversation(token: str | None) -> str | None:
    """The conversation id a token names (``None`` for no token or one too long to be ours);
    whether the token is really that conversation's is for its stored hash to say."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return token.partition(".")[0]
