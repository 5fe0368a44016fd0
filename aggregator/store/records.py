"""The records the store hands out and takes in: plain dataclasses, no SQLAlchemy.

Stages never see a table or a row object; what they read of the database comes back as one
of these, and what they write goes in as `model.Entry` or one of these.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

# Identity namespace for entry ids; never change it or every published id changes.
_UID_NAMESPACE = uuid.UUID("6f1d3a52-3c4e-4f0b-9a57-0b6f3f7f1c2e")
_NAMESPACE_BYTES = _UID_NAMESPACE.bytes


def entry_uid(source: str, key: str) -> str:
    """The public, permanent id of an entry: a UUID derived from its source and key.

    `uuid.uuid5(_UID_NAMESPACE, f"{source}\\x00{key}")`, spelled out: the `UUID` object it builds
    and formats cost two thirds of the call, paid for every entry stored (a test holds the two equal)."""
    h = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{source}\x00{key}".encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def now_utc() -> datetime:
    """The store's clock: UTC, to the second (what every backend keeps the same)."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class CategoryRef:
    id: int
    name: str
    slug: str


@dataclass(frozen=True, slots=True)
class CategoryCount:
    """Visible entries of a category and the newest one's date."""

    entries: int
    newest: datetime | None


@dataclass(frozen=True, slots=True)
class StoredStamp:
    """What a re-scan or re-fetch compares an entry against."""

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


@dataclass(slots=True)
class SourceRecord:
    """A source as stored: its kind and, for a remote feed, its fetch state."""

    id: int
    name: str
    kind: str  # "files" or "feed"
    location: str  # folder, or the feed URL currently in use
    config_url: str | None = None  # the URL as configured; `location` differs after a permanent redirect
    etag: str | None = None
    last_modified: str | None = None
    last_fetch: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    error_count: int = 0
    next_due: datetime | None = None
    disabled: str | None = None  # why it is no longer fetched
    moved_to: str | None = None  # permanent-redirect target being confirmed
    moved_count: int = 0
    identity: str = "guid"  # "guid" or "link"
    identity_reason: str | None = None
    feed_flags: str | None = None  # e.g. feedparser's bozo message


# The fields of a SourceRecord a fetch may change (`Store.save_feed_states`).
FEED_STATE_FIELDS = frozenset(
    ("location", "etag", "last_modified", "last_fetch", "last_status", "last_error", "error_count", "next_due",
     "disabled", "moved_to", "moved_count", "identity", "identity_reason", "feed_flags")
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as publishing reads it (everything but bookkeeping and dedup features)."""

    id: int
    source_id: int
    key: str  # its identity within its source
    uid: str
    version: str
    title: str
    link: str | None
    authors: list
    tags: list
    outlet: str | None
    image: str | None
    enclosure: dict | None  # {url, type, length} as the source gave them
    summary: str
    content: str
    published: datetime | None
    updated: datetime | None
    first_seen: datetime
    withdrawn_at: datetime | None
    hidden: str | None = None  # why a block or keep rule hides it

    @property
    def gone(self) -> bool:
        """Not to be shown: withdrawn, or hidden by a rule."""
        return self.withdrawn_at is not None or self.hidden is not None


@dataclass(frozen=True, slots=True)
class ListedEntry:
    """What a category's keyword filter looks at, with the version a change signature needs."""

    id: int
    version: str
    title: str
    summary: str
    tags: list


@dataclass(frozen=True, slots=True)
class PruneCandidates:
    """Entry ids retention removes: too old, over a source's limit, withdrawn files to forget."""

    old: list[int]
    excess: list[int]
    forget: list[int]
