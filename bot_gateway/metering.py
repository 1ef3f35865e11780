"""Usage metering of conversations: the tracker store, counting as it stores.

Every channel (web chat, the REST channel, messaging channels, a bot's test run) opens and
saves conversations through the runtime's store, so counting there meters them all in one
place: a conversation the store creates counts once under ``conversations``, each customer
message (a ``user`` event) once under ``messages``, both by channel.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from bot_gateway.conversations.events import TrackerEvent, UserEvent
from bot_gateway.conversations.store import ConversationRecord, SqlTrackerStore
from core.usage import UsageRecorder

__all__ = ["MeteredTrackerStore"]


class MeteredTrackerStore(SqlTrackerStore):
    """``SqlTrackerStore`` that records ``conversations`` and ``messages`` usage."""

    def __init__(self, engine: Engine, usage: UsageRecorder) -> None:
        super().__init__(engine)
        self.usage = usage

    async def open(
        self, tenant_id: str, bot_id: str, channel: str, sender_id: str, *, recent: int = 0
    ) -> tuple[ConversationRecord, list[TrackerEvent]]:
        record, events = await super().open(tenant_id, bot_id, channel, sender_id, recent=recent)
        if record.is_new:
            self.usage.record(tenant_id, "conversations", dimension=channel)
        return record, events

    async def save(
        self,
        record: ConversationRecord,
        *,
        status: str,
        state: dict[str, Any],
        events: list[TrackerEvent],
        uploads: list[str] | None = None,
    ) -> None:
        await super().save(record, status=status, state=state, events=events, uploads=uploads)
        said = sum(1 for e in events if isinstance(e, UserEvent))
        self.usage.record(record.tenant_id, "messages", said, dimension=record.channel)
