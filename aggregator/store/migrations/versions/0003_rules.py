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
    # Each piece only when missing, as the baseline does: a database stamped by no migration but
    # made by `create_all` from these models (as 0.1 and some tests do) has them already.
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("entries")}
    missing = [name for name in ("hidden", "dropped_terms") if name not in have]
    if missing:
        with op.batch_alter_table("entries") as batch:
            for name in missing:
                batch.add_column(sa.Column(name, sa.Text, nullable=True))
    if "page_cache" in inspector.get_table_names():
        return
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
