"""The per-host budget fetch workers share: `host_slots`, one row per (host, slot) with the
worker holding it and until when.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table("host_slots"):
        op.create_table(
            "host_slots",
            sa.Column("host_key", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("holder", sa.String(200), nullable=True),
            sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        )


def downgrade() -> None:
    op.drop_table("host_slots")
