"""The query planner's statistics: gathered when the entries table has doubled, so that a
category's listing is read through its category index instead of a walk over every entry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from aggregator.model import Entry
from aggregator.store import Store
from aggregator.store.database import stale_statistics
from tests.test_dedup_store import store  # noqa: F401  (the fixture: SQLite, and PostgreSQL when set up)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("analyzed", "rows", "stale"),
    [
        (None, 0, False),  # nothing to learn from
        (None, 5, True),
        (3, 900, False),  # small tables: whatever the plan, it is cheap
        (None, 5000, True),
        (2000, 4000, False),
        (2000, 4001, True),
        (50_000, 30_000, False),  # rows deleted: the plan stays good enough
    ],
)
def test_statistics_are_stale_when_never_gathered_or_the_table_doubled(analyzed, rows, stale):
    assert stale_statistics(analyzed, rows) is stale


def save(into: Store, first: int, n: int, categories: int = 12) -> None:
    sid = into.source_id("local", "files", "/local")
    entries = [
        Entry(source="local", key=f"{i}.md", title=f"t{i}", content_html=f"<p>{i}</p>", summary="",
              categories=[f"c{i % categories}"], published=NOW)
        for i in range(first, first + n)
    ]  # fmt: skip
    into.save_entries(sid, entries, into.stamps(sid), NOW)


def test_statistics_are_gathered_once_then_again_when_the_table_doubles(store: Store):  # noqa: F811
    assert store.refresh_statistics() is False  # an empty store
    save(store, 0, 1200)
    assert store.refresh_statistics() is True
    assert store.refresh_statistics() is False
    save(store, 1200, 600)
    assert store.refresh_statistics() is False
    save(store, 1800, 1000)
    assert store.refresh_statistics() is True


def test_a_category_listing_reads_the_category_index_once_statistics_exist(store: Store):  # noqa: F811
    if store.dialect != "sqlite":
        pytest.skip("reads SQLite query plans")
    save(store, 0, 1200)
    store.refresh_statistics()
    category = store.category_counts()
    cid = next(iter(category))
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if "entry_categories" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        listed = store.listing_versions(cid, None)
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    assert len(listed) == 100
    (statement, parameters), = seen
    with store.engine.connect() as c:
        plan = " ".join(r[3] for r in c.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
    assert "ix_entry_categories_category" in plan, plan
