"""lookup changes: the log gateway processes poll to invalidate cached keys and models

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 09:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lookup_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_lookup_changes_created_at", "lookup_changes", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_lookup_changes_created_at", table_name="lookup_changes")
    op.drop_table("lookup_changes")
