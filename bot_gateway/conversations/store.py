"""Tracker stores behind one async interface: where conversations and their events live.

``SqlTrackerStore`` (the default, SQLite or PostgreSQL) keeps a conversation row with the
tracker's state (slots, flow stack) and appends events to ``conversation_events``; a load is one
row, no replay. The Redis store of the distributed mode implements the same ``TrackerStore``.
"""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Engine, Table, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from bot_gateway.conversations.events import HandoffEvent, TrackerEvent, load_event
from core.db import session_scope, utcnow
from core.errors import Conflict, NotFound
from core.ids import new_id
from core.tables import Conversation, ConversationEvent, Upload

__all__ = [
    "CLOSED",
    "MESSAGE_EVENTS",
    "WAITING",
    "WITH_AGENT",
    "AgentDesk",
    "ConversationRecord",
    "SqlTrackerStore",
    "TrackerStore",
]

MESSAGE_EVENTS = ("user", "bot", "agent")
WAITING, WITH_AGENT, CLOSED = "waiting_for_agent", "with_agent", "closed"


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
    assigned_agent_id: str | None = None
    handoff_reason: str | None = None
    waiting_since: datetime | None = None

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
            row.assigned_agent_id,
            row.handoff_reason,
            row.waiting_since,
        )


class TrackerStore(Protocol):
    async def open(
        self, tenant_id: str, bot_id: str, channel: str, sender_id: str, *, recent: int = 0
    ) -> tuple[ConversationRecord, list[TrackerEvent]]:
        """The conversation of this sender (created if new) and its last ``recent`` events."""

    async def save(
        self,
        record: ConversationRecord,
        *,
        status: str,
        state: dict[str, Any],
        events: list[TrackerEvent],
        uploads: list[str] = ...,
    ) -> None:
        """Append ``events`` and store the new state (one transaction)."""

    async def append(self, conversation_id: str, events: list[TrackerEvent]) -> None:
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

    async def transcript(
        self, conversation_id: str, limit: int = 50
    ) -> builtins.list[dict[str, Any]]:
        """The last ``limit`` user, bot and agent messages, oldest first."""

    async def delete(self, tenant_id: str, conversation_id: str) -> builtins.list[str]:
        """Forget a conversation; returns the storage keys of its uploads (to delete)."""


class SqlTrackerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def open(
        self, tenant_id: str, bot_id: str, channel: str, sender_id: str, *, recent: int = 0
    ) -> tuple[ConversationRecord, list[TrackerEvent]]:
        return await asyncio.to_thread(self._open, tenant_id, bot_id, channel, sender_id, recent)

    def _open(
        self, tenant_id: str, bot_id: str, channel: str, sender_id: str, recent: int
    ) -> tuple[ConversationRecord, list[TrackerEvent]]:
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
    def _recent(session: Any, conversation_id: str, limit: int) -> list[TrackerEvent]:
        rows = session.scalars(
            select(ConversationEvent.data)
            .where(ConversationEvent.conversation_id == conversation_id)
            .order_by(ConversationEvent.id.desc())
            .limit(limit)
        )
        return [load_event(data) for data in reversed(list(rows))]

    async def save(
        self,
        record: ConversationRecord,
        *,
        status: str,
        state: dict[str, Any],
        events: list[TrackerEvent],
        uploads: list[str] | None = None,
    ) -> None:
        await asyncio.to_thread(self._save, record, status, state, events, uploads or [])

    def _save(
        self,
        record: ConversationRecord,
        status: str,
        state: dict[str, Any],
        events: list[TrackerEvent],
        uploads: list[str],
    ) -> None:
        now = utcnow()
        values: dict[str, Any] = {"status": status, "state": state, "updated_at": now}
        if status == WAITING and record.status != WAITING:
            reasons = [e.reason for e in events if isinstance(e, HandoffEvent)]
            values.update(waiting_since=now, handoff_reason=reasons[-1] if reasons else None)
        elif status == "bot" and record.status != "bot":
            values.update(waiting_since=None, handoff_reason=None, assigned_agent_id=None)
        with session_scope(self.engine) as session:
            session.execute(
                update(Conversation).where(Conversation.id == record.id).values(**values)
            )
            self._insert_events(session, record.id, events, now)
            if uploads:
                session.execute(
                    update(Upload)
                    .where(Upload.id.in_(uploads), Upload.tenant_id == record.tenant_id)
                    .values(conversation_id=record.id)
                )
        for key, value in values.items():
            setattr(record, key, value)

    async def append(self, conversation_id: str, events: list[TrackerEvent]) -> None:
        await asyncio.to_thread(self._append, conversation_id, events)

    def _append(self, conversation_id: str, events: list[TrackerEvent]) -> None:
        with session_scope(self.engine) as session:
            self._insert_events(session, conversation_id, events, utcnow())

    @staticmethod
    def _insert_events(
        session: Any, conversation_id: str, events: list[TrackerEvent], now: datetime
    ) -> None:
        if events:
            session.execute(
                cast(Table, ConversationEvent.__table__).insert(),  # typed as a FromClause
                [
                    {
                        "conversation_id": conversation_id,
                        "kind": e.event,
                        "data": e.to_dict(),
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
    ) -> tuple[builtins.list[ConversationRecord], int]:
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

    async def transcript(
        self, conversation_id: str, limit: int = 50
    ) -> builtins.list[dict[str, Any]]:
        return await asyncio.to_thread(self._transcript, conversation_id, limit)

    def _transcript(self, conversation_id: str, limit: int) -> builtins.list[dict[str, Any]]:
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

    async def delete(self, tenant_id: str, conversation_id: str) -> builtins.list[str]:
        return await asyncio.to_thread(self._delete, tenant_id, conversation_id)

    def _delete(self, tenant_id: str, conversation_id: str) -> builtins.list[str]:
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


class AgentDesk:
    """What the agents' console reads and changes of conversations: the inbox, claims,
    assignments, closing (SQL; the distributed release keeps this interface)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def claim(
        self, tenant_id: str, conversation_id: str, agent_id: str, *, take_over: bool
    ) -> ConversationRecord:
        """Give a handed-off conversation to ``agent_id``; ``Conflict`` if another agent holds
        it (unless ``take_over``: a supervisor)."""
        return await asyncio.to_thread(self._claim, tenant_id, conversation_id, agent_id, take_over)

    def _claim(
        self, tenant_id: str, conversation_id: str, agent_id: str, take_over: bool
    ) -> ConversationRecord:
        where = [
            Conversation.id == conversation_id,
            Conversation.tenant_id == tenant_id,
            Conversation.status.in_((WAITING, WITH_AGENT)),
        ]
        if not take_over:
            where.append(
                (Conversation.assigned_agent_id.is_(None))
                | (Conversation.assigned_agent_id == agent_id)
            )
        with session_scope(self.engine) as session:
            done = session.execute(
                update(Conversation)
                .where(*where)
                .values(status=WITH_AGENT, assigned_agent_id=agent_id, updated_at=utcnow())
            )
            row = session.get(Conversation, conversation_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"conversation {conversation_id} not found")
            if done.rowcount == 0:  # type: ignore[attr-defined]
                if row.status not in (WAITING, WITH_AGENT):
                    raise Conflict(
                        f"conversation {conversation_id} is {row.status}: only handed-off "
                        "conversations can be claimed"
                    )
                raise Conflict(
                    f"conversation {conversation_id} is held by another agent",
                    assigned_agent_id=row.assigned_agent_id,
                )
            return ConversationRecord.of(row)

    async def close(self, tenant_id: str, conversation_id: str) -> ConversationRecord:
        return await asyncio.to_thread(self._close, tenant_id, conversation_id)

    def _close(self, tenant_id: str, conversation_id: str) -> ConversationRecord:
        with session_scope(self.engine) as session:
            row = session.get(Conversation, conversation_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"conversation {conversation_id} not found")
            row.status, row.assigned_agent_id, row.updated_at = CLOSED, None, utcnow()
            row.waiting_since = None
            session.flush()
            return ConversationRecord.of(row)

    async def inbox(self, tenant_id: str) -> list[ConversationRecord]:
        """Conversations waiting for or held by an agent, longest waiting first."""
        return await asyncio.to_thread(self._inbox, tenant_id)

    def _inbox(self, tenant_id: str) -> list[ConversationRecord]:
        with session_scope(self.engine) as session:
            rows = session.scalars(
                select(Conversation)
                .where(
                    Conversation.tenant_id == tenant_id,
                    Conversation.status.in_((WAITING, WITH_AGENT)),
                )
                .order_by(Conversation.waiting_since, Conversation.updated_at)
            )
            return [ConversationRecord.of(r) for r in rows]

    async def last_texts(self, conversation_ids: list[str]) -> dict[str, str]:
        """The last thing each customer wrote."""
        return await asyncio.to_thread(self._last_texts, conversation_ids)

    def _last_texts(self, conversation_ids: list[str]) -> dict[str, str]:
        if not conversation_ids:
            return {}
        with session_scope(self.engine) as session:
            latest = (
                select(func.max(ConversationEvent.id))
                .where(
                    ConversationEvent.conversation_id.in_(conversation_ids),
                    ConversationEvent.kind == "user",
                )
                .group_by(ConversationEvent.conversation_id)
            )
            rows = session.execute(
                select(ConversationEvent.conversation_id, ConversationEvent.data).where(
                    ConversationEvent.id.in_(latest)
                )
            )
            return {cid: (data.get("text") or "(image)") for cid, data in rows}

    async def load(self, tenant_id: str) -> dict[str, int]:
        """Conversations each agent holds."""
        return await asyncio.to_thread(self._load, tenant_id)

    def _load(self, tenant_id: str) -> dict[str, int]:
        with session_scope(self.engine) as session:
            rows = session.execute(
                select(Conversation.assigned_agent_id, func.count())
                .where(Conversation.tenant_id == tenant_id, Conversation.status == WITH_AGENT)
                .group_by(Conversation.assigned_agent_id)
            )
            return {agent: int(n) for agent, n in rows if agent}
