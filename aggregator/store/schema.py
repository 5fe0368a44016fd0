"""Every table of the database, in one place: the schema `db upgrade` brings a database to.

A change here is a change of schema: it needs a migration in `migrations/versions/` (and
`SCHEMA_REVISION` moved to it), or an existing database and a new one would differ.
The last migration's tests compare a database made by the migrations with one made from
these models (`create_all`), so they cannot drift apart unnoticed.
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
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The Alembic revision the models describe: a database at another one is upgraded first.
SCHEMA_REVISION = "0005"


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


class Base(DeclarativeBase):
    pass


metadata = Base.metadata


# ---- sources, entries, categories


class SourceRow(Base):
    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(10))  # "files" or "feed"
    location: Mapped[str] = mapped_column(Text)  # folder, or the feed URL currently in use
    # Remote-feed bookkeeping; unused for article folders.
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    last_fetch: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    next_due: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled: Mapped[str | None] = mapped_column(Text)  # why it is no longer fetched
    moved_to: Mapped[str | None] = mapped_column(Text)  # permanent-redirect target being confirmed
    moved_count: Mapped[int] = mapped_column(Integer, default=0)
    identity: Mapped[str] = mapped_column(String(10), default="guid")  # "guid" or "link"
    identity_reason: Mapped[str | None] = mapped_column(Text)
    feed_flags: Mapped[str | None] = mapped_column(Text)  # e.g. feedparser's bozo message
    # the URL as configured; `location` may differ after a permanent redirect
    config_url: Mapped[str | None] = mapped_column(Text)
    # A fetch worker's claim (`leases`): who is fetching the source and until when; another
    # worker takes it over once the expiry has passed.
    lease_holder: Mapped[str | None] = mapped_column(String(200))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EntryRow(Base):
    __tablename__ = "entries"
    __table_args__ = (
        UniqueConstraint("source_id", "key"),
        Index("ix_entries_listing", "withdrawn_at", "canonical_id", "sort_date"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Text)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    version: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(Text)  # JSON list
    tags: Mapped[str | None] = mapped_column(Text)  # JSON list
    outlet: Mapped[str | None] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(Text)
    enclosure: Mapped[str | None] = mapped_column(Text)  # JSON {url, type, length}
    summary: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    published: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)  # last time its content changed
    sort_date: Mapped[datetime] = mapped_column(UTCDateTime)
    file_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Deduplication: NULL canonical_id means "this entry is the one readers see".
    canonical_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id", ondelete="SET NULL"), index=True)
    dup_reason: Mapped[str | None] = mapped_column(String(20))
    dup_score: Mapped[float | None] = mapped_column(Float)
    # features computed once per entry version (`aggregator.features`)
    canonical_url: Mapped[str | None] = mapped_column(Text)
    # Looked up through the dedup key index (`keyindex`), not an index of their own.
    url_key: Mapped[int | None] = mapped_column(Digest)  # of canonical_url
    fingerprint: Mapped[int | None] = mapped_column(Digest)  # of the normalized text
    minhash: Mapped[bytes | None] = mapped_column(LargeBinary)  # MinHash signature, little-endian u32s
    text_chars: Mapped[int | None] = mapped_column(Integer)  # length of the normalized body text
    dedup_version: Mapped[str | None] = mapped_column(String(32))  # the `version` these features describe
    # Set on every insert, content change and withdrawal; cleared once dedup has looked at the entry,
    # so an interrupted run (or `aggregator ingest` alone) is caught up by the next one.
    dedup_pending: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    # Republishing rules: why a block or keep rule hides the entry (NULL: shown); kept apart from
    # its content so that changing the rules needs no refetch (`aggregator.hiding`).
    hidden: Mapped[str | None] = mapped_column(Text)
    # The feed's own category terms `feed_categories = "map"` did not publish (JSON list).
    dropped_terms: Mapped[str | None] = mapped_column(Text)


# Members whose canonical entry was deleted (ON DELETE SET NULL) keep their dup_reason: this
# index finds them so the next dedup run can re-cluster them.
Index("ix_entries_dup_orphans", EntryRow.canonical_id, EntryRow.dup_reason)


class CategoryRow(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)


class CategoryOriginRow(Base):
    """Which source's entry first brought a category in, and when: a source may create only so
    many categories a day (`[limits] new_categories_per_day`). Categories older than the table
    have no row."""

    __tablename__ = "category_origins"
    __table_args__ = (Index("ix_category_origins_source", "source_id", "created_at"),)

    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EntryCategoryRow(Base):
    __tablename__ = "entry_categories"
    __table_args__ = (Index("ix_entry_categories_category", "category_id", "entry_id"),)

    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True)


# ---- dedup


class DedupStateRow(Base):
    """Small key/value memory of the dedup stage (e.g. the settings digest it last ran with)."""

    __tablename__ = "dedup_state"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DedupCategoryRow(Base):
    """Categories a canonical entry carries in `entry_categories` only because a hidden
    duplicate of it does: a story filed elsewhere by another source still reaches that
    category's feed. Remembered so they can be taken back when the cluster changes."""

    __tablename__ = "dedup_categories"

    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True)


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


class OutputRow(Base):
    """What each published feed was last built from, so an unchanged one is not rebuilt."""

    __tablename__ = "outputs"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    signature: Mapped[str] = mapped_column(String(64))


class PageRow(Base):
    """What each article page was last rendered from."""

    __tablename__ = "article_pages"

    uid: Mapped[str] = mapped_column(String(36), primary_key=True)
    signature: Mapped[str] = mapped_column(String(64))


class ArchiveEntryRow(Base):
    """Which archive page of which feed an entry was put in. No foreign key on purpose: an
    entry pruned later must not shift the pages already published."""

    __tablename__ = "archive_entries"
    __table_args__ = (Index("ix_archive_entries_page", "feed", "page", "seq"),)

    feed: Mapped[str] = mapped_column(String(200), primary_key=True)
    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    page: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)  # order of archiving within the feed


# ---- retention tombstones, daemon state and the writer lease


class TombstoneRow(Base):
    """An entry pruned by retention: its identity and fingerprint stay, so a remote feed that
    still carries it does not bring it back."""

    __tablename__ = "tombstones"

    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(1000), primary_key=True)
    uid: Mapped[str] = mapped_column(String(36))
    fingerprint: Mapped[int | None] = mapped_column(Digest)
    pruned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DaemonStateRow(Base):
    """Small named records of the daemon: its last cycle (for `aggregator status`) and, on a
    server database, the writer lease (holder + expiry)."""

    __tablename__ = "daemon_state"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    holder: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class HostSlotRow(Base):
    """A slot of the per-host budget fetch workers share (`hostslots`): held by a worker while
    its request to the host is in flight, or until `expires` if the worker dies."""

    __tablename__ = "host_slots"

    host_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(200))
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DiscoveredFeedRow(Base):
    """A remote source whose configured URL is a web page: the feed found on it (the source's
    `location` is then the feed), so the page is fetched again only when the feed goes away."""

    __tablename__ = "discovered_feeds"

    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    page: Mapped[str] = mapped_column(Text)
    feed: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PageCacheRow(Base):
    """The article pages of `full_text` sources, by URL: each is fetched once (a failure that may
    pass is tried again later, conditionally), and its extracted article kept for every later
    parse of the feed that still carries the teaser (`aggregator.fulltext`)."""

    __tablename__ = "page_cache"

    url_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the URL
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[int | None] = mapped_column(Integer)  # HTTP status of the last fetch
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str | None] = mapped_column(Text)  # the extracted article, sanitized; NULL: none
    error: Mapped[str | None] = mapped_column(Text)  # why there is none
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed fetches in a row
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # NULL: never fetched again
