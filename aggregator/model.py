"""Records that cross stage boundaries.

`Entry` is the one shape every source produces: an article file and a remote feed
item both become an `Entry`, so store, dedup and publish never care where it came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from datetime import datetime


def positional_pickle(cls):
    """Pickle instances as (class, field values): the default for a slotted dataclass looks up
    `fields()` for every instance, which made unpickling parsed feeds sent back by the parser
    processes cost as much main-process CPU as storing them."""
    names = tuple(f.name for f in fields(cls))

    def __reduce__(self):
        return (cls, tuple(getattr(self, n) for n in names))

    cls.__reduce__ = __reduce__
    return cls


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What tells a re-scan that a file has not changed, without reading it."""

    path: str  # relative to the source folder, POSIX separators
    mtime_ns: int
    size: int


@positional_pickle
@dataclass(frozen=True, slots=True)
class Enclosure:
    """A media file attached to an entry (podcast audio, video, a document)."""

    url: str
    type: str  # MIME type
    length: int | None = None  # bytes, when the feed says


@positional_pickle
@dataclass(frozen=True, slots=True)
class Features:
    """What dedup derives from one version of an entry's text and link (see `features.features`)."""

    canonical_url: str | None
    url_key: int | None  # 64-bit digest of canonical_url
    fingerprint: int | None  # 64-bit digest of the normalized text
    text_chars: int  # length of the normalized text
    signature: bytes | None  # MinHash
    keys: tuple[int, ...] = ()  # its keys in the dedup index (`lsh.index_keys`)


@positional_pickle
@dataclass(frozen=True, slots=True)
class Entry:
    source: str  # the source's configured name
    key: str  # identity within the source: a file's relative path, a feed item's guid…
    title: str
    content_html: str  # sanitized, URLs absolute
    summary: str  # plain text
    link: str | None = None  # the original URL, when there is one
    published: datetime | None = None  # UTC-aware
    updated: datetime | None = None  # UTC-aware
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # canonical names (aliases applied)
    tags: tuple[str, ...] = ()
    outlet: str | None = None  # the publication it came from, e.g. 北京商报
    image: str | None = None
    enclosure: Enclosure | None = None
    stamp: FileStamp | None = field(default=None, compare=False)
    # Computed beside the parse when it runs in worker processes, so dedup need not read the
    # content back; None: dedup computes them itself.
    features: Features | None = field(default=None, compare=False)
    # The feed's own category terms `feed_categories = "map"` did not publish (`categorymap`):
    # stored so that `aggregator categories` can list them; not part of what readers see.
    dropped: tuple[str, ...] = field(default=(), compare=False)

    def with_key(self, key: str) -> Entry:
        """This entry under another key (`dataclasses.replace` rebuilds keyword arguments from
        `fields()` on each call: a tenth of storing a fetched feed)."""
        values = [getattr(self, n) for n in _ENTRY_FIELDS]
        values[1] = key
        return Entry(*values)

    def version(self) -> str:
        """A digest of everything a reader sees: equal digests mean nothing to republish."""
        # One string, encoded and hashed once: the same bytes as hashing each part and its
        # separator in turn (blake2b is a stream), at a third of the cost.
        text = "\x1e".join((
            self.title,
            self.content_html,
            self.summary,
            self.link or "",
            self.published.isoformat() if self.published else "",
            self.updated.isoformat() if self.updated else "",
            "\x1f".join(self.authors),
            "\x1f".join(self.categories),
            "\x1f".join(self.tags),
            self.outlet or "",
            self.image or "",
        ))  # fmt: skip
        h = hashlib.blake2b(text.encode("utf-8", "surrogatepass") + b"\x1e", digest_size=16)
        if self.enclosure:  # only when present, so entries without one keep their digest
            h.update(f"{self.enclosure.url}\x1f{self.enclosure.type}\x1f{self.enclosure.length}".encode())
        return h.hexdigest()


_ENTRY_FIELDS = tuple(f.name for f in fields(Entry))
assert _ENTRY_FIELDS[1] == "key"


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that could not become an entry, with the reason an operator can act on."""

    source: str
    where: str  # file path or URL
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Held:
    """An input deliberately not published (yet): a draft, or a post dated in the future."""

    source: str
    where: str  # file path
    reason: str
    until: datetime | None = None  # when it becomes publishable: a future post's date

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


# ---- deduplication


@dataclass(slots=True)
class ClusterEntry:
    """One entry as the clustering decision sees it (`clustering.decide`): mutable, since deciding
    moves it between clusters."""

    id: int
    source: str
    title: str
    published: datetime | None
    updated: datetime | None
    first_seen: datetime
    url_key: int | None = None
    fingerprint: int | None = None
    text_chars: int = 0
    signature: bytes | None = None
    withdrawn: bool = False
    fresh: bool = False  # features computed in this run: its index keys are not stored yet
    keys: tuple[int, ...] = ()  # its index keys, when computed in this run
    canonical_id: int | None = None
    dup_reason: str | None = None
    dup_score: float | None = None
    key: str = ""  # its key within its source: with the source name, a tie-break that survives a rebuild


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """An entry of a duplicate cluster as `aggregator duplicates` lists it."""

    id: int
    title: str
    source: str
    key: str
    link: str | None
    reason: str | None = None  # None for the canonical entry
    score: float | None = None

    def describe(self) -> str:
        why = f"near {self.score:.2f}" if self.reason == "near" and self.score is not None else (self.reason or "")
        return f"{why:<10} {self.source}: {self.key}"


@dataclass(frozen=True, slots=True)
class Cluster:
    canonical: ClusterMember
    members: tuple[ClusterMember, ...]
