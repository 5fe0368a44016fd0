"""A category's listing through the store API: what it holds, and how SQLite reads it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from aggregator.model import Entry
from aggregator.store import Store
from tests.test_dedup_store import store  # noqa: F401  (the fixture: SQLite, and PostgreSQL when set up)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def save(into: Store, n: int, categories: int = 12) -> dict[str, int]:
    sid = into.source_id("local", "files", "/local")
    entries = [
        Entry(source="local", key=f"{i}.md", title=f"t{i}", content_html=f"<p>{i}</p>", summary="",
              categories=[f"c{i % categories}"], published=T0 - timedelta(hours=i % 7, minutes=i))
        for i in range(n)
    ]  # fmt: skip
    into.save_entries(sid, entries, into.stamps(sid), T0)
    return {k: s.id for k, s in into.stamps(sid).items()}


def test_a_category_lists_its_visible_entries_newest_first(store: Store):  # noqa: F811
    ids = save(store, 300)
    store.withdraw([ids["12.md"]], T0)
    cid = next(ref.id for ref in store.categories() if ref.name == "c0")
    listed = [i for i, _ in store.listing_versions(cid, None)]
    members = {ids[f"{i}.md"] for i in range(0, 300, 12) if i != 12}
    assert set(listed) == members
    stamps = {e.id: e.published for e in store.entries_by_id(listed)}
    dates = [stamps[i] for i in listed]
    assert dates == sorted(dates, reverse=True)
    assert [i for i, _ in store.listing_versions(cid, 5)] == listed[:5]


def plan_of(store: Store, mentions: str, call) -> str:  # noqa: F811
    """SQLite's query plan for the one SELECT mentioning `mentions` that `call()` runs."""
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if mentions in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    ((statement, parameters),) = seen
    with store.engine.connect() as c:
        return " ".join(r[3] for r in c.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))


def test_a_category_listing_reads_the_category_index_not_every_entry(store: Store):  # noqa: F811
    if store.dialect != "sqlite":
        pytest.skip("reads SQLite query plans")
    save(store, 1200)
    cid = next(iter(store.category_counts()))
    plan = plan_of(store, "entry_categories", lambda: store.listing_versions(cid, None))
    assert len(store.listing_versions(cid, None)) == 100
    # Read once from its index, not probed by entry id for each of the 1,200 entries, and not
    # found by walking every visible entry in date order (the date index serves a limited
    # listing, whose walk stops early).
    assert "ix_entry_categories_category" in plan, plan
    assert "ix_entries_listing" not in plan, plan


def test_a_whole_listing_and_a_limited_one_agree_on_the_order_ties_included(store: Store):  # noqa: F811
    """The whole listing (sorted after reading, on SQLite) and a limited one (read in date order)
    are the same order: newest first, and between entries of one date the higher uid first (a
    digest of the entry's identity, so a rebuilt database lists them alike)."""
    sid = store.source_id("local", "files", "/local")
    entries = [
        Entry(source="local", key=f"{i}.md", title=f"t{i}", content_html=f"<p>{i}</p>", summary="",
              categories=["c", f"d{i % 3}"], published=T0 - timedelta(hours=(i * 7) % 5))
        for i in range(40)
    ]  # fmt: skip
    store.save_entries(sid, entries, store.stamps(sid), T0)
    stamps = store.stamps(sid)
    for name in ("c", "d1"):
        cid = next(ref.id for ref in store.categories() if ref.name == name)
        whole = store.listing_versions(cid, None)
        assert whole == store.listing_versions(cid, len(whole))
        listed = {e.id: (e.published, e.uid) for e in store.entries_by_id([i for i, _ in whole])}
        expected = sorted(listed, key=listed.__getitem__, reverse=True)
        assert [i for i, _ in whole] == expected
        assert {i for i, _ in whole} == {s.id for k, s in stamps.items() if name == "c" or int(k[:-3]) % 3 == 1}


def test_a_source_stamps_are_read_from_an_index_not_the_entries_rows(store: Store):  # noqa: F811
    """Every scan reads its source's stamps; the rows hold the content, so reading them would
    pull every entry's pages through the cache."""
    ids = save(store, 50)
    store.withdraw([ids["7.md"]], T0)
    sid = store.source_id("local", "files", "/local")
    stamps = store.stamps(sid)
    assert len(stamps) == 50 and stamps["7.md"].withdrawn and not stamps["8.md"].withdrawn
    assert {k: s.id for k, s in stamps.items()} == ids
    if store.dialect == "sqlite":
        plan = plan_of(store, "file_mtime_ns", lambda: store.stamps(sid))
        assert "COVERING INDEX ix_entries_stamps" in plan, plan


def test_page_rows_come_in_uid_order_a_chunk_at_a_time_with_their_categories(store: Store):  # noqa: F811
    """Every entry that gets an article page (visible, no original URL) once, in uid order,
    with its category ids ascending and its recorded signature; chunks resume after a uid."""
    ids = save(store, 30, categories=4)
    sid = store.source_id("local", "files", "/local")
    linked = Entry(source="local", key="linked.md", title="l", content_html="<p>l</p>", summary="",
                   link="https://example.org/l", categories=["c1"], published=T0)  # fmt: skip
    store.save_entries(sid, [linked], store.stamps(sid), T0)
    store.withdraw([ids["3.md"]], T0)
    chunks, after = [], ""
    while rows := store.page_rows(after, limit=7):
        chunks.append(rows)
        after = rows[-1][0]
    rows = [r for chunk in chunks for r in chunk]
    assert [len(c) for c in chunks] == [7, 7, 7, 7, 1]
    by_id = {e.id: e for e in store.entries_by_id([i for _, i, _, _, _ in rows])}
    assert {i for _, i, _, _, _ in rows} == set(ids.values()) - {ids["3.md"]}
    # (In the database's order of uids; each once, so the chunks neither skip nor repeat one.)
    assert sorted(uid for uid, *_ in rows) == sorted(by_id[i].uid for _, i, _, _, _ in rows)
    cats = store.entry_categories(list(by_id))
    for uid, i, version, listed, recorded in rows:
        assert listed == ",".join(str(c.id) for c in sorted(cats[i], key=lambda c: c.id))
        assert (uid, version, recorded) == (by_id[i].uid, by_id[i].version, None)
    first = rows[0][0]
    store.record_pages([(first, "sig")])
    assert store.page_rows("", limit=1)[0][4] == "sig"
    # A recorded page whose entry no longer gets one is unwanted: withdrawn, or given a link.
    store.record_pages([(by_id[ids["5.md"]].uid, "x")])
    store.withdraw([ids["5.md"]], T0)
    assert store.unwanted_pages() == [by_id[ids["5.md"]].uid]


def test_counts_and_page_rows_read_the_partial_indexes_not_the_entries_rows(store: Store):  # noqa: F811
    ids = save(store, 60, categories=5)
    store.withdraw([ids["4.md"]], T0)
    assert store.visible_count() == 59
    counts = store.category_counts()
    assert sum(c.entries for c in counts.values()) == 59 and len(counts) == 5
    assert max(c.newest for c in counts.values()) == T0
    if store.dialect == "sqlite":
        assert "COVERING INDEX ix_entries_visible" in plan_of(store, "count(*)", store.visible_count)
        assert "COVERING INDEX ix_entries_visible" in plan_of(store, "entry_categories", store.category_counts)
        assert "COVERING INDEX ix_entries_pages" in plan_of(store, "article_pages", lambda: store.page_rows(""))
    else:  # PostgreSQL plans for itself; what is checked is that the indexes are partial
        with store.engine.connect() as c:
            rows = c.exec_driver_sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'entries'")
            found = dict(rows.all())
        assert "WHERE" in found["ix_entries_visible"] and "canonical_id IS NULL" in found["ix_entries_visible"]
        assert "link IS NULL" in found["ix_entries_pages"], found["ix_entries_pages"]


def test_a_batch_of_changed_entries_is_stored_whole_each_with_its_own_categories(store: Store):  # noqa: F811
    """Changed versions saved together (a refetch whose every item changed): each row gets its
    own version, whether or not its date moves it, and its own categories, old ones dropped."""
    ids = save(store, 30, categories=4)
    sid = store.source_id("local", "files", "/local")
    changed = [
        Entry(source="local", key=f"{i}.md", title=f"t{i} v2", content_html=f"<p>{i} v2</p>", summary="",
              categories=[f"c{(i + 1) % 4}", "new"] if i % 2 else [f"c{i % 4}"],
              published=T0 + timedelta(days=1) if i % 3 == 0 else T0 - timedelta(hours=i % 7, minutes=i))
        for i in range(30)
    ]  # fmt: skip
    result, touched = store.save_entries(sid, changed, store.stamps(sid), T0 + timedelta(hours=1))
    assert result.updated == 30 and result.new == 0 and sorted(touched) == sorted(ids.values())
    stored = {e.key: e for e in store.entries_by_id(list(ids.values()))}
    cats = store.entry_categories(list(ids.values()))
    for e in changed:
        row = stored[e.key]
        assert (row.title, row.content, row.published) == (e.title, e.content_html, e.published)
        assert sorted(c.name for c in cats[row.id]) == sorted(e.categories)
    assert {e.id: e.version for e in stored.values()} == {s.id: s.version for s in store.stamps(sid).values()}
