"""Retention: pruning by age and per-source count, tombstones, upkeep (real SQLite in tmp_path)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aggregator.config import RetentionSettings
from aggregator.lsh import BANDS
from aggregator.model import Entry
from aggregator.retention import beyond_newest, cutoff, plan, prune, upkeep
from aggregator.store import Store
from aggregator.store.schema import ENTRIES, ENTRY_CATEGORIES, TOMBSTONES

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def entry(source: str, i: int, days_old: int) -> Entry:
    return Entry(
        source=source,
        key=f"https://example.org/{source}/{i}",
        title=f"item {i}",
        content_html=f"<p>body {i}</p>",
        summary=f"body {i}",
        link=f"https://example.org/{source}/{i}",
        published=NOW - timedelta(days=days_old),
        categories=("news",),
    )


@pytest.fixture
def store(tmp_path: Path):
    s = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    yield s
    s.close()


def save(store: Store, source: str, entries: list[Entry], kind: str = "feed") -> int:
    sid = store.source_id(source, kind, f"https://example.org/{source}.xml")
    store.save_entries(sid, entries, store.stamps(sid), NOW)
    return sid


def keys(store: Store, sid: int) -> set[str]:
    return set(store.stamps(sid))


def test_pure_helpers():
    assert cutoff(NOW, None) is None
    assert cutoff(NOW, 3) == NOW - timedelta(days=3)
    assert beyond_newest([5, 4, 3, 2], 2) == [3, 2]
    assert beyond_newest([5], 2) == []


def test_no_rules_prunes_nothing(store: Store):
    sid = save(store, "feed", [entry("feed", i, 400) for i in range(3)])
    report = prune(store, RetentionSettings(), now=NOW)
    assert report.pruned == 0
    assert len(keys(store, sid)) == 3


def test_prune_by_age_leaves_tombstones_that_keep_entries_out(store: Store):
    sid = save(store, "feed", [entry("feed", i, d) for i, d in enumerate([1, 5, 40, 100])])
    report = prune(store, RetentionSettings(max_age_days=30), now=NOW, batch=1)
    assert (report.by_age, report.by_count, report.pruned) == (2, 0, 2)
    assert keys(store, sid) == {"https://example.org/feed/0", "https://example.org/feed/1"}
    with store.engine.connect() as c:
        tomb = c.execute(select(TOMBSTONES.c.key, TOMBSTONES.c.uid)).all()
        orphans = c.scalar(
            select(func.count())
            .select_from(ENTRY_CATEGORIES)
            .where(~ENTRY_CATEGORIES.c.entry_id.in_(select(ENTRIES.c.id)))
        )
    assert {k for k, _ in tomb} == {"https://example.org/feed/2", "https://example.org/feed/3"}
    assert orphans == 0  # category links went with their entries
    # The feed still carries the old items: they stay out; a genuinely new item gets in.
    save(store, "feed", [entry("feed", i, d) for i, d in enumerate([1, 5, 40, 100])] + [entry("feed", 9, 0)])
    assert keys(store, sid) == {f"https://example.org/feed/{i}" for i in (0, 1, 9)}


def test_pruned_entries_take_their_index_keys_along(store: Store):
    from dataclasses import replace

    from aggregator import dedup
    from aggregator.config import Settings
    from aggregator.store.keyindex import TABLES as KEY_TABLES

    # Long, distinct bodies, so both have a signature: 25 band keys, a URL key and a text key each.
    text = ["".join(chr(0x4E00 + (i * 7919 + n * 104729) % 3000) for n in range(400)) for i in (1, 2)]
    save(
        store,
        "a",
        [replace(entry("a", i, d), content_html=f"<p>{t}</p>") for i, d, t in ((1, 40, text[0]), (2, 1, text[1]))],
    )
    ids = {r.key: r.id for r in store.listing(None, None)}
    old, new = ids["https://example.org/a/1"], ids["https://example.org/a/2"]
    dedup.run(store, Settings(), [old, new])
    recent, merged = KEY_TABLES[0], KEY_TABLES[3]
    with store.engine.begin() as c:  # the old entry's keys in a deeper level, the new one's in level 0
        c.execute(merged.insert().from_select(["key", "entry_id"], select(recent).where(recent.c.entry_id == old)))
        c.execute(recent.delete().where(recent.c.entry_id == old))
        before = {
            t.name: dict(c.execute(select(t.c.entry_id, func.count()).group_by(t.c.entry_id)).all())
            for t in (merged, recent)
        }
    assert before == {merged.name: {old: BANDS + 2}, recent.name: {new: BANDS + 2}}
    assert prune(store, RetentionSettings(max_age_days=30), now=NOW).pruned == 1
    with store.engine.connect() as c:
        left = sorted(r for t in KEY_TABLES for r in c.execute(select(t.c.entry_id)).scalars())
    assert left == [new] * (BANDS + 2)


def test_prune_by_count_keeps_newest_per_source(store: Store):
    a = save(store, "a", [entry("a", i, i) for i in range(5)])
    b = save(store, "b", [entry("b", i, i) for i in range(2)])
    report = prune(store, RetentionSettings(max_entries_per_source=2), now=NOW)
    assert report.by_count == 3
    assert keys(store, a) == {"https://example.org/a/0", "https://example.org/a/1"}
    assert len(keys(store, b)) == 2
    # Pruning again finds nothing more to do, and re-pruning an already tombstoned key is harmless.
    assert prune(store, RetentionSettings(max_entries_per_source=2), now=NOW).pruned == 0


def test_age_and_count_do_not_double_count(store: Store):
    save(store, "a", [entry("a", i, 10 * i) for i in range(6)])  # 0, 10, …, 50 days old
    found = plan(store, RetentionSettings(max_age_days=25, max_entries_per_source=2), NOW)
    old, excess = found.old, found.excess
    assert len(old) == 3 and len(excess) == 1 and not set(old) & set(excess)


def test_article_files_are_not_pruned_but_long_withdrawn_ones_are_forgotten(store: Store):
    sid = save(store, "files", [entry("files", i, 500) for i in range(3)], kind="files")
    ids = sorted(s.id for s in store.stamps(sid).values())
    store.withdraw(ids[:1], NOW - timedelta(days=60))
    store.withdraw(ids[1:2], NOW - timedelta(days=1))
    report = prune(store, RetentionSettings(max_age_days=30), now=NOW)
    assert (report.by_age, report.withdrawn) == (0, 1)
    assert len(keys(store, sid)) == 2
    with store.engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(TOMBSTONES)) == 0


def test_stop_between_batches(store: Store):
    sid = save(store, "feed", [entry("feed", i, 100) for i in range(5)])
    stop = threading.Event()
    stop.set()
    assert prune(store, RetentionSettings(max_age_days=1), now=NOW, stop=stop).pruned == 0
    assert len(keys(store, sid)) == 5


def test_upkeep_runs(store: Store):
    upkeep(store)  # PRAGMA optimize: must not raise on a fresh or a used database
    save(store, "feed", [entry("feed", 1, 1)])
    upkeep(store)
