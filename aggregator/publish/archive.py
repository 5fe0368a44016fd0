"""RFC 5005 archived feeds: entries that fall out of a feed's newest `max_items` stay reachable.

Each feed keeps a list of archive pages, oldest first, of `page_size` entries each. An entry
is appended to the open (last, not yet full) page the first time it falls out of the
current feed, so the pages hold entries in the order they left the feed, not by date: a
late, old-dated entry never reshuffles pages that readers have already fetched.

Page URLs are immutable in meaning: a full page lives at `<slug>/archive/<n>/` and is
written once; the open page lives at `<slug>/archive/<n>-<count>/`, so each time it grows it
gets a new URL and a reader that has already seen one URL never misses what came later
(RFC 5005 §4: clients may assume an archive document they have fetched does not change).

The assignment of entries to pages is publishing state the store keeps (`Store.archive_pages`);
the planning itself (`plan_pages`) is a pure function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..store import Store

ARCHIVE_DIR = "archive"


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


def archive(store: Store, feed: str, eligible: Sequence[int], window: int, page_size: int) -> list[Page]:
    """Record the entries of `eligible` (every entry the feed may show, newest first) beyond
    its first `window` that are not archived yet, and return the feed's pages."""
    existing = store.archive_pages(feed)
    seen = {i for page in existing for i in page}
    fallen = [i for i in reversed(eligible[window:]) if i not in seen]
    pages = plan_pages(existing, fallen, page_size)
    if fallen:
        where = {entry_id: p.number for p in pages for entry_id in p.entry_ids}
        store.archive_entries(feed, [(i, where[i]) for i in fallen])
    return pages
