"""Fetch workers: a source's lease (who is fetching it, until when), two new nullable columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added only when missing, as the earlier migrations create only what is missing: a database
    # stamped at an older revision may already have the models' columns.
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("sources")}
    with op.batch_alter_table("sources") as batch:
        if "lease_holder" not in have:
            batch.add_column(sa.Column("lease_holder", sa.String(200), nullable=True))
        if "lease_expires" not in have:
            batch.add_column(sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("lease_expires")
        batch.drop_column("lease_holder")
