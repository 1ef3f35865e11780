"""channels: a bot's connections to messaging channels

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 13:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id", sa.String(32), sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
        ),
        sa.Column(
            "bot_id", sa.String(32), sa.ForeignKey("bots.id", ondelete="CASCADE"), index=True
        ),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("channels")
