"""The database, behind one boundary: every table, query and schema change of the project.

`Store` is the one object stages talk to. Its methods come from one module per domain, each
a small typed API over plain records (`records`, `model`):

| module | domain |
|---|---|
| `entries` | entries and their versions; the visible-entry rule; the reads publishing needs |
| `sources` | sources and their fetch state |
| `leases`, `hostslots` | fetch workers' claims on sources; the per-host budget they share |
| `categories` | categories, their slugs and origins, counts |
| `clusters`, `keyindex` | duplicate clusters, dedup features and the key index |
| `publishing` | what each feed and page was built from, archive pages |
| `daemon_state` | the daemon's last cycle and the writer lease |
| `republishing` | what the republishing rules keep: hidden entries, dropped feed terms, full-text pages |
| `pruning` | retention's reads and writes: pruning with tombstones |
| `schema`, `database`, `migrations/` | the tables, opening a database, Alembic migrations |

SQLite (WAL mode) is the embedded default, PostgreSQL the server option; SQL is portable
except in `database` and the key index's bulk reads.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from . import database
from .categories import CategoryStore, unique_slug
from .clusters import ClusterStore, DedupTransaction, FeatureUpdate
from .daemon_state import DaemonStore, lease_free
from .database import SchemaError
from .entries import EntryStore
from .keyindex import Shape as KeyIndexShape
from .leases import LeaseStore, claimable, lease_lapsed
from .pruning import RetentionStore
from .publishing import PublishStore
from .records import (
    CategoryCount,
    CategoryRef,
    ListedEntry,
    PruneCandidates,
    SaveResult,
    SourceRecord,
    StoredEntry,
    StoredStamp,
    entry_uid,
    now_utc,
)
from .republishing import CachedPage, RepublishStore, RuleSubject
from .sources import SourceStore

__all__ = [
    "CachedPage",
    "CategoryCount",
    "CategoryRef",
    "DedupTransaction",
    "FeatureUpdate",
    "KeyIndexShape",
    "ListedEntry",
    "PruneCandidates",
    "RuleSubject",
    "SaveResult",
    "SchemaError",
    "SourceRecord",
    "Store",
    "StoredEntry",
    "StoredStamp",
    "backend",
    "claimable",
    "entry_uid",
    "lease_free",
    "lease_lapsed",
    "now_utc",
    "unique_slug",
]


def backend(url: str) -> str:
    """The kind of database a URL names: "sqlite", "postgresql", … (nothing is opened)."""
    return make_url(url).get_backend_name()


class Store(
    EntryStore, SourceStore, LeaseStore, CategoryStore, ClusterStore, PublishStore, DaemonStore, RetentionStore,
    RepublishStore,
):
    """A database holding sources, entries, categories, clusters and publishing state.

    Opening one checks its schema: an empty database is created at the current revision, an
    older one is refused (`SchemaError`, naming `aggregator db upgrade`)."""

    def __init__(self, url: str, cache_mb: int = database.DEFAULT_CACHE_MB, key_shape: KeyIndexShape | None = None):
        """`cache_mb`: SQLite's page cache per connection (a reader that only fetches rows by id
        needs little). `key_shape`: how the dedup key index's levels grow (tests make them small)."""
        self.url = url
        self.key_shape = key_shape or KeyIndexShape()
        self.engine = database.engine_for(url, cache_mb)
        try:
            database.ensure_schema(self.engine, self.describe())
        except BaseException:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    def describe(self) -> str:
        """The database's URL, password hidden: for messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite store; None for a server database or an in-memory one."""
        return database.sqlite_file(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def size(self) -> int | None:
        """Bytes the database occupies."""
        return database.database_size(self.engine)

    def answers(self) -> bool:
        """Does the database answer a trivial query (for /healthz)?"""
        return database.answers(self.engine)

    def upkeep(self) -> None:
        """Periodic maintenance (the dialect decides what that is)."""
        database.upkeep(self.engine)
