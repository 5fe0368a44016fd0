"""`ix_entries_visible` and `ix_entries_pages`: partial indexes of the visible entries and of
those with an article page, so that a build's counts and its page plan read indexes, not the
entries' rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

VISIBLE = "withdrawn_at IS NULL AND hidden IS NULL AND canonical_id IS NULL"
INDEXES = {
    "ix_entries_visible": (["id", "sort_date", "withdrawn_at", "hidden", "canonical_id"], VISIBLE),
    "ix_entries_pages": (
        ["uid", "version", "id", "link", "withdrawn_at", "hidden", "canonical_id"],
        f"link IS NULL AND {VISIBLE}",
    ),
}


def upgrade() -> None:
    existing = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("entries")}
    for name, (columns, where) in INDEXES.items():
        if name not in existing:
            op.create_index(name, "entries", columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="entries")
