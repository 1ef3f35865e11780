"""agents, their sessions, who holds a handed-off conversation, public links of agents' images

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id", sa.String(32), sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
        ),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("disabled_at", TZ, nullable=True),
    )
    op.create_index("ux_agents_username", "agents", ["tenant_id", "username"], unique=True)
    op.create_table(
        "agent_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "agent_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), index=True
        ),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
    )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("assigned_agent_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("handoff_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("waiting_since", TZ, nullable=True))
        batch.create_index("ix_conversations_assigned_agent_id", ["assigned_agent_id"])
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("public_token", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("public_token")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_assigned_agent_id")
        batch.drop_column("waiting_since")
        batch.drop_column("handoff_reason")
        batch.drop_column("assigned_agent_id")
    op.drop_table("agent_sessions")
    op.drop_index("ux_agents_username", table_name="agents")
    op.drop_table("agents")
