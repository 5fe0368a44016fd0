"""`ix_entries_stamps`: a source's stamps (key, file size and mtime, version, withdrawn, id)
read from an index alone, not from the entries' rows, which hold their content.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ["source_id", "key", "file_mtime_ns", "file_size", "version", "withdrawn_at", "id"]


def upgrade() -> None:
    existing = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("entries")}
    if "ix_entries_stamps" not in existing:
        op.create_index("ix_entries_stamps", "entries", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_entries_stamps", table_name="entries")
