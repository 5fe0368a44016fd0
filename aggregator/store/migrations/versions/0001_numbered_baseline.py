"""The schema of aggregator 0.2, from an empty database or from one made by 0.1.

Version 0.1 had no numbered migrations: it ran `create_all` on every start, created the
article-page and archive tables on the first build, and dropped the tables and indexes of
earlier dedup indexes. This revision brings any of those databases to one schema without
touching a row: it creates each table and index that is missing (with the definitions as they
are at this revision, frozen here, not imported from the models), and drops the old index
tables. An empty database gets every table.

Revision ID: 0001
Revises:
Create Date: 2027-01-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Tables and indexes of versions before 0.1's dedup key index: nothing reads them any more.
LEGACY_TABLES = ("minhash_bands", "minhash_bands_recent", "band_levels", *(f"lsh_bands_{n}" for n in range(6)))
LEGACY_INDEXES = ("ix_entries_url_key", "ix_entries_fingerprint")


# Over 60 lines: the frozen schema, one table after another (see the docstring).
def _tables(m: sa.MetaData) -> None:
    """The schema at this revision. Types as the models declare them (UTCDateTime is
    DateTime(timezone=True), a digest BigInteger). Long on purpose: every table, frozen here
    one after another, is easier to check against the models than pieces of it."""
    when = sa.DateTime(timezone=True)
    sa.Table(
        "sources", m,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("etag", sa.Text), sa.Column("last_modified", sa.Text), sa.Column("last_fetch", when),
        sa.Column("last_status", sa.Integer), sa.Column("last_error", sa.Text),
        sa.Column("error_count", sa.Integer, nullable=False), sa.Column("next_due", when),
        sa.Column("disabled", sa.Text), sa.Column("moved_to", sa.Text),
        sa.Column("moved_count", sa.Integer, nullable=False),
        sa.Column("identity", sa.String(10), nullable=False), sa.Column("identity_reason", sa.Text),
        sa.Column("feed_flags", sa.Text), sa.Column("config_url", sa.Text),
    )
    entries = sa.Table(
        "entries", m,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("uid", sa.String(36), nullable=False, unique=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("link", sa.Text), sa.Column("author", sa.Text), sa.Column("tags", sa.Text),
        sa.Column("outlet", sa.Text), sa.Column("image", sa.Text), sa.Column("enclosure", sa.Text),
        sa.Column("summary", sa.Text, nullable=False), sa.Column("content", sa.Text, nullable=False),
        sa.Column("published", when), sa.Column("updated", when),
        sa.Column("first_seen", when, nullable=False), sa.Column("changed_at", when, nullable=False),
        sa.Column("sort_date", when, nullable=False),
        sa.Column("file_mtime_ns", sa.BigInteger), sa.Column("file_size", sa.BigInteger),
        sa.Column("withdrawn_at", when),
        sa.Column("canonical_id", sa.Integer, sa.ForeignKey("entries.id", ondelete="SET NULL")),
        sa.Column("dup_reason", sa.String(20)), sa.Column("dup_score", sa.Float),
        sa.Column("canonical_url", sa.Text), sa.Column("url_key", sa.BigInteger),
        sa.Column("fingerprint", sa.BigInteger),
        sa.Column("minhash", sa.LargeBinary), sa.Column("text_chars", sa.Integer),
        sa.Column("dedup_version", sa.String(32)),
        sa.Column("dedup_pending", sa.Boolean, nullable=False),
        sa.UniqueConstraint("source_id", "key"),
    )
    sa.Index("ix_entries_listing", entries.c.withdrawn_at, entries.c.canonical_id, entries.c.sort_date)
    sa.Index("ix_entries_canonical_id", entries.c.canonical_id)
    sa.Index("ix_entries_dedup_pending", entries.c.dedup_pending)
    sa.Index("ix_entries_dup_orphans", entries.c.canonical_id, entries.c.dup_reason)
    sa.Table(
        "categories", m,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("slug", sa.String(200), nullable=False, unique=True),
    )
    origins = sa.Table(
        "category_origins", m,
        sa.Column("category_id", sa.Integer, sa.ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", when, nullable=False),
    )
    sa.Index("ix_category_origins_source", origins.c.source_id, origins.c.created_at)
    for name in ("entry_categories", "dedup_categories"):
        t = sa.Table(
            name, m,
            sa.Column("entry_id", sa.Integer, sa.ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("category_id", sa.Integer, sa.ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True),
        )
        if name == "entry_categories":
            sa.Index("ix_entry_categories_category", t.c.category_id, t.c.entry_id)
    sa.Table(
        "dedup_state", m,
        sa.Column("name", sa.String(100), primary_key=True), sa.Column("value", sa.Text, nullable=False),
    )
    for n in range(6):
        sa.Table(
            f"dedup_keys_{n}", m,
            sa.Column("key", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("entry_id", sa.Integer, primary_key=True, autoincrement=False),
            sqlite_with_rowid=False,
        )
    sa.Table(
        "key_levels", m,
        sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("level", sa.Integer, nullable=False), sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("stamp", sa.BigInteger, nullable=False), sa.Column("bits", sa.LargeBinary),
    )
    sa.Table(
        "outputs", m,
        sa.Column("name", sa.String(200), primary_key=True), sa.Column("signature", sa.String(64), nullable=False),
    )
    sa.Table(
        "article_pages", m,
        sa.Column("uid", sa.String(36), primary_key=True), sa.Column("signature", sa.String(64), nullable=False),
    )
    archive = sa.Table(
        "archive_entries", m,
        sa.Column("feed", sa.String(200), primary_key=True),
        sa.Column("entry_id", sa.Integer, primary_key=True),
        sa.Column("page", sa.Integer, nullable=False), sa.Column("seq", sa.Integer, nullable=False),
    )
    sa.Index("ix_archive_entries_page", archive.c.feed, archive.c.page, archive.c.seq)
    sa.Table(
        "tombstones", m,
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(1000), primary_key=True),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("fingerprint", sa.BigInteger),
        sa.Column("pruned_at", when, nullable=False),
    )
    sa.Table(
        "daemon_state", m,
        sa.Column("name", sa.String(100), primary_key=True), sa.Column("value", sa.Text),
        sa.Column("holder", sa.String(200)), sa.Column("expires_at", when),
    )  # fmt: skip


def upgrade() -> None:
    bind = op.get_bind()
    m = sa.MetaData()
    _tables(m)
    present = set(sa.inspect(bind).get_table_names())
    for name in LEGACY_TABLES:
        if name in present:
            op.drop_table(name)
    # In dependency order, so foreign keys find their tables; a table 0.1 already made stays
    # as it is, rows and all.
    for table in m.sorted_tables:
        if table.name not in present:
            table.create(bind)
    indexes = {t: {i["name"] for i in sa.inspect(bind).get_indexes(t)} for t in present if t in m.tables}
    for name in LEGACY_INDEXES:
        if name in indexes.get("entries", set()):
            op.drop_index(name, table_name="entries")
    for table in m.sorted_tables:
        if table.name in present:
            for index in table.indexes:
                if index.name not in indexes[table.name]:
                    index.create(bind)


def downgrade() -> None:
    # 0.1 creates what it needs on start and ignores nothing it finds: its schema is this one.
    pass
