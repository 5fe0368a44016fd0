"""The database: SQLAlchemy 2.x models and every query the pipeline runs.

SQLite (WAL mode) is the embedded default, PostgreSQL the server option. All SQL here is
portable; the only dialect-specific statements live in `_on_connect`.

Entries are never duplicated by re-runs: (source, key) is unique and every write is an
upsert decided in Python from one bulk read. Writes go in batches, one transaction each,
so an interrupted run leaves the previous state or the new one, never half of an entry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from . import keyindex
from .lsh import index_keys
from .model import Entry
from .text import slugify

# Identity namespace for entry ids; never change it or every published id changes.
_UID_NAMESPACE = uuid.UUID("6f1d3a52-3c4e-4f0b-9a57-0b6f3f7f1c2e")
RESERVED_SLUGS = frozenset({"all", "a", "archive", "static", "index"})
FUTURE_TOLERANCE = timedelta(hours=1)
BATCH = 500


def entry_uid(source: str, key: str) -> str:
    """The public, permanent id of an entry: a UUID derived from its source and key."""
    return str(uuid.uuid5(_UID_NAMESPACE, f"{source}\x00{key}"))


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
    """A 64-bit digest (`dedup.url_key`, `dedup.fingerprint`), read back as an int on every backend.

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
    metadata = keyindex.metadata  # the dedup key index's tables are part of the schema


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
    # features computed once per entry version by aggregator/dedup.py
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


class CategoryRow(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)


class CategoryOriginRow(Base):
    """Which source's entry first brought a category in, and when: a source may create only so
    many categories a day (`[limits] new_categories_per_day`). A table of its own, so a database
    made before it needs no column added; categories older than it have no row."""

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


def delete_keys(c, entry_ids: Sequence[int]) -> None:
    """Drop the dedup index keys of these entries: call it before their stored features change
    or go, since the keys are recomputed from them (the index has no lookup by entry)."""
    e = EntryRow.__table__
    rows = []
    for i in range(0, len(entry_ids), BATCH):
        q = select(e.c.id, e.c.url_key, e.c.fingerprint, e.c.minhash).where(e.c.id.in_(entry_ids[i : i + BATCH]))
        rows += [(k, i) for i, uk, fp, sig in c.execute(q) for k in index_keys(uk, fp, sig)]
    keyindex.delete(c, rows)


class DedupCategoryRow(Base):
    """Categories a canonical entry carries in `entry_categories` only because a hidden
    duplicate of it does: a story filed elsewhere by another source still reaches that
    category's feed. Remembered so they can be taken back when the cluster changes."""

    __tablename__ = "dedup_categories"

    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True)


# Members whose canonical entry was deleted (ON DELETE SET NULL) keep their dup_reason: this
# index finds them so the next dedup run can re-cluster them.
Index("ix_entries_dup_orphans", EntryRow.canonical_id, EntryRow.dup_reason)


class OutputRow(Base):
    """What each published feed was last built from, so an unchanged one is not rebuilt."""

    __tablename__ = "outputs"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    signature: Mapped[str] = mapped_column(String(64))


# ---- daemon: retention tombstones, daemon state and the writer lease


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


class DiscoveredFeedRow(Base):
    """A remote source whose configured URL is a web page: the feed found on it (the source's
    `location` is then the feed), so the page is fetched again only when the feed goes away."""

    __tablename__ = "discovered_feeds"

    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    page: Mapped[str] = mapped_column(Text)
    feed: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(UTCDateTime)


ALERTS = "alerts"  # the daemon_state record of open alerts and when each source started failing


# What publishing reads of an entry (everything but bookkeeping and dedup features).
_PUBLISHED_COLUMNS = (
    "id", "source_id", "uid", "version", "title", "link", "author", "tags", "outlet", "image", "enclosure",
    "summary", "content", "published", "updated", "first_seen", "withdrawn_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CategoryRef:
    id: int
    name: str
    slug: str


@dataclass(frozen=True, slots=True)
class StoredStamp:
    id: int
    mtime_ns: int | None
    size: int | None
    version: str
    withdrawn: bool


@dataclass(slots=True)
class SaveResult:
    new: int = 0
    updated: int = 0
    unchanged: int = 0


def _on_connect(engine: Engine, cache_mb: int = 64) -> None:
    """The one place for dialect-specific statements."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # 64 MB of page cache instead of SQLite's 2 MB default: the entry and LSH indexes are
        # random-keyed B-trees, and a cold ingest otherwise re-reads their pages constantly.
        cur.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()


# ---- daemon


def maintenance_statements(dialect: str) -> list[str]:
    """Periodic upkeep, per dialect: SQLite refreshes its planner statistics (freed pages are
    reused, so the file stops growing once retention keeps the row count steady); PostgreSQL's
    autovacuum already does the equivalent."""
    return ["PRAGMA optimize"] if dialect == "sqlite" else []


def database_size(engine: Engine) -> int | None:
    """Bytes the database occupies: the file (with its WAL) for SQLite, pg_database_size otherwise."""
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        if not db or db == ":memory:":
            return None
        return sum(Path(db + suffix).stat().st_size for suffix in ("", "-wal") if Path(db + suffix).exists())
    if engine.dialect.name == "postgresql":
        with engine.connect() as c:
            return c.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
    return None


def _json(items: Sequence[str]) -> str | None:
    return json.dumps(list(items), ensure_ascii=False) if items else None


def _enclosure_json(e: Entry) -> str | None:
    x = e.enclosure
    return json.dumps({"url": x.url, "type": x.type, "length": x.length}) if x else None


def loads_list(value: str | None) -> list[str]:
    return json.loads(value) if value else []


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# Indexes of earlier versions: the URL and text digests are looked up through the dedup key
# index since 2026-12-04, and an index of random digests made every new entry write a random page.
_LEGACY_INDEXES = ("ix_entries_url_key", "ix_entries_fingerprint")


class Store:
    """A database holding sources, entries, categories and publishing state."""

    def __init__(self, url: str, cache_mb: int = 64):
        """`cache_mb`: SQLite's page cache per connection (a reader that only fetches rows by id needs little)."""
        u = make_url(url)
        if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url)
        _on_connect(self.engine, cache_mb)
        Base.metadata.create_all(self.engine)
        with self.engine.begin() as c:
            keyindex.drop_legacy(c)
            for name in _LEGACY_INDEXES:
                c.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------ sources

    def source_id(self, name: str, kind: str, location: str) -> int:
        with self.session() as s, s.begin():
            row = s.scalar(select(SourceRow).where(SourceRow.name == name))
            if row is None:
                row = SourceRow(name=name, kind=kind, location=location, error_count=0, moved_count=0)
                s.add(row)
                s.flush()
            elif row.kind != kind or (kind == "files" and row.location != location):
                row.kind, row.location = kind, location
            return row.id

    # ------------------------------------------------------------ entries

    def stamps(self, source_id: int) -> dict[str, StoredStamp]:
        """Every stored entry of a source by key, with what a re-scan compares against."""
        q = select(
            EntryRow.key,
            EntryRow.id,
            EntryRow.file_mtime_ns,
            EntryRow.file_size,
            EntryRow.version,
            EntryRow.withdrawn_at,
        ).where(EntryRow.source_id == source_id)
        with self.engine.connect() as c:
            return {k: StoredStamp(i, m, sz, v, w is not None) for k, i, m, sz, v, w in c.execute(q)}

    def save_entries(
        self, source_id: int, entries: Sequence[Entry], known: dict[str, StoredStamp], now: datetime
    ) -> tuple[SaveResult, list[int]]:
        """Insert new entries and update changed ones, in one transaction.

        Returns the counts and the ids of entries whose content is new or changed
        (what the dedup stage must look at)."""
        result = SaveResult()
        touched: list[int] = []
        if not entries:
            return result, touched
        with self.session() as s, s.begin():
            entries = _without_tombstoned(s, source_id, entries, known)  # pruned stays pruned
            cat_ids = self._category_ids(s, {c for e in entries for c in e.categories}, source_id, now)
            inserts: list[dict] = []
            inserted_cats: list[tuple[str, Sequence[str]]] = []
            inserted_keys: list[tuple[str, tuple[int, ...]]] = []
            keys: list[tuple[int, int]] = []  # (index key, entry id) of features computed by the parse
            touches: list[dict] = []
            for e in entries:
                version = e.version()
                old = known.get(e.key)
                stamp = e.stamp
                row = {
                    "version": version,
                    "title": e.title,
                    "link": e.link,
                    "author": _json(e.authors),
                    "tags": _json(e.tags),
                    "outlet": e.outlet,
                    "image": e.image,
                    "enclosure": _enclosure_json(e),
                    "summary": e.summary,
                    "content": e.content_html,
                    "published": e.published,
                    "updated": e.updated,
                    "file_mtime_ns": stamp.mtime_ns if stamp else None,
                    "file_size": stamp.size if stamp else None,
                    "withdrawn_at": None,
                    "dedup_pending": True,  # look at it again
                }
                if e.features is not None:
                    f = e.features
                    row |= {
                        "canonical_url": f.canonical_url,
                        "url_key": f.url_key,
                        "fingerprint": f.fingerprint,
                        "text_chars": f.text_chars,
                        "minhash": f.signature,
                        "dedup_version": version,
                    }
                if old is None:
                    published = e.published or now
                    row |= {
                        "source_id": source_id,
                        "key": e.key,
                        "uid": entry_uid(e.source, e.key),
                        "first_seen": now,
                        "changed_at": now,
                        "sort_date": now if published > now + FUTURE_TOLERANCE else published,
                    }
                    inserts.append(row)
                    inserted_cats.append((e.key, e.categories))
                    if e.features is not None:
                        inserted_keys.append((e.key, e.features.keys))
                    result.new += 1
                elif old.version == version and not old.withdrawn:
                    result.unchanged += 1
                    if stamp and (stamp.mtime_ns, stamp.size) != (old.mtime_ns, old.size):
                        touches.append({"b_id": old.id, "m": stamp.mtime_ns, "s": stamp.size})
                else:
                    row["changed_at"] = now
                    # an entry without a date, or dated in the future, keeps the
                    # place its first-seen time gave it; an edit must not pin it to the top.
                    if e.published is not None and e.published <= now + FUTURE_TOLERANCE:
                        row["sort_date"] = e.published
                    if e.updated is None and old.version != version:
                        # The file changed but says nothing about when: the change is news
                        # (for an undated entry too: its updated time moves, its place does not).
                        row["updated"] = now if e.published is None or now > e.published else None
                    if e.features is not None:  # new features: the old ones' keys go first
                        delete_keys(s.connection(), [old.id])
                        keys += [(k, old.id) for k in e.features.keys]
                    s.execute(update(EntryRow).where(EntryRow.id == old.id).values(**row))
                    s.execute(delete(EntryCategoryRow).where(EntryCategoryRow.entry_id == old.id))
                    # None of its categories is borrowed from a duplicate any more (dedup lends again).
                    s.execute(delete(DedupCategoryRow).where(DedupCategoryRow.entry_id == old.id))
                    links = [{"entry_id": old.id, "category_id": cat_ids[c]} for c in e.categories]
                    if links:
                        s.execute(insert(EntryCategoryRow), links)
                    touched.append(old.id)
                    result.updated += 1
            if touches:
                # A file saved again with the same content: remember its new stamp so the
                # next scan skips it without reading.
                t = EntryRow.__table__
                s.execute(
                    update(t)
                    .where(t.c.id == bindparam("b_id"))
                    .values(file_mtime_ns=bindparam("m"), file_size=bindparam("s")),
                    touches,
                )
            if inserts:
                # Core, not ORM, insert: the ORM's bulk path costs ~3× more per row.
                t = EntryRow.__table__
                s.execute(insert(t), inserts)
                new_keys = [r["key"] for r in inserts]
                by_key: dict[str, int] = {}
                for i in range(0, len(new_keys), BATCH):
                    q = select(t.c.key, t.c.id).where(t.c.source_id == source_id, t.c.key.in_(new_keys[i : i + BATCH]))
                    by_key.update((k, i) for k, i in s.execute(q))
                links = [
                    {"entry_id": by_key[key], "category_id": cat_ids[c]} for key, cats in inserted_cats for c in cats
                ]
                if links:
                    s.execute(insert(EntryCategoryRow), links)
                keys += [(k, by_key[key]) for key, ks in inserted_keys for k in ks]
                touched.extend(by_key.values())
            if keys:
                keyindex.insert(s.connection(), keys)
        return result, touched

    def withdraw(self, ids: Sequence[int], now: datetime) -> None:
        """Entries whose file is gone: hidden from feeds, kept for history."""
        with self.engine.begin() as c:
            for i in range(0, len(ids), BATCH):
                c.execute(
                    update(EntryRow)
                    .where(EntryRow.id.in_(ids[i : i + BATCH]))
                    .values(withdrawn_at=now, changed_at=now, dedup_pending=True)
                )

    # ------------------------------------------------------------ categories

    def _category_ids(self, s: Session, names: set[str], source_id: int, now: datetime) -> dict[str, int]:
        if not names:
            return {}
        found = self._existing(s, names)
        missing = sorted(names - found.keys())
        if missing:
            taken = set(s.scalars(select(CategoryRow.slug)))
            for name in missing:
                slug = unique_slug(name, taken)
                taken.add(slug)
                row = CategoryRow(name=name, slug=slug)
                s.add(row)
                s.flush()
                found[name] = row.id
            s.execute(
                insert(CategoryOriginRow),
                [{"category_id": found[n], "source_id": source_id, "created_at": now} for n in missing],
            )
        return found

    @staticmethod
    def _existing(s: Session, names: set[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        ordered = sorted(names)
        for i in range(0, len(ordered), BATCH):
            q = select(CategoryRow.name, CategoryRow.id).where(CategoryRow.name.in_(ordered[i : i + BATCH]))
            found.update(s.execute(q).all())
        return found

    def existing_categories(self, names: set[str]) -> set[str]:
        """Which of `names` are stored categories."""
        with self.session() as s:
            return set(self._existing(s, names)) if names else set()

    def categories_created_since(self, source_id: int, since: datetime) -> int:
        """How many categories entries of this source created after `since`."""
        q = select(func.count()).where(CategoryOriginRow.source_id == source_id, CategoryOriginRow.created_at > since)
        with self.engine.connect() as c:
            return c.scalar(q) or 0

    def categories(self) -> list[CategoryRow]:
        with self.session() as s:
            return list(s.scalars(select(CategoryRow).order_by(CategoryRow.slug)))

    def category_counts(self) -> dict[int, tuple[int, datetime | None]]:
        """Per category: visible entries and the newest one's date."""
        q = (
            select(EntryCategoryRow.category_id, func.count(), func.max(EntryRow.sort_date))
            .join(EntryRow, EntryRow.id == EntryCategoryRow.entry_id)
            .where(EntryRow.withdrawn_at.is_(None), EntryRow.canonical_id.is_(None))
            .group_by(EntryCategoryRow.category_id)
        )
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        # SQLite hands back aggregate datetimes as text; normalise through the column type.
        return {cid: (n, _as_utc(newest)) for cid, n, newest in rows}

    # ------------------------------------------------------------ publishing

    def listing(self, category_id: int | None, limit: int | None, offset: int = 0) -> list[EntryRow]:
        """Visible entries, newest first: of one category, or of all when category_id is None."""
        q = select(EntryRow).where(EntryRow.withdrawn_at.is_(None), EntryRow.canonical_id.is_(None))
        if category_id is not None:
            q = q.join(EntryCategoryRow, EntryCategoryRow.entry_id == EntryRow.id).where(
                EntryCategoryRow.category_id == category_id
            )
        q = q.order_by(EntryRow.sort_date.desc(), EntryRow.id.desc()).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.session() as s:
            return list(s.scalars(q))

    def listing_versions(self, category_id: int | None, limit: int) -> list[tuple[int, str]]:
        """(id, version) of what `listing` would return: cheap input for a change signature."""
        q = select(EntryRow.id, EntryRow.version).where(
            EntryRow.withdrawn_at.is_(None), EntryRow.canonical_id.is_(None)
        )
        if category_id is not None:
            q = q.join(EntryCategoryRow, EntryCategoryRow.entry_id == EntryRow.id).where(
                EntryCategoryRow.category_id == category_id
            )
        q = q.order_by(EntryRow.sort_date.desc(), EntryRow.id.desc()).limit(limit)
        with self.engine.connect() as c:
            return [(i, v) for i, v in c.execute(q)]

    def entries_by_id(self, ids: Sequence[int]) -> list:
        """Entry rows as publishing needs them (Core rows: attribute access like EntryRow,
        without the ORM's per-object cost, and without the dedup columns) in the order of
        `ids`; ids that no longer exist are skipped."""
        found = {}
        with self.engine.connect() as c:
            for i in range(0, len(ids), BATCH):
                for row in c.execute(_BY_ID, {"ids": list(ids[i : i + BATCH])}):
                    found[row.id] = row
        return [found[i] for i in ids if i in found]

    def entry_categories(self, entry_ids: Sequence[int]) -> dict[int, list[CategoryRef]]:
        """Each entry's categories, by name."""
        out: dict[int, list[CategoryRef]] = {i: [] for i in entry_ids}
        with self.engine.connect() as c:
            for i in range(0, len(entry_ids), BATCH):
                for eid, *ref in c.execute(_CATEGORIES_OF, {"ids": list(entry_ids[i : i + BATCH])}):
                    out[eid].append(CategoryRef(*ref))
        return out

    def source_names(self) -> dict[int, str]:
        with self.engine.connect() as c:
            return dict(c.execute(select(SourceRow.id, SourceRow.name)).all())

    def signatures(self) -> dict[str, str]:
        with self.engine.connect() as c:
            return dict(c.execute(select(OutputRow.name, OutputRow.signature)).all())

    def set_signatures(self, changed: dict[str, str]) -> None:
        if not changed:
            return
        with self.engine.begin() as c:
            c.execute(delete(OutputRow).where(OutputRow.name.in_(list(changed))))
            c.execute(insert(OutputRow), [{"name": k, "signature": v} for k, v in changed.items()])

    def visible_count(self) -> int:
        q = select(func.count()).where(EntryRow.withdrawn_at.is_(None), EntryRow.canonical_id.is_(None))
        with self.engine.connect() as c:
            return c.scalar(q) or 0

    def entry_count(self) -> int:
        with self.engine.connect() as c:
            return c.scalar(select(func.count()).select_from(EntryRow)) or 0

    # ---- remote sources

    def feed_sources(self, urls: dict[str, str]) -> dict[str, SourceRow]:
        """The rows of the remote sources `urls` names (name → configured URL), created on first
        sight. A source whose configured URL was edited starts afresh at the new URL."""
        out: dict[str, SourceRow] = {}
        names = list(urls)
        with self.session() as s, s.begin():
            rows: dict[str, SourceRow] = {}
            for i in range(0, len(names), BATCH):
                q = select(SourceRow).where(SourceRow.name.in_(names[i : i + BATCH]))
                rows.update((r.name, r) for r in s.scalars(q))
            for name, url in urls.items():
                row = rows.get(name)
                if row is None:
                    row = SourceRow(name=name, kind="feed", location=url, config_url=url, identity="guid")
                    row.error_count = row.moved_count = 0
                    s.add(row)
                elif row.kind != "feed" or row.config_url != url:
                    row.kind, row.location, row.config_url = "feed", url, url
                    row.etag = row.last_modified = row.moved_to = row.disabled = row.next_due = None
                    row.error_count = row.moved_count = 0
                out[name] = row
            s.flush()
        return out

    def save_feed_states(self, states: Sequence[dict]) -> None:
        """Several fetch outcomes in one transaction; every dict has "id" and the same columns."""
        if not states:
            return
        t = SourceRow.__table__
        columns = [k for k in states[0] if k != "id"]
        q = update(t).where(t.c.id == bindparam("b_id")).values({k: bindparam(f"b_{k}") for k in columns})
        with self.engine.begin() as c:
            c.execute(q, [{"b_id": st["id"], **{f"b_{k}": st[k] for k in columns}} for st in states])

    # ---- feed discovery and alerts (issue 20)

    def save_discovery(self, source_id: int, page: str, feed: str, now: datetime) -> None:
        t = DiscoveredFeedRow.__table__
        with self.engine.begin() as c:
            c.execute(t.delete().where(t.c.source_id == source_id))
            c.execute(t.insert().values(source_id=source_id, page=page, feed=feed, found_at=now))

    def forget_discovery(self, source_id: int) -> None:
        t = DiscoveredFeedRow.__table__
        with self.engine.begin() as c:
            c.execute(t.delete().where(t.c.source_id == source_id))

    def discoveries(self) -> dict[int, tuple[str, str]]:
        """source id → (page, feed found on it)."""
        t = DiscoveredFeedRow.__table__
        with self.engine.connect() as c:
            return {sid: (page, feed) for sid, page, feed in c.execute(select(t.c.source_id, t.c.page, t.c.feed))}

    def alert_state(self) -> dict:
        """{"open": [alert keys already sent], "failing": {source name: ISO time it began failing},
        "build": the last build's error or None}."""
        t = DaemonStateRow.__table__
        with self.engine.connect() as c:
            value = c.execute(select(t.c.value).where(t.c.name == ALERTS)).scalar()
        state = json.loads(value) if value else {}
        return {
            "open": list(state.get("open", [])),
            "failing": dict(state.get("failing", {})),
            "build": state.get("build"),
        }

    def save_alert_state(self, state: dict) -> None:
        t = DaemonStateRow.__table__
        value = json.dumps(state, sort_keys=True)
        with self.engine.begin() as c:
            if not c.execute(t.update().where(t.c.name == ALERTS).values(value=value)).rowcount:
                c.execute(t.insert().values(name=ALERTS, value=value))

    def failing_sources(self) -> dict[str, str]:
        """name → last error of every remote source whose last fetch failed (back-off)."""
        q = select(SourceRow.name, SourceRow.last_error, SourceRow.disabled).where(
            SourceRow.kind == "feed", (SourceRow.error_count > 0) | SourceRow.disabled.is_not(None)
        )
        with self.engine.connect() as c:
            return {name: (disabled or error or "failing") for name, error, disabled in c.execute(q)}

    def answers(self) -> bool:
        """Does the database answer a trivial query (for /healthz)?"""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as c:
                c.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def entry_links(self, source_id: int) -> dict[str, str]:
        """link → key of a source's stored entries (to notice GUIDs that change between fetches)."""
        q = select(EntryRow.link, EntryRow.key).where(EntryRow.source_id == source_id, EntryRow.link.is_not(None))
        with self.engine.connect() as c:
            return {link: key for link, key in c.execute(q)}

    def rekey(self, source_id: int, mapping: dict[str, str]) -> int:
        """Give stored entries a new key (their public uid stays); keys already taken are skipped."""
        if not mapping:
            return 0
        with self.session() as s, s.begin():
            taken = set(s.scalars(select(EntryRow.key).where(EntryRow.source_id == source_id)))
            todo = []
            for old, new in mapping.items():
                if old in taken and new not in taken:
                    taken.discard(old)
                    taken.add(new)
                    todo.append({"b_old": old, "b_new": new})
            if todo:
                t = EntryRow.__table__
                q = update(t).where(t.c.source_id == source_id, t.c.key == bindparam("b_old"))
                s.execute(q.values(key=bindparam("b_new")), todo)
        return len(todo)

    def source_rows(self) -> list[SourceRow]:
        with self.session() as s:
            return list(s.scalars(select(SourceRow).order_by(SourceRow.name)))

    def entries_per_source(self) -> dict[int, int]:
        """Visible (not withdrawn) entries per source id."""
        q = select(EntryRow.source_id, func.count()).where(EntryRow.withdrawn_at.is_(None)).group_by(EntryRow.source_id)
        with self.engine.connect() as c:
            return {sid: n for sid, n in c.execute(q)}


# ---- daemon


def _without_tombstoned(
    s: Session, source_id: int, entries: Sequence[Entry], known: dict[str, StoredStamp]
) -> Sequence[Entry]:
    """Drop new entries that retention pruned before (a feed still carrying an old item)."""
    new_keys = [e.key for e in entries if e.key not in known]
    dead: set[str] = set()
    for i in range(0, len(new_keys), BATCH):
        q = select(TombstoneRow.key).where(
            TombstoneRow.source_id == source_id, TombstoneRow.key.in_(new_keys[i : i + BATCH])
        )
        dead.update(s.scalars(q))
    return [e for e in entries if e.key not in dead] if dead else entries


def _as_utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def unique_slug(name: str, taken: set[str]) -> str:
    """A slug for `name` not in `taken`: the pinyin/word slug, else one with a short hash of
    the name appended, so the same name always gets the same fallback."""
    import hashlib

    base = slugify(name) or "category"
    digest = hashlib.sha1(name.encode()).hexdigest()
    candidates = [base] if base not in RESERVED_SLUGS else []
    candidates += [f"{base}-{digest[:n]}" for n in (6, 10, 40)]
    for c in candidates:
        if c not in taken:
            return c
    raise ValueError(f"cannot find a free slug for category {name!r}")


# Statements publishing runs for every few dozen entries, built once: constructing and
# compiling them anew each time cost more than the rows they fetch.
_BY_ID = select(*(EntryRow.__table__.c[n] for n in _PUBLISHED_COLUMNS)).where(
    EntryRow.__table__.c.id.in_(bindparam("ids", expanding=True))
)
_CATEGORIES_OF = (
    select(EntryCategoryRow.entry_id, CategoryRow.id, CategoryRow.name, CategoryRow.slug)
    .join(CategoryRow, CategoryRow.id == EntryCategoryRow.category_id)
    .where(EntryCategoryRow.entry_id.in_(bindparam("ids", expanding=True)))
    .order_by(CategoryRow.name)
)
