"""Every table of the database, in one place: the schema `db upgrade` brings a database to.

A change here is a change of schema: it needs a migration in `migrations/versions/` (and
`SCHEMA_REVISION` moved to it), or an existing database and a new one would differ.
The last migration's tests compare a database made by the migrations with one made from
these tables (`create_all`), so they cannot drift apart unnoticed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Connection

# The Alembic revision these tables describe: a database at another one is upgraded first.
SCHEMA_REVISION = "0007"


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect):
        """On SQLite, the text SQLAlchemy would store ("2024-05-01 08:00:00.000000", UTC), made in
        one step: this type's conversion followed by SQLAlchemy's formatting was a sixth of the
        cost of storing a feed's entries (six datetimes each)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the store")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process


class Digest(TypeDecorator):
    """A 64-bit digest (`features.url_key`, `features.fingerprint`), read back as an int on every backend.

    A SQLite database created before these were integers has text columns, which store the
    numbers as decimal text: they are read back as numbers too, so a stored digest still equals
    a new one. (Older hex digests are not numbers: None, and the next dedup run recomputes them,
    as it does for every entry after such an upgrade.)"""

    impl = BigInteger
    cache_ok = True

    def process_result_value(self, value: int | str | None, dialect) -> int | None:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                return None
        return value


metadata = MetaData()


# ---- sources, entries, categories


SOURCES = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), unique=True, nullable=False),
    Column("kind", String(10), nullable=False),  # "files" or "feed"
    Column("location", Text, nullable=False),  # folder, or the feed URL currently in use
    # Remote-feed bookkeeping; unused for article folders.
    Column("etag", Text),
    Column("last_modified", Text),
    Column("last_fetch", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("error_count", Integer, default=0, nullable=False),
    Column("next_due", UTCDateTime),
    Column("disabled", Text),  # why it is no longer fetched
    Column("moved_to", Text),  # permanent-redirect target being confirmed
    Column("moved_count", Integer, default=0, nullable=False),
    Column("identity", String(10), default="guid", nullable=False),  # "guid" or "link"
    Column("identity_reason", Text),
    Column("feed_flags", Text),  # e.g. feedparser's bozo message
    # the URL as configured; `location` may differ after a permanent redirect
    Column("config_url", Text),
    # A fetch worker's claim (`leases`): who is fetching the source and until when; another
    # worker takes it over once the expiry has passed.
    Column("lease_holder", String(200)),
    Column("lease_expires", UTCDateTime),
)


ENTRIES = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("key", Text, nullable=False),
    Column("uid", String(36), unique=True, nullable=False),
    Column("version", String(32), nullable=False),
    Column("title", Text, nullable=False),
    Column("link", Text),
    Column("author", Text),  # JSON list
    Column("tags", Text),  # JSON list
    Column("outlet", Text),
    Column("image", Text),
    Column("enclosure", Text),  # JSON {url, type, length}
    Column("summary", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("published", UTCDateTime),
    Column("updated", UTCDateTime),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),  # last time its content changed
    Column("sort_date", UTCDateTime, nullable=False),
    Column("file_mtime_ns", BigInteger),
    Column("file_size", BigInteger),
    Column("withdrawn_at", UTCDateTime),
    # Deduplication: NULL canonical_id means "this entry is the one readers see".
    Column("canonical_id", ForeignKey("entries.id", ondelete="SET NULL"), index=True),
    Column("dup_reason", String(20)),
    Column("dup_score", Float),
    # features computed once per entry version (`aggregator.features`)
    Column("canonical_url", Text),
    # Looked up through the dedup key index (`keyindex`), not an index of their own.
    Column("url_key", Digest),  # of canonical_url
    Column("fingerprint", Digest),  # of the normalized text
    Column("minhash", LargeBinary),  # MinHash signature, little-endian u32s
    Column("text_chars", Integer),  # length of the normalized body text
    Column("dedup_version", String(32)),  # the `version` these features describe
    # Set on every insert, content change and withdrawal; cleared once dedup has looked at the entry,
    # so an interrupted run (or `aggregator ingest` alone) is caught up by the next one.
    Column("dedup_pending", Boolean, default=True, index=True, nullable=False),
    # Republishing rules: why a block or keep rule hides the entry (NULL: shown); kept apart from
    # its content so that changing the rules needs no refetch (`aggregator.hiding`).
    Column("hidden", Text),
    # The feed's own category terms `feed_categories = "map"` did not publish (JSON list).
    Column("dropped_terms", Text),
    UniqueConstraint("source_id", "key"),
    Index("ix_entries_listing", "withdrawn_at", "canonical_id", "sort_date"),
)


# Members whose canonical entry was deleted (ON DELETE SET NULL) keep their dup_reason: this
# index finds them so the next dedup run can re-cluster them.
Index("ix_entries_dup_orphans", ENTRIES.c.canonical_id, ENTRIES.c.dup_reason)
# Every scan and fetch reads a source's stamps (`EntryStore.stamps`): from this index alone, not
# from the table's rows, which hold the content (a no-change scan of 20,000 files: 0.37 → 0.29 s,
# and it no longer fills the page cache with entry pages). The id is in every SQLite index.
Index(
    "ix_entries_stamps",
    ENTRIES.c.source_id,
    ENTRIES.c.key,
    ENTRIES.c.file_mtime_ns,
    ENTRIES.c.file_size,
    ENTRIES.c.version,
    ENTRIES.c.withdrawn_at,
    ENTRIES.c.id,
)

# The visible entries (`entries.VISIBLE`), read from an index alone: counting them and each
# category's share no longer reads every entry's row, which holds its content (a build's
# counts over 100,000 entries: 0.8 → 0.1 s). Partial: an entry leaves it when it is
# withdrawn, hidden or found a duplicate. The NULL columns make it covering.
VISIBLE_CONDITION = "withdrawn_at IS NULL AND hidden IS NULL AND canonical_id IS NULL"
Index(
    "ix_entries_visible",
    ENTRIES.c.id,
    ENTRIES.c.sort_date,
    ENTRIES.c.withdrawn_at,
    ENTRIES.c.hidden,
    ENTRIES.c.canonical_id,
    sqlite_where=text(VISIBLE_CONDITION),  # PostgreSQL's: `create_schema`
)
# The visible entries with no original URL, which get an article page (`publish.pages`), by
# uid: a build plans their pages a few thousand at a time in uid order without reading rows.
PAGES_CONDITION = f"link IS NULL AND {VISIBLE_CONDITION}"
Index(
    "ix_entries_pages",
    ENTRIES.c.uid,
    ENTRIES.c.version,
    ENTRIES.c.id,
    ENTRIES.c.link,
    ENTRIES.c.withdrawn_at,
    ENTRIES.c.hidden,
    ENTRIES.c.canonical_id,
    sqlite_where=text(PAGES_CONDITION),  # PostgreSQL's: `create_schema`
)
PARTIAL_INDEXES = {"ix_entries_visible": VISIBLE_CONDITION, "ix_entries_pages": PAGES_CONDITION}


def create_schema(c: Connection) -> None:
    """Every table and index, in an empty database. The partial indexes get their PostgreSQL
    condition here, not in `Index(...)`: naming a dialect's option there imports that dialect,
    which cost every SQLite command ~30 ms of start-up."""
    if c.dialect.name == "postgresql":
        for index in ENTRIES.indexes:
            if index.name in PARTIAL_INDEXES:
                index.dialect_kwargs["postgresql_where"] = text(PARTIAL_INDEXES[index.name])
    metadata.create_all(c)


CATEGORIES = Table(
    "categories",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, unique=True, nullable=False),
    Column("slug", String(200), unique=True, nullable=False),
)


# Which source's entry first brought a category in, and when: a source may create only so
# many categories a day (`[limits] new_categories_per_day`). Categories older than the table
# have no row.
CATEGORY_ORIGINS = Table(
    "category_origins",
    metadata,
    Column("category_id", ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True),
    Column("source_id", ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_category_origins_source", "source_id", "created_at"),
)


ENTRY_CATEGORIES = Table(
    "entry_categories",
    metadata,
    Column("entry_id", ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
    Column("category_id", ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_entry_categories_category", "category_id", "entry_id"),
)


# ---- dedup


# Small key/value memory of the dedup stage (e.g. the settings digest it last ran with).
DEDUP_STATE = Table(
    "dedup_state",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)


# Categories a canonical entry carries in `entry_categories` only because a hidden
# duplicate of it does: a story filed elsewhere by another source still reaches that
# category's feed. Remembered so they can be taken back when the cluster changes.
DEDUP_CATEGORIES = Table(
    "dedup_categories",
    metadata,
    Column("entry_id", ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
    Column("category_id", ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True),
)


KEY_SLOTS = 6  # tables of the dedup key index; the last level has no limit (see keyindex.py)
KEY_TABLES = tuple(
    Table(
        f"dedup_keys_{n}",
        metadata,
        Column("key", BigInteger, primary_key=True, autoincrement=False),
        Column("entry_id", Integer, primary_key=True, autoincrement=False),
        sqlite_with_rowid=False,  # the primary key's B-tree is the table: lookup and rows in one
    )
    for n in range(KEY_SLOTS)
)
KEY_LEVELS = Table(
    "key_levels",
    metadata,
    Column("slot", Integer, primary_key=True, autoincrement=False),  # KEY_TABLES[slot]
    Column("level", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),  # keys stored, at most (deletes are not counted)
    Column("stamp", BigInteger, nullable=False),  # changes with `bits`: what a cached filter is checked against
    Column("bits", LargeBinary),  # Bloom filter, 64-bit little-endian words; NULL on level 0 and empty levels
)


# ---- publishing


# What each published feed was last built from, so an unchanged one is not rebuilt.
OUTPUTS = Table(
    "outputs",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("signature", String(64), nullable=False),
)


# What each article page was last rendered from.
ARTICLE_PAGES = Table(
    "article_pages",
    metadata,
    Column("uid", String(36), primary_key=True),
    Column("signature", String(64), nullable=False),
)


# Which archive page of which feed an entry was put in. No foreign key on purpose: an
# entry pruned later must not shift the pages already published.
ARCHIVE_ENTRIES = Table(
    "archive_entries",
    metadata,
    Column("feed", String(200), primary_key=True),
    Column("entry_id", Integer, primary_key=True),
    Column("page", Integer, nullable=False),
    Column("seq", Integer, nullable=False),  # order of archiving within the feed
    Index("ix_archive_entries_page", "feed", "page", "seq"),
)


# ---- retention tombstones, daemon state and the writer lease


# An entry pruned by retention: its identity and fingerprint stay, so a remote feed that
# still carries it does not bring it back.
TOMBSTONES = Table(
    "tombstones",
    metadata,
    Column("source_id", ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(1000), primary_key=True),
    Column("uid", String(36), nullable=False),
    Column("fingerprint", Digest),
    Column("pruned_at", UTCDateTime, nullable=False),
)


# Small named records of the daemon: its last cycle (for `aggregator status`) and, on a
# server database, the writer lease (holder + expiry).
DAEMON_STATE = Table(
    "daemon_state",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text),
    Column("holder", String(200)),
    Column("expires_at", UTCDateTime),
)


# A slot of the per-host budget fetch workers share (`hostslots`): held by a worker while
# its request to the host is in flight, or until `expires` if the worker dies.
HOST_SLOTS = Table(
    "host_slots",
    metadata,
    Column("host_key", Integer, primary_key=True, autoincrement=False),
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("holder", String(200)),
    Column("expires", UTCDateTime),
)


# A remote source whose configured URL is a web page: the feed found on it (the source's
# `location` is then the feed), so the page is fetched again only when the feed goes away.
DISCOVERED_FEEDS = Table(
    "discovered_feeds",
    metadata,
    Column("source_id", ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("page", Text, nullable=False),
    Column("feed", Text, nullable=False),
    Column("found_at", UTCDateTime, nullable=False),
)


# The article pages of `full_text` sources, by URL: each is fetched once (a failure that may
# pass is tried again later, conditionally), and its extracted article kept for every later
# parse of the feed that still carries the teaser (`aggregator.fulltext`).
PAGE_CACHE = Table(
    "page_cache",
    metadata,
    Column("url_key", String(64), primary_key=True),  # sha256 of the URL
    Column("url", Text, nullable=False),
    Column("status", Integer),  # HTTP status of the last fetch
    Column("etag", Text),
    Column("last_modified", Text),
    Column("content", Text),  # the extracted article, sanitized; NULL: none
    Column("error", Text),  # why there is none
    Column("attempts", Integer, default=0, nullable=False),  # failed fetches in a row
    Column("fetched_at", UTCDateTime, nullable=False),
    Column("retry_at", UTCDateTime),  # NULL: never fetched again
)
