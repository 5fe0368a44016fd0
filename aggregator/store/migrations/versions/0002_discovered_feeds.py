"""Feed discovery: the feed found on a source's page (`discovered_feeds`), a new table only.

Revision ID: 0002
Revises: 0001
Create Date: 2027-01-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Created only when missing, as the baseline does: a database that went through 0.1's
    # `create_all` with this table's model already has it (and nothing else to change).
    if "discovered_feeds" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "discovered_feeds",
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("page", sa.Text, nullable=False),
        sa.Column("feed", sa.Text, nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("discovered_feeds")
