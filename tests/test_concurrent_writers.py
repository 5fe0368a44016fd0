"""Writers side by side on one database (the daemon's fetch jobs, fetch workers on several
machines): creating the same categories and sources at once must not fail anyone's transaction."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from aggregator.model import Entry
from aggregator.store import Store

THREADS = 6


def _together(n: int, work) -> list[BaseException]:
    """Run work(i) for i in range(n) on n threads released at the same instant; the errors."""
    gate = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        gate.wait()
        try:
            work(i)
        except BaseException as e:  # collected, asserted below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_sources_storing_the_same_new_categories_at_once_all_succeed(db_url: str) -> None:
    store = Store(db_url)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        ids = {i: store.source_id(f"feed{i}", "feed", f"http://example.org/{i}.xml") for i in range(THREADS)}
        names = ("Markets", "Tech", "World", "市场", "Sports!", "sports")  # the last two share a slug

        def save(i: int) -> None:
            entry = Entry(source=f"feed{i}", key=f"k{i}", title=f"t{i}", content_html="<p>x</p>", summary="x",
                          categories=names, published=now)  # fmt: skip
            store.save_entries(ids[i], [entry], {}, now)

        assert _together(THREADS, save) == []
        cats = store.categories()
        assert sorted(c.name for c in cats) == sorted(names)
        assert len({c.slug for c in cats}) == len(names)
        # Each category was created once, by one source: its origin row says which.
        since = datetime(2000, 1, 1, tzinfo=UTC)
        assert sum(store.categories_created_since(sid, since) for sid in ids.values()) == len(names)
    finally:
        store.close()


def test_workers_creating_the_same_sources_at_once_share_one_row_each(db_url: str) -> None:
    store = Store(db_url)
    try:
        urls = {f"feed{i:03d}": f"http://example.org/{i}.xml" for i in range(40)}
        seen: list[dict] = []

        def create(_i: int) -> None:
            seen.append({name: r.id for name, r in store.feed_sources(urls).items()})

        assert _together(4, create) == []
        assert len(seen) == 4 and all(s == seen[0] for s in seen)
        assert len(store.source_rows()) == len(urls)
        assert _together(4, lambda _i: store.source_id("folder", "files", "/articles")) == []
    finally:
        store.close()
