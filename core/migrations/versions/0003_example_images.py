"""examples: image size, file name and source (import, api, feedback)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("examples") as batch:
        batch.add_column(sa.Column("width", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("height", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("file", sa.String(length=500), nullable=True))
        batch.add_column(
            sa.Column("source", sa.String(length=16), nullable=False, server_default="import")
        )


def downgrade() -> None:
    with op.batch_alter_table("examples") as batch:
        batch.drop_column("source")
        batch.drop_column("file")
        batch.drop_column("height")
        batch.drop_column("width")
