"""Republishing rules: entries hidden by a block or keep rule (`entries.hidden`), the feed terms
`feed_categories = "map"` dropped (`entries.dropped_terms`), and the article pages of full-text
sources (`page_cache`).

Revision ID: 0003
Revises: 0002
Create Date: 2027-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.add_column(sa.Column("hidden", sa.Text, nullable=True))
        batch.add_column(sa.Column("dropped_terms", sa.Text, nullable=True))
    op.create_table(
        "page_cache",
        sa.Column("url_key", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("etag", sa.Text, nullable=True),
        sa.Column("last_modified", sa.Text, nullable=True),
        sa.Column("content", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("page_cache")
    with op.batch_alter_table("entries") as batch:
        batch.drop_column("dropped_terms")
        batch.drop_column("hidden")
