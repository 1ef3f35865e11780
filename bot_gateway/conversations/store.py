"""Tracker stores behind one async interface: where conversations and their events live.

``SqlTrackerStore`` (the default, SQLite or PostgreSQL) keeps a conversation row with the
tracker's state (slots, flow stack) and appends events to ``conversation_events``; a load is one
row, no replay. The Redis store of the distributed mode implements the same ``TrackerStore``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from core.db import session_scope, utcnow
from core.errors import NotFound
from core.ids import new_id
from core.tables import Conversation, ConversationEvent, Upload

__all__ = ["MESSAGE_EVENTS", "ConversationRecord", "SqlTrackerStore", "TrackerStore"]

MESSAGE_EVENTS = ("user", "bot", "agent")


@dataclass
class ConversationRecord:
    id: str
    tenant_id: str
    bot_id: str
    channel: str
    sender_id: str
    status: str
    state: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    is_new: bool = False

    @classmethod
    def of(cls, row: Conversation, *, is_new: bool = False) -> ConversationRecord:
        return cls(
            row.id,
            row.tenant_id,
            row.bot_id,
            row.channel,
            row.sender_id,
            row.status,
            dict(row.state or {}),
            row.created_at,
            row.updated_at,
            is_new,
        )


class TrackerStore(Protocol):
    async def open(
        self, tenant_id: str, bot_id: str, channel: str, sender_id: str, *, recent: int = 0
    ) -> tuple[ConversationRecord, list[dict[str, Any]]]:
        """The conversation of this sender (created if new) and its last ``recent`` events."""

    async def save(
        self,
        record: ConversationRecord,
        *,
        status: str,
        state: dict[str, Any],
        events: list[dict[str, Any]],
        uploads: list[str] = ...,
    ) -> None:
        """Append ``events`` and store the new state (one transaction)."""

    async def append(self, conversation_id: str, events: list[dict[str, Any]]) -> None:
        """Add events without touching the state (a delivery failure, an agent's note)."""

    async def get(self, tenant_id: str, conversation_id: str) -> ConversationRecord: ...

    async def events(
        self, tenant_id: str, conversation_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]: ...

    async def list(
        self,
        tenant_id: str,
        *,
        bot_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[ConversationRecord], int]: ...

    async def transcript(self, conversation_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` user, bot and agent messages, oldest first."""

    async def delete(self, tenant_id: str, conversation_id: str) -> list[str]:
        """Forget a conversation; returns the storage keys of its uploads (to delete)."""


class SqlTrackerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def open(
        self, tenant_id: str, bot_id: str, channel: str, sender_id: str, *, recent: int = 0
    ) -> tuple[ConversationRecord, list[dict[str, Any]]]:
        return await asyncio.to_thread(self._open, tenant_id, bot_id, channel, sender_id, recent)

    def _open(
        self, tenant_id: str, bot_id: str, channel: str, sender_id: str, recent: int
    ) -> tuple[ConversationRecord, list[dict[str, Any]]]:
        where = (
            Conversation.bot_id == bot_id,
            Conversation.channel == channel,
            Conversation.sender_id == sender_id,
        )
        with session_scope(self.engine) as session:
            row = session.scalar(select(Conversation).where(*where))
            if row is not None:
                events = self._recent(session, row.id, recent) if recent else []
                return ConversationRecord.of(row), events
        now = utcnow()
        try:
            with session_scope(self.engine) as session:
                row = Conversation(
                    id=new_id("conversation"),
                    tenant_id=tenant_id,
                    bot_id=bot_id,
                    channel=channel,
                    sender_id=sender_id,
                    status="bot",
                    state={},
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
            return ConversationRecord.of(row, is_new=True), []
        except IntegrityError:  # another process created it first
            with session_scope(self.engine) as session:
                row = session.scalar(select(Conversation).where(*where))
                if row is None:
                    raise
                return ConversationRecord.of(row), []

    @staticmethod
    def _recent(session: Any, conversation_id: str, limit: int) -> list[dict[str, Any]]:
        rows = session.scalars(
            select(ConversationEvent.data)
            .where(ConversationEvent.conversation_id == conversation_id)
            .order_by(ConversationEvent.id.desc())
            .limit(limit)
        )
        return list(reversed(list(rows)))

    async def save(
        self,
        record: ConversationRecord,
        *,
        status: str,
        state: dict[str, Any],
        events: list[dict[str, Any]],
        uploads: list[str] | None = None,
    ) -> None:
        await asyncio.to_thread(self._save, record, status, state, events, uploads or [])

    def _save(
        self,
        record: ConversationRecord,
        status: str,
        state: dict[str, Any],
        events: list[dict[str, Any]],
        uploads: list[str],
    ) -> None:
        now = utcnow()
        with session_scope(self.engine) as session:
            session.execute(
                update(Conversation)
                .where(Conversation.id == record.id)
                .values(status=status, state=state, updated_at=now)
            )
            self._insert_events(session, record.id, events, now)
            if uploads:
                session.execute(
                    update(Upload)
                    .where(Upload.id.in_(uploads), Upload.tenant_id == record.tenant_id)
                    .values(conversation_id=record.id)
                )
        record.status, record.state, record.updated_at = status, state, now

    async def append(self, conversation_id: str, events: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self._append, conversation_id, events)

    def _append(self, conversation_id: str, events: list[dict[str, Any]]) -> None:
        with session_scope(self.engine) as session:
            self._insert_events(session, conversation_id, events, utcnow())

    @staticmethod
    def _insert_events(
        session: Any, conversation_id: str, events: list[dict[str, Any]], now: datetime
    ) -> None:
        if events:
            session.execute(
                ConversationEvent.__table__.insert(),
                [
                    {
                        "conversation_id": conversation_id,
                        "kind": e["event"],
                        "data": e,
                        "created_at": now,
                    }
                    for e in events
                ],
            )

    async def get(self, tenant_id: str, conversation_id: str) -> ConversationRecord:
        return await asyncio.to_thread(self._get, tenant_id, conversation_id)

    def _get(self, tenant_id: str, conversation_id: str) -> ConversationRecord:
        with session_scope(self.engine) as session:
            row = session.get(Conversation, conversation_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"conversation {conversation_id} not found")
            return ConversationRecord.of(row)

    async def events(
        self, tenant_id: str, conversation_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._events, tenant_id, conversation_id, after, limit)

    def _events(
        self, tenant_id: str, conversation_id: str, after: int, limit: int
    ) -> list[dict[str, Any]]:
        self._get(tenant_id, conversation_id)
        with session_scope(self.engine) as session:
            rows = session.execute(
                select(ConversationEvent.id, ConversationEvent.data)
                .where(
                    ConversationEvent.conversation_id == conversation_id,
                    ConversationEvent.id > after,
                )
                .order_by(ConversationEvent.id)
                .limit(limit)
            )
            return [{**data, "id": id_} for id_, data in rows]

    async def list(
        self,
        tenant_id: str,
        *,
        bot_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[ConversationRecord], int]:
        return await asyncio.to_thread(self._list, tenant_id, bot_id, status, limit, offset)

    def _list(
        self, tenant_id: str, bot_id: str | None, status: str | None, limit: int, offset: int
    ) -> tuple[list[ConversationRecord], int]:
        where = [Conversation.tenant_id == tenant_id]
        if bot_id is not None:
            where.append(Conversation.bot_id == bot_id)
        if status is not None:
            where.append(Conversation.status == status)
        with session_scope(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(Conversation).where(*where))
            rows = session.scalars(
                select(Conversation)
                .where(*where)
                .order_by(Conversation.updated_at.desc(), Conversation.id)
                .limit(limit)
                .offset(offset)
            )
            return [ConversationRecord.of(r) for r in rows], int(total or 0)

    async def transcript(self, conversation_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._transcript, conversation_id, limit)

    def _transcript(self, conversation_id: str, limit: int) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            rows = session.scalars(
                select(ConversationEvent.data)
                .where(
                    ConversationEvent.conversation_id == conversation_id,
                    ConversationEvent.kind.in_(MESSAGE_EVENTS),
                )
                .order_by(ConversationEvent.id.desc())
                .limit(limit)
            )
            return list(reversed(list(rows)))

    async def delete(self, tenant_id: str, conversation_id: str) -> list[str]:
        return await asyncio.to_thread(self._delete, tenant_id, conversation_id)

    def _delete(self, tenant_id: str, conversation_id: str) -> list[str]:
        self._get(tenant_id, conversation_id)
        with session_scope(self.engine) as session:
            keys = list(
                session.scalars(
                    select(Upload.blob_key).where(
                        Upload.conversation_id == conversation_id, Upload.tenant_id == tenant_id
                    )
                )
            )
            session.execute(delete(Upload).where(Upload.conversation_id == conversation_id))
            session.execute(
                delete(ConversationEvent).where(
                    ConversationEvent.conversation_id == conversation_id
                )
            )
            session.execute(delete(Conversation).where(Conversation.id == conversation_id))
        return keys
