"""RFC 5005 archived feeds: entries that fall out of a feed's newest `max_items` stay reachable.

Each feed keeps a list of archive pages, oldest first, of `page_size` entries each. An entry
is appended to the open (last, not yet full) page the first time it falls out of the
current feed, so the pages hold entries in the order they left the feed, not by date: a
late, old-dated entry never reshuffles pages that readers have already fetched.

Page URLs are immutable in meaning: a full page lives at `<slug>/archive/<n>/` and is
written once; the open page lives at `<slug>/archive/<n>-<count>/`, so each time it grows it
gets a new URL and a reader that has already seen one URL never misses what came later
(RFC 5005 §4: clients may assume an archive document they have fetched does not change).

The assignment of entries to pages is publishing state, kept in its own table next to the
store's tables; the planning itself (`plan_pages`) is a pure function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Index, Integer, String, func, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from ..store import Base, Store

ARCHIVE_DIR = "archive"


class ArchiveEntryRow(Base):
    """Which archive page of which feed an entry was put in. No foreign key on purpose: an
    entry pruned later must not shift the pages already published."""

    __tablename__ = "archive_entries"
    __table_args__ = (Index("ix_archive_entries_page", "feed", "page", "seq"),)

    feed: Mapped[str] = mapped_column(String(200), primary_key=True)
    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    page: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)  # order of archiving within the feed


@dataclass(frozen=True, slots=True)
class Page:
    number: int  # 1 = oldest
    entry_ids: tuple[int, ...]  # in archiving order, oldest first
    full: bool

    @property
    def dirname(self) -> str:
        return str(self.number) if self.full else f"{self.number}-{len(self.entry_ids)}"


def plan_pages(pages: Sequence[Sequence[int]], fallen: Sequence[int], page_size: int) -> list[Page]:
    """Existing pages (oldest first, each a list of entry ids) plus newly fallen-out entries
    (oldest first) → the pages after appending them. Every page but the last is full; the
    last is full once it holds `page_size` entries (a page that was full stays full even if
    `page_size` grows later)."""
    numbered = [list(p) for p in pages]
    for entry_id in fallen:
        if not numbered or len(numbered[-1]) >= page_size:
            numbered.append([])
        numbered[-1].append(entry_id)
    last = len(numbered) - 1
    return [Page(n + 1, tuple(ids), n < last or len(ids) >= page_size) for n, ids in enumerate(numbered)]


def ensure_table(store: Store) -> None:
    ArchiveEntryRow.__table__.create(store.engine, checkfirst=True)


def load_pages(store: Store, feed: str) -> list[list[int]]:
    t = ArchiveEntryRow.__table__
    q = select(t.c.page, t.c.entry_id).where(t.c.feed == feed).order_by(t.c.page, t.c.seq)
    pages: dict[int, list[int]] = {}
    with store.engine.connect() as c:
        for page, entry_id in c.execute(q):
            pages.setdefault(page, []).append(entry_id)
    return [pages[n] for n in sorted(pages)]


def archive(store: Store, feed: str, eligible: Sequence[int], window: int, page_size: int) -> list[Page]:
    """Record the entries of `eligible` (every entry the feed may show, newest first) beyond
    its first `window` that are not archived yet, and return the feed's pages."""
    existing = load_pages(store, feed)
    seen = {i for page in existing for i in page}
    fallen = [i for i in reversed(eligible[window:]) if i not in seen]
    pages = plan_pages(existing, fallen, page_size)
    if fallen:
        t = ArchiveEntryRow.__table__
        with store.engine.begin() as c:
            seq = c.scalar(select(func.coalesce(func.max(t.c.seq), 0)).where(t.c.feed == feed)) or 0
            where = {entry_id: p.number for p in pages for entry_id in p.entry_ids}
            rows = [{"feed": feed, "entry_id": i, "page": where[i], "seq": seq + n} for n, i in enumerate(fallen, 1)]
            c.execute(insert(t), rows)
    return pages
