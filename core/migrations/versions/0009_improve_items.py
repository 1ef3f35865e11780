"""the improve inbox: the state of each item (a customer message the bot did not understand,
was unsure of, or a person took over), labelled or dismissed; open items have no row

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 20:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "improve_items",
        sa.Column(
            "event_id",
            sa.Integer(),
            sa.ForeignKey("conversation_events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "tenant_id",
            sa.String(32),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "bot_id",
            sa.String(32),
            sa.ForeignKey("bots.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("intent", sa.String(200), nullable=True),
        sa.Column("dataset_id", sa.String(32), nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("improve_items")
