"""Every table of Parley's metadata database, in one place beside its migrations.

Every tenant-owned row carries ``tenant_id``; every query filters on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # set by the operator: {"predictions_per_month": 100000, "models": 50, ...}; absent = none
    quotas: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # operator overrides of the rate limit settings: {"predict_tenant": {"per_second":..}}
    rate_limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="processing")
    status_message: Mapped[str | None] = mapped_column(Text, default=None)
    num_examples: Mapped[int] = mapped_column(Integer, default=0)
    num_duplicates: Mapped[int] = mapped_column(Integer, default=0)
    label_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extras: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_key: Mapped[str | None] = mapped_column(String(500), default=None)
    source_format: Mapped[str | None] = mapped_column(String(16), default=None)
    content_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Example(Base):
    __tablename__ = "examples"
    __table_args__ = (Index("ix_examples_dataset_label", "dataset_id", "label"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    text: Mapped[str | None] = mapped_column(Text, default=None)
    label: Mapped[str | None] = mapped_column(String(200), default=None)
    labels: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    annotations: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    blob_key: Mapped[str | None] = mapped_column(String(500), default=None)
    line: Mapped[int | None] = mapped_column(Integer, default=None)
    # images: the upright size, the name it was uploaded under
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    file: Mapped[str | None] = mapped_column(String(500), default=None)
    source: Mapped[str] = mapped_column(String(16), default="import", server_default="import")


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200))
    backend: Mapped[str] = mapped_column(String(100))
    backend_version: Mapped[str | None] = mapped_column(String(32), default=None)
    task: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    failure_message: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    promote_alias: Mapped[str | None] = mapped_column(String(100), default=None)
    dataset_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    labels: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    learning_curve: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    artifact_key: Mapped[str | None] = mapped_column(String(500), default=None)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    worker: Mapped[str | None] = mapped_column(String(100), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Alias(Base):
    __tablename__ = "aliases"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LookupChange(Base):
    """One change that invalidates cached look-ups (a revoked key, a moved or deleted alias, a
    deleted model), appended in the same transaction as the change. Each gateway process reads
    the rows after the last one it saw every ``PARLEY_SERVING__LOOKUP_TTL`` seconds and forgets
    that tenant's cached keys or models (see ``bot_gateway.serving.lookup``)."""

    __tablename__ = "lookup_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # "keys" or "models"
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Bot(Base):
    """A bot: its current definition (``version`` counts every change; older ones are kept in
    ``bot_versions``), its NLU model, and its public web chat widget key."""

    __tablename__ = "bots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="ready")  # training, ready, failed
    status_message: Mapped[str | None] = mapped_column(Text, default=None)
    enabled: Mapped[bool] = mapped_column(default=True)
    nlu_model_id: Mapped[str | None] = mapped_column(String(100), default=None)
    widget_key: Mapped[str] = mapped_column(String(64), unique=True)
    unsupported: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BotVersion(Base):
    __tablename__ = "bot_versions"

    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    """One customer's conversation with a bot on one channel; ``state`` holds the tracker's
    slots and flow stack, so loading needs no event replay."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ux_conversations_sender", "bot_id", "channel", "sender_id", unique=True),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    sender_id: Mapped[str] = mapped_column(String(200))
    # bot, waiting_for_agent, with_agent (claimed), closed
    status: Mapped[str] = mapped_column(String(32), default="bot")
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    assigned_agent_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    handoff_reason: Mapped[str | None] = mapped_column(Text, default=None)
    waiting_since: Mapped[datetime | None] = mapped_column(default=None)
    # sha256 of the session token the web chat widget got when it opened this conversation
    widget_token_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ConversationEvent(Base):
    __tablename__ = "conversation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Upload(Base):
    """An image a customer sent a bot (web chat attachment), stored in artifact storage."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    blob_key: Mapped[str] = mapped_column(String(500))
    media_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # set for images an agent sends: the channel's provider fetches them without credentials
    public_token: Mapped[str | None] = mapped_column(String(64), default=None)


class Channel(Base):
    """A bot's connection to a messaging channel; ``config`` holds its secrets, which the API
    never returns."""

    __tablename__ = "channels"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the provider's webhook registration: {"status": "registered"|"failed"|..., "message": ...}
    registration: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class Agent(Base):
    """A user of a tenant who signs in (the Studio, the agents' console): role ``admin``,
    ``builder``, ``agent`` or ``supervisor``; the password is stored as a scrypt hash."""

    __tablename__ = "agents"
    __table_args__ = (Index("ux_agents_username", "tenant_id", "username", unique=True),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default="agent")
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)


class AgentSession(Base):
    __tablename__ = "agent_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class Invite(Base):
    """An admin's invitation of a new user: the link's token is stored hashed (sha256); the
    invite is pending until accepted (then ``accepted_at``) or past ``expires_at``."""

    __tablename__ = "invites"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(100))
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    accepted_at: Mapped[datetime | None] = mapped_column(default=None)


class UsageRecord(Base):
    """Metered usage of a tenant in one UTC hour: ``metric`` (``predictions``, ``ocr_pages``,
    ``train_seconds``, ``conversations``, ``messages``) split by ``dimension`` (a model and kind,
    a device, a channel; ``""`` when none), summed in ``value``."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ux_usage_records_key", "tenant_id", "hour", "metric", "dimension", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    hour: Mapped[datetime] = mapped_column()
    metric: Mapped[str] = mapped_column(String(64))
    dimension: Mapped[str] = mapped_column(String(200), default="")
    value: Mapped[float] = mapped_column(Float, default=0.0)


class AuditEntry(Base):
    """One write: who (``actor``: ``key:<id>``, ``user:<id>``, ``agent:<id>``, ``operator``)
    did what (``action``: method and route template) to which id, when, from which address."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_time", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(200))
    target_id: Mapped[str | None] = mapped_column(String(100), default=None)
    status: Mapped[int] = mapped_column(Integer)
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ImproveItem(Base):
    """The state of one item of a bot's improve inbox (a customer message, by its ``user``
    event): ``labelled`` (added to the NLU dataset as a feedback example with ``intent``) or
    ``dismissed``. Items without a row are open."""

    __tablename__ = "improve_items"

    event_id: Mapped[int] = mapped_column(
        ForeignKey("conversation_events.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # labelled, dismissed
    intent: Mapped[str | None] = mapped_column(String(200), default=None)
    dataset_id: Mapped[str | None] = mapped_column(String(32), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
