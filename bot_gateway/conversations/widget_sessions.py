"""Web chat sessions of the public widget key.

A bot's widget key is public (it sits in the page), so by itself it proves nothing about who
is chatting. When the widget opens a new conversation over the websocket it gets a session
token (``connectors.webchat.access``: ``<conversation id>.<random>``); the conversation row
keeps only its sha256 (``widget_token_hash``). With the widget key a caller then acts only for
that conversation: resuming it over the websocket, posting to the REST channel as its sender,
uploading images to it and reading back its own images all need the token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from connectors.webchat.access import new_session_token, token_conversation, token_hash
from core.db import session_scope
from core.errors import NotFound
from core.tables import Conversation, Upload

__all__ = ["WidgetSession", "check_uploads", "issue", "session_of"]


@dataclass(frozen=True)
class WidgetSession:
    """The conversation a widget session token opens."""

    conversation_id: str
    bot_id: str
    channel: str
    sender_id: str


def issue(engine: Engine, conversation_id: str) -> str | None:
    """A new token for a conversation that has none yet (``None`` if it already has one)."""
    token = new_session_token(conversation_id)
    with session_scope(engine) as session:
        claimed = session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.widget_token_hash.is_(None))
            .values(widget_token_hash=token_hash(token))
        )
        return token if claimed.rowcount == 1 else None  # type: ignore[attr-defined]


def session_of(engine: Engine, bot_id: str, token: str | None) -> WidgetSession | None:
    """The session of a token of this bot's conversations (``None`` if it is not one)."""
    conversation_id = token_conversation(token)
    if token is None or conversation_id is None:
        return None
    with session_scope(engine) as session:
        row = session.get(Conversation, conversation_id)
        if (
            row is None
            or row.bot_id != bot_id
            or row.widget_token_hash is None
            or not secrets.compare_digest(row.widget_token_hash, token_hash(token))
        ):
            return None
        return WidgetSession(row.id, row.bot_id, row.channel, row.sender_id)


def check_uploads(engine: Engine, conversation_id: str, upload_ids: tuple[str, ...]) -> None:
    """``NotFound`` unless every upload was sent to this conversation."""
    if not upload_ids:
        return
    with session_scope(engine) as session:
        mine = set(
            session.scalars(
                select(Upload.id).where(
                    Upload.id.in_(upload_ids), Upload.conversation_id == conversation_id
                )
            )
        )
    for upload_id in upload_ids:
        if upload_id not in mine:
            raise NotFound(f"upload {upload_id} not found; upload the image first")
