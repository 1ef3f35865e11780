"""tenant quotas and rate-limit overrides, usage records, the audit log, channel registration
state, web chat session tokens

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("quotas", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("rate_limits", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("registration", sa.JSON(), nullable=True))
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("widget_token_hash", sa.String(64), nullable=True))
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(32), nullable=False),
        sa.Column("hour", TZ, nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("dimension", sa.String(200), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
    )
    op.create_index(
        "ux_usage_records_key",
        "usage_records",
        ["tenant_id", "hour", "metric", "dimension"],
        unique=True,
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(32), nullable=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("target_id", sa.String(100), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_audit_log_tenant_time", "audit_log", ["tenant_id", "created_at"])
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_index("ix_audit_log_tenant_time", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ux_usage_records_key", table_name="usage_records")
    op.drop_table("usage_records")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("widget_token_hash")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("registration")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("rate_limits")
        batch.drop_column("quotas")
