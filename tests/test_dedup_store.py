"""The dedup stage against a real store (SQLite; PostgreSQL too with AGG_TEST_PG_URL): clusters, promotion,
re-evaluation, idempotence."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import reset_database
from sqlalchemy import delete, select, update

from aggregator import clustering, dedup, features
from aggregator.config import DedupSettings, Settings, Tuning
from aggregator.lsh import BAND, BANDS, index_keys, kind
from aggregator.model import Entry
from aggregator.store import DedupTransaction, KeyIndexShape, SchemaError, Store, database
from aggregator.store.keyindex import TABLES as KEY_TABLES
from aggregator.store.schema import ENTRIES
from tests.test_dedup import EN, PORT, PORT_RESULTS, html

T0 = datetime(2022, 9, 7, 2, 0, tzinfo=UTC)
URL = "http://news.example.cn/port/2022/0907/3391.html"
TITLE = "临江港三期码头明年三月试运营"
REPRINT = list(PORT)
REPRINT[3] = "有港航专家指出，随着中欧班列和西部陆海新通道持续扩容，港口辐射范围明显扩大，新增能力消化并不困难。"


PG_URL = os.environ.get("AGG_TEST_PG_URL")  # e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh store: SQLite always; PostgreSQL too when AGG_TEST_PG_URL names a scratch database."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path}/db/agg.sqlite3")
    else:
        if not PG_URL:
            pytest.skip("AGG_TEST_PG_URL not set")
        reset_database(PG_URL)
        s = Store(PG_URL)
    yield s
    s.close()


def settings(**dedup_settings) -> Settings:
    return Settings(dedup=DedupSettings(**dedup_settings))


def entry(key: str, title: str = TITLE, paras: list[str] = PORT, link: str | None = URL, **kw) -> Entry:
    kw.setdefault("published", T0)
    return Entry(
        source=kw.pop("source", "local"), key=key, title=title, content_html=html(paras), summary="", link=link, **kw
    )


class Site:
    """Entries saved per source, as the ingest stage does, with the ids dedup is told about."""

    def __init__(self, store: Store):
        self.store = store
        self.ids: dict[str, int] = {}

    def save(self, *entries: Entry) -> list[int]:
        touched: list[int] = []
        for source in sorted({e.source for e in entries}):
            sid = self.store.source_id(source, "files", f"/{source}")
            known = self.store.stamps(sid)
            mine = [e for e in entries if e.source == source]
            _, t = self.store.save_entries(sid, mine, known, datetime.now(UTC).replace(microsecond=0))
            touched += t
            self.ids.update({k: v.id for k, v in self.store.stamps(sid).items()})
        return touched

    def withdraw(self, source: str, key: str) -> list[int]:
        i = self.ids[key]
        self.store.withdraw([i], datetime.now(UTC))
        return [i]

    def state(self) -> dict[str, tuple]:
        """key → (key of the canonical entry or None, reason, score)."""
        e = ENTRIES
        with self.store.engine.connect() as c:
            rows = c.execute(select(e.c.id, e.c.key, e.c.canonical_id, e.c.dup_reason, e.c.dup_score)).all()
        keys = {i: k for i, k, *_ in rows}
        return {k: (keys.get(cid), r, s) for _, k, cid, r, s in rows}

    def shown(self) -> list[str]:
        return sorted(r.key for r in self.store.listing(None, None))


@pytest.fixture
def site(store: Store) -> Site:
    return Site(store)


@pytest.mark.parametrize("run_batch", [1000, 1, 2])
def test_copies_tracking_urls_and_reprints_collapse_same_topic_stays(
    site: Site, run_batch: int
) -> None:
    run = partial(dedup.run, batch=run_batch)  # decided in one step, or in many
    touched = site.save(
        entry("a.md"),
        entry("b.md", published=T0 + timedelta(minutes=1)),
        entry("c.md", link=URL + "?utm_source=wechat&utm_medium=share&spm=a1.b2", published=T0 + timedelta(minutes=5)),
        entry(
            "d.md",
            "【转载】" + TITLE,
            REPRINT,
            "http://other.example.com/a/889.html",
            published=T0 + timedelta(hours=5),
        ),
        entry("e.md", "临江港前三季度吞吐量增长6.8%", PORT_RESULTS, "http://news.example.cn/port/2022/0907/3392.html"),
        entry("f.md", "Harbor Logistics opens third terminal", EN, None),
    )
    report = run(site.store, settings(), touched)
    state = site.state()
    # a, b and c are versions of one page (one canonical URL): the latest-dated is shown.
    assert site.shown() == ["c.md", "e.md", "f.md"]
    assert state["a.md"][:2] == ("c.md", "url")
    assert state["b.md"][:2] == ("c.md", "url")
    assert state["d.md"][:2] == ("c.md", "near") and 0.6 <= state["d.md"][2] < 1
    assert report.examined == 6 and report.duplicates == 3 and report.computed == 6
    assert report.reasons == {"url": 2, "near": 1}


def test_exact_content_under_another_address(site: Site) -> None:
    touched = site.save(entry("a.md"), entry("wire-1", link="http://wire.example/1", source="wire"))
    dedup.run(site.store, settings(), touched)
    assert site.state()["wire-1"][:2] == ("a.md", "content")


def test_repeated_runs_change_nothing_and_compute_nothing(site: Site) -> None:
    touched = site.save(
        entry("a.md"),
        entry("b.md", link=URL + "#x"),
        entry("d.md", "【转载】" + TITLE, REPRINT, None),
        entry("f.md", "x", EN, None),
    )
    dedup.run(site.store, settings(), touched)
    first = site.state()
    again = dedup.run(site.store, settings(), [])
    assert again.examined == 0 and site.state() == first
    # Told about every entry again: the same clusters, features reused (once per version).
    again = dedup.run(site.store, settings(), list(site.ids.values()))
    assert again.examined == 4 and again.computed == 0 and site.state() == first


MIRROR_B, MIRROR_C = "http://mirror.example.com/b.html", "http://mirror.example.net/c.html"


def test_withdrawing_the_canonical_entry_promotes_the_next(site: Site) -> None:
    # Reprints under other URLs: the earliest published is shown.
    touched = site.save(
        entry("a.md"),
        entry("b.md", link=MIRROR_B, published=T0 + timedelta(hours=1)),
        entry("c.md", link=MIRROR_C + "?from=timeline", published=T0 + timedelta(hours=2)),
    )
    dedup.run(site.store, settings(), touched)
    assert site.shown() == ["a.md"]
    report = dedup.run(site.store, settings(), site.withdraw("local", "a.md"))
    assert site.shown() == ["b.md"]
    state = site.state()
    assert state["a.md"] == (None, None, None)
    assert state["c.md"][:2] == ("b.md", "content")
    assert report.examined == 3
    # It comes back: it is the earliest, so it is shown again.
    dedup.run(site.store, settings(), site.save(entry("a.md")))
    assert site.shown() == ["a.md"]
    assert site.state()["b.md"][0] == "a.md"


def test_deleting_the_canonical_entry_promotes_the_next(site: Site) -> None:
    """Retention deletes rows; the foreign key leaves members with a reason but no canonical."""
    touched = site.save(
        entry("a.md"),
        entry("b.md", link=MIRROR_B, published=T0 + timedelta(hours=1)),
        entry("c.md", link=MIRROR_C + "?from=x", published=T0 + timedelta(hours=2)),
    )
    dedup.run(site.store, settings(), touched)
    with site.store.engine.begin() as c:
        c.execute(delete(ENTRIES).where(ENTRIES.c.id == site.ids["a.md"]))
    assert len(site.shown()) == 2  # both orphans visible until dedup runs
    dedup.run(site.store, settings(), [])
    assert site.shown() == ["b.md"]
    assert site.state()["c.md"][0] == "b.md"
    # Its index keys are still stored (the deletion above bypassed retention, which drops
    # them): they offer a candidate that no longer loads, and nothing else happens.
    with site.store.engine.connect() as c:
        left = sum(len(c.execute(select(b.c.key).where(b.c.entry_id == site.ids["a.md"])).all()) for b in KEY_TABLES)
    assert left == BANDS + 2  # bands, URL key, text key
    later = entry("e.md", published=T0 + timedelta(hours=3))
    assert dedup.run(site.store, settings(), site.save(later)).duplicates == 1
    assert site.state()["e.md"][0] == "b.md"


def test_a_changed_member_is_re_evaluated_and_may_leave(site: Site) -> None:
    touched = site.save(entry("a.md", link=None), entry("d.md", "【转载】" + TITLE, REPRINT, None))
    dedup.run(site.store, settings(), touched)
    assert site.state()["d.md"][0] == "a.md"
    # d.md is rewritten into a different story.
    report = dedup.run(
        site.store, settings(), site.save(entry("d.md", "临江港前三季度吞吐量增长6.8%", PORT_RESULTS, None))
    )
    assert report.computed == 1
    assert site.shown() == ["a.md", "d.md"]


def test_a_changed_canonical_entry_hands_over_when_it_becomes_another_story(site: Site) -> None:
    touched = site.save(
        entry("a.md", link=None),
        entry("b.md", link=None, published=T0 + timedelta(hours=1)),
        entry("c.md", link=None, published=T0 + timedelta(hours=2)),
    )
    dedup.run(site.store, settings(), touched)
    assert site.shown() == ["a.md"]
    dedup.run(site.store, settings(), site.save(entry("a.md", "Harbor Logistics opens terminal", EN, None)))
    assert site.shown() == ["a.md", "b.md"]
    assert site.state()["c.md"][:2] == ("b.md", "content")


def test_an_updated_version_replaces_the_older(site: Site) -> None:
    touched = site.save(entry("feed-item-1", source="feed", updated=T0 + timedelta(hours=1)))
    dedup.run(site.store, settings(), touched)
    edited = [*PORT[:-1], PORT[-1] + "（本文已更新）"]
    touched = site.save(entry("feed-item-1-v2", paras=edited, source="feed", updated=T0 + timedelta(hours=6)))
    report = dedup.run(site.store, settings(), touched)
    assert site.shown() == ["feed-item-1-v2"]
    assert site.state()["feed-item-1"][:2] == ("feed-item-1-v2", "url")
    assert report.promoted == 0


def test_a_better_ranked_newcomer_takes_over_and_members_follow(site: Site) -> None:
    touched = site.save(
        entry("a.md", published=T0 + timedelta(hours=3)),
        entry("b.md", link=URL + "?spm=1", published=T0 + timedelta(hours=4)),
        entry("c.md", link=None, published=T0 + timedelta(hours=5)),
    )
    dedup.run(site.store, settings(), touched)
    assert site.shown() == ["b.md"]  # the later version of the page a.md also is
    dedup.run(site.store, settings(), site.save(entry("wire-1", link="http://wire.example/1", source="wire")))
    assert site.shown() == ["wire-1"]
    state = site.state()
    assert {state[k][0] for k in ("a.md", "b.md", "c.md")} == {"wire-1"}


def test_source_priority_and_settings_changes_re_cluster_everything(site: Site) -> None:
    touched = site.save(
        entry("a.md"), entry("wire-1", link="http://wire.example/1", source="wire", published=T0 + timedelta(hours=2))
    )
    dedup.run(site.store, settings(), touched)
    assert site.shown() == ["a.md"]
    report = dedup.run(site.store, settings(source_priority=["wire"]), [])
    assert site.shown() == ["wire-1"] and report.examined == 2 and report.computed == 0
    # New tracking parameters change the features: recomputed once, then reused.
    report = dedup.run(site.store, settings(source_priority=["wire"], tracking_params=["sharer"]), [])
    assert report.computed == 2 and site.shown() == ["wire-1"]
    assert dedup.run(site.store, settings(source_priority=["wire"], tracking_params=["sharer"]), []).examined == 0


def test_configured_tracking_params_collapse_links(site: Site) -> None:
    touched = site.save(entry("a.md", link=None, paras=EN), entry("b.md", "other", PORT_RESULTS, None))
    dedup.run(site.store, settings(), touched)
    a = entry("x.md", "One", ["short"], "http://e.com/story/1?sharer=42")
    b = entry("y.md", "Two", ["different"], "http://e.com/story/1?sharer=43")
    dedup.run(site.store, settings(tracking_params=["sharer"]), site.save(a, b))
    assert site.state()["y.md"][:2] == ("x.md", "url")
    dedup.run(site.store, settings(), [])
    assert site.state()["y.md"] == (None, None, None)


def test_pending_entries_are_caught_up_without_being_told(site: Site) -> None:
    site.save(entry("a.md"), entry("b.md", link=URL + "#p"))  # saved, dedup never told
    dedup.run(site.store, settings(), [])
    assert site.shown() == ["a.md"]
    with site.store.engine.connect() as c:
        assert c.scalar(select(ENTRIES.c.id).where(ENTRIES.c.dedup_pending.is_(True))) is None


def test_disable_shows_everything_and_re_enabling_re_clusters(site: Site) -> None:
    dedup.run(site.store, settings(), site.save(entry("a.md"), entry("b.md", link=URL + "#p")))
    assert site.shown() == ["a.md"]
    dedup.disable(site.store)
    assert site.shown() == ["a.md", "b.md"]
    assert dedup.run(site.store, settings(), []).examined == 2
    assert site.shown() == ["a.md"]


def test_short_and_empty_bodies_are_not_merged_by_content(site: Site) -> None:
    touched = site.save(
        entry("a", "Apple opens store in Paris", ["Read more on our site."], None),
        entry("b", "Storm closes schools", ["Read more on our site."], None),
        entry("c", "Council votes on budget", [], None),
        entry("d", "Team wins final", [], None),
    )
    dedup.run(site.store, settings(), touched)
    assert site.shown() == ["a", "b", "c", "d"]


def test_clusters_lists_canonical_and_members(site: Site) -> None:
    touched = site.save(
        entry("a.md"),
        entry("c.md", link=URL + "?utm_source=x", published=T0 - timedelta(minutes=5)),  # an older version
        entry(
            "d.md",
            "【转载】" + TITLE,
            REPRINT,
            "http://other.example.com/a/889.html",
            published=T0 + timedelta(hours=5),
        ),
        entry("f.md", "x", EN, None),
    )
    dedup.run(site.store, settings(), touched)
    found = dedup.clusters(site.store)
    assert len(found) == 1
    c = found[0]
    assert (c.canonical.key, c.canonical.title, c.canonical.source) == ("a.md", TITLE, "local")
    assert [(m.key, m.reason) for m in c.members] == [("c.md", "url"), ("d.md", "near")]
    assert c.members[0].describe().split() == ["url", "local:", "c.md"]
    assert c.members[1].describe().startswith("near 0.")


def test_incremental_run_only_makes_indexed_lookups(site: Site) -> None:
    """No pairwise scan: every query an incremental run makes on entries or bands uses an index."""
    if site.store.engine.dialect.name != "sqlite":
        pytest.skip("reads SQLite query plans")
    from sqlalchemy import event

    dedup.run(
        site.store, settings(), site.save(*(entry(f"{i}.md", f"t{i}", EN[i:] + PORT[i:], None) for i in range(4)))
    )
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not executemany:
            seen.append((statement, parameters))

    event.listen(site.store.engine, "before_cursor_execute", capture)
    try:
        touched = site.save(entry("a.md"), entry("b.md", link=URL + "#p"))
        touched += site.withdraw("local", "1.md")
        dedup.run(site.store, settings(), touched)
        dedup.clusters(site.store)
    finally:
        event.remove(site.store.engine, "before_cursor_execute", capture)
    assert site.shown() == ["0.md", "2.md", "3.md", "a.md"]
    lookups = [(q, p) for q, p in seen if "FROM entries" in q or "FROM dedup_keys" in q]
    assert len(lookups) >= 6
    with site.store.engine.connect() as c:
        for q, params in lookups:
            plan = " ".join(str(r[-1]) for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + q, params))
            assert "SCAN entries" not in plan and "SCAN dedup_keys" not in plan, (q, plan)


def test_key_lookups_are_one_statement_text_whatever_the_keys(site: Site) -> None:
    """The drivers keep statements prepared by their text (sqlite3: 128 per connection). Keys
    written into the text made every batch's lookup a statement of its own, so a cold dedup's
    memory grew with the corpus; with the keys as a parameter the texts repeat."""
    from sqlalchemy import event

    touched = site.save(*(entry(f"{i}.md", f"t{i}", EN[i % 7 :] + PORT[i % 5 :], f"{URL}?n={i}") for i in range(12)))
    texts: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        texts.append(statement)

    event.listen(site.store.engine, "before_cursor_execute", capture)
    try:
        dedup.run(site.store, settings(), touched, batch=2)  # six batches, each its own keys
    finally:
        event.remove(site.store.engine, "before_cursor_execute", capture)
    lookups = [t for t in texts if "key_lookup" in t]
    assert len(lookups) >= 6 * 3  # each batch creates, empties and fills the table, then reads it
    assert len(set(lookups)) <= 4, sorted(set(lookups))


def test_run_is_one_transaction(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure half-way leaves the clusters as they were and the entries still pending."""
    touched = site.save(entry("a.md"), entry("b.md", link=URL + "#p"))

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(DedupTransaction, "write", boom)  # the decision cannot be stored
    with pytest.raises(RuntimeError):
        dedup.run(site.store, settings(), touched)
    assert site.shown() == ["a.md", "b.md"]
    with site.store.engine.connect() as c:
        assert c.scalar(select(ENTRIES.c.minhash).where(ENTRIES.c.key == "a.md")) is None
    monkeypatch.undo()
    dedup.run(site.store, settings(), [])
    assert site.shown() == ["a.md"]


def test_unknown_state_rows_are_replaced(site: Site) -> None:
    from aggregator.store.schema import DEDUP_STATE

    dedup.run(site.store, settings(), site.save(entry("a.md")))
    with site.store.engine.begin() as c:
        c.execute(update(DEDUP_STATE).values(value="stale"))
    assert dedup.run(site.store, settings(), []).computed == 1


def test_a_withdrawn_entry_keeps_its_bands_through_a_recompute(site: Site) -> None:
    dedup.run(
        site.store, settings(), site.save(entry("a.md", link=None), entry("d.md", "【转载】" + TITLE, REPRINT, None))
    )
    dedup.run(site.store, settings(), site.withdraw("local", "d.md"))
    # New settings: every entry's features are recomputed, the withdrawn one's too.
    assert dedup.run(site.store, settings(tracking_params=["x"]), []).computed == 2
    dedup.run(site.store, settings(tracking_params=["x"]), site.save(entry("d.md", "【转载】" + TITLE, REPRINT, None)))
    assert site.state()["d.md"][:2] == ("a.md", "near")
    assert len(_bands(site.store)["d.md"]) == BANDS


def test_the_shown_entry_borrows_the_categories_of_its_duplicates(site: Site) -> None:
    def cats(key: str) -> list[str]:
        return sorted(c.name for c in site.store.entry_categories([site.ids[key]])[site.ids[key]])

    def listed(category: str) -> list[str]:
        cid = next(c.id for c in site.store.categories() if c.name == category)
        return sorted(r.key for r in site.store.listing(cid, None))

    touched = site.save(
        entry("a.md", categories=("港口",)),
        entry("wire-1", link=URL + "?from=x", source="wire", categories=("财经", "港口")),
        entry("wire-2", "Harbor Logistics opens terminal", EN, None, source="wire", categories=("财经",)),
    )
    dedup.run(site.store, settings(), touched)
    assert cats("a.md") == ["港口", "财经"] and listed("财经") == ["a.md", "wire-2"]
    # The shown entry changes: what it owns stays, what it borrowed is recomputed.
    dedup.run(site.store, settings(), site.save(entry("a.md", paras=[*PORT, "补充一句。"], categories=("港口",))))
    assert cats("a.md") == ["港口", "财经"]
    # Priority hands the cluster to the wire entry: a.md gives the borrowed category back.
    dedup.run(site.store, settings(source_priority=["wire"]), [])
    assert cats("a.md") == ["港口"] and cats("wire-1") == ["港口", "财经"]
    assert listed("港口") == ["wire-1"] and listed("财经") == ["wire-1", "wire-2"]
    dedup.run(site.store, settings(), [])
    assert cats("a.md") == ["港口", "财经"] and cats("wire-1") == ["港口", "财经"]
    # The duplicate leaves: so does its category.
    dedup.run(site.store, settings(), site.withdraw("wire", "wire-1"))
    assert cats("a.md") == ["港口"] and listed("财经") == ["wire-2"]
    # Back, as a new version: it says when it was updated, or the store would stamp it now, and
    # whether it outranked a.md (stamped at its own edit above) would depend on the clock.
    back = entry("wire-1", link=URL, source="wire", categories=("财经", "港口"), updated=T0 + timedelta(minutes=1))
    dedup.run(site.store, settings(), site.save(back))
    assert cats("a.md") == ["港口", "财经"]
    dedup.disable(site.store)
    assert cats("a.md") == ["港口"] and listed("财经") == ["wire-1", "wire-2"]


def test_a_stale_record_of_a_borrowed_category_is_repaired(site: Site) -> None:
    from aggregator.store.schema import ENTRY_CATEGORIES

    touched = site.save(entry("a.md", categories=("港口",)), entry("b.md", link=URL + "#x", categories=("财经",)))
    dedup.run(site.store, settings(), touched)
    with site.store.engine.begin() as c:  # as if the store had rewritten a.md's categories
        c.execute(delete(ENTRY_CATEGORIES).where(ENTRY_CATEGORIES.c.entry_id == site.ids["a.md"]))
    dedup.run(site.store, settings(), [site.ids["a.md"]])
    assert sorted(c.name for c in site.store.entry_categories([site.ids["a.md"]])[site.ids["a.md"]]) == ["财经"]


def _keys(store: Store, tables=KEY_TABLES) -> dict[str, set[int]]:
    """Entry key → its keys in the dedup index, in any level's table (or those of `tables`)."""
    e = ENTRIES
    out: dict[str, set[int]] = {}
    with store.engine.connect() as c:
        for b in tables:
            for key, k in c.execute(select(e.c.key, b.c.key).join(b, b.c.entry_id == e.c.id)):
                out.setdefault(key, set()).add(k)
    return out


def _bands(store: Store, tables=KEY_TABLES) -> dict[str, set[int]]:
    """Entry key → its LSH band keys in the dedup index."""
    found = {key: {k for k in ks if kind(k) == BAND} for key, ks in _keys(store, tables).items()}
    return {key: ks for key, ks in found.items() if ks}


def test_features_from_the_parse_workers_give_the_same_clusters(store: Store, tmp_path: Path):
    """Article files parsed in worker processes arrive with their features and bands computed;
    dedup must then decide exactly as when it computes them itself, and an edit must replace
    the stored bands."""
    from dataclasses import replace

    def computed(e: Entry) -> Entry:
        return replace(e, features=features.features(e.link, e.content_html))

    batch = [
        entry("a.md"),
        entry("b.md", source="wire", link=URL + "?utm_source=feed"),
        entry("c.md", "【转载】" + TITLE, REPRINT, link=None, source="wire"),
        entry("d.md", "临江港口集团发布上半年业绩", PORT_RESULTS, link="http://news.example.cn/port/results.html"),
    ]
    reference = Store(f"sqlite:///{tmp_path}/reference.sqlite3")
    ref = Site(reference)
    dedup.run(reference, settings(), ref.save(*batch))

    site = Site(store)
    report = dedup.run(store, settings(), site.save(*map(computed, batch)))
    assert report.computed == 0, "nothing left to compute"
    assert site.state() == ref.state() and site.state()["c.md"][1] == "near"
    assert _keys(store) == _keys(reference) and len(_bands(store)["a.md"]) == BANDS
    assert len(_keys(store)["a.md"]) == BANDS + 2  # and its URL key and text key

    edit = entry(
        "d.md",
        "临江港口集团发布上半年业绩",
        [*PORT_RESULTS, "新增一段。"],
        link="http://news.example.cn/port/results.html",
    )
    dedup.run(reference, settings(), ref.save(edit))
    dedup.run(store, settings(), site.save(computed(edit)))
    assert _keys(store) == _keys(reference) and site.state() == ref.state()
    reference.close()


def test_ingest_workers_compute_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from aggregator.config import load_config
    from aggregator.pipeline import ingest
    folder = tmp_path / "articles"
    folder.mkdir()
    for name, title, paras in (("a.md", TITLE, PORT), ("b.md", "【转载】" + TITLE, REPRINT)):
        body = "\n\n".join(paras)
        (folder / name).write_text(f"---\ntitle: {title}\ndate: 2022-09-07\n---\n{body}\n", encoding="utf-8")
    (tmp_path / "config.toml").write_text(
        '[database]\nurl = "sqlite:///agg.sqlite3"\n[[sources]]\nname = "local"\npath = "articles"\n', encoding="utf-8"
    )
    cfg = load_config(tmp_path / "config.toml")
    cfg = cfg.model_copy(update={"tuning": Tuning(read_parallel_min=0)})  # the worker path, as for a big folder
    store = Store(cfg.database.url)
    try:
        touched = ingest(store, cfg).touched
        e = ENTRIES
        with store.engine.connect() as c:
            rows = c.execute(select(e.c.key, e.c.version, e.c.dedup_version, e.c.content, e.c.fingerprint)).all()
        for key, version, dedup_version, content, fp in rows:
            assert dedup_version == version and fp == features.features(None, content).fingerprint, key
        assert dedup.run(store, cfg, touched).computed == 0
        assert Site(store).shown() == ["a.md"]
    finally:
        store.close()


def test_band_keys_move_down_the_levels_and_match_in_any(site: Site, request: pytest.FixtureRequest) -> None:
    """New band keys go to level 0; a run merges a level that outgrew its size into the next
    (swapping tables when that one is empty), and keeps a filter of every level below 0; a
    near-duplicate is found whichever level either side's keys are in, and an entry's new
    version takes its keys out of every level."""
    from aggregator.store import keyindex

    def levels() -> dict[int, tuple[int, int, keyindex.BloomFilter | None]]:
        """level → (slot, keys, filter)"""
        with site.store.engine.connect() as c:
            rows = c.execute(select(keyindex.LEVELS)).all()
        return {r.level: (r.slot, r.size, r.bits and keyindex.BloomFilter.from_bytes(r.bits)) for r in rows}

    def at(level: int) -> set[str]:
        return set(_keys(site.store, [KEY_TABLES[levels()[level][0]]]))

    def holds_all(level: int) -> bool:
        _, _, f = levels()[level]
        keys = [k for ks in _keys(site.store, [KEY_TABLES[levels()[level][0]]]).values() for k in ks]
        return f is not None and bool(f.may_hold(np.array(keys, dtype=np.uint64)).all())

    per_entry = BANDS + 1  # these entries have no link: their bands and their text key
    # Level 0 holds more than one entry's keys, level 1 60, level 2 120.
    site.store = Store(site.store.url, key_shape=KeyIndexShape(level0_keys=30, ratio=2))
    request.addfinalizer(site.store.close)
    dedup.run(site.store, settings(), site.save(entry("a.md", link=None)))
    assert at(0) == {"a.md"} and levels()[0][1] == per_entry and levels()[1][1] == 0

    # A second entry's keys push level 0 over its size; level 1 is empty, so the two tables
    # trade places instead of moving rows, and level 1 gets its filter.
    slot0 = levels()[0][0]
    dedup.run(site.store, settings(), site.save(entry("b.md", "Harbor Logistics opens terminal", EN, None)))
    assert levels()[1][0] == slot0 and levels()[1][1] == 2 * per_entry and levels()[0][1] == 0
    assert at(1) == {"a.md", "b.md"} and not at(0) and holds_all(1) and levels()[0][2] is None

    # The reprint's keys are in level 0, the original's in level 1, found through its filter.
    dedup.run(site.store, settings(), site.save(entry("d.md", "【转载】" + TITLE, REPRINT, None)))
    assert at(0) == {"d.md"}
    assert site.state()["d.md"][:2] == ("a.md", "near")

    # More keys: level 0 is merged into level 1, row by row this time, which then outgrows its
    # 60 keys and trades places with the empty level 2.
    dedup.run(site.store, settings(), site.save(entry("f.md", "Port of Linjiang adds berths", EN[1:], None)))
    assert not at(0) and not at(1) and at(2) == {"a.md", "b.md", "d.md", "f.md"} and holds_all(2)
    assert levels()[2][1] == 4 * per_entry and levels()[1][2] is None

    # Four more: level 1 is merged into level 2, which outgrows the filter it came with (made
    # again, for all its keys) and then its 120 keys: it moves to level 3 as a whole.
    capacity = levels()[2][2].capacity
    for i in range(4):
        dedup.run(site.store, settings(), site.save(entry(f"t{i}.md", f"t{i}", EN[i + 2 :] + PORT[i:], None)))
    assert not at(0) and not at(1) and not at(2) and len(at(3)) == 8 and levels()[3][1] == 8 * per_entry
    assert capacity < 8 * per_entry <= levels()[3][2].capacity and holds_all(3)

    # A new version of the original: its old keys leave level 2, the new ones are stored, and
    # the reprint is found from it.
    old = _keys(site.store)["a.md"]
    touched = site.save(entry("a.md", paras=[*PORT, "补充一句。"], link=None, published=T0 + timedelta(hours=5)))
    dedup.run(site.store, settings(), touched)
    new = _keys(site.store)["a.md"]
    assert len(new) == per_entry and new != old
    assert site.state()["a.md"][:2] == ("d.md", "near")


def test_digests_stored_as_text_by_an_older_database_read_back_as_numbers() -> None:
    """A SQLite database created when the digests were hex strings has text columns: the
    integers now written there come back as decimal text, and must still equal new digests."""
    from aggregator.store.schema import Digest

    digest = features.url_key(features.canonical_url("http://e.com/a/1"))
    assert isinstance(digest, int)
    assert Digest().process_result_value(str(digest), None) == digest
    assert Digest().process_result_value(digest, None) == digest
    assert Digest().process_result_value("9f86d081884c7d659a2feaa0c55ad015", None) is None  # an old hex digest
    assert Digest().process_result_value(None, None) is None


def test_a_band_shared_by_chance_offers_no_candidate(site: Site) -> None:
    """Unrelated texts share an LSH band now and then, the more often the bigger the store: such
    a pair is dropped on the two signatures, before entries are loaded and compared, while a
    reprint (which shares bands because it is alike) stays a candidate."""
    dedup.run(site.store, settings(), site.save(entry("port.md", link=None)))
    dedup.run(site.store, settings(), site.save(entry("reprint.md", "【转载】" + TITLE, REPRINT, None)))
    dedup.run(site.store, settings(), site.save(entry("harbor.md", "Harbor Logistics opens terminal", EN, None)))
    port, reprint, harbor = (site.ids[k] for k in ("port.md", "reprint.md", "harbor.md"))
    with site.store.dedup_transaction() as tx:
        items = tx.load([port, reprint, harbor])
        # The accident: one of the port story's band keys stored for the unrelated harbor story too.
        tx.insert_keys([(index_keys(None, None, items[port].signature)[0], harbor)])
    decide = {port: items[port]}
    with site.store.dedup_transaction() as tx:
        found = tx.shared_keys([(k, port) for k in clustering.index_keys(decide)[port]])
    exact, by_band = clustering.offered(found, decide, set())
    assert by_band == {port: {reprint, harbor}}  # the shared band did offer it
    signatures = {i: it.signature for i, it in items.items()}
    assert clustering.with_near(exact, by_band, decide, signatures, 0.6) == {port: [reprint]}
    assert clustering.with_near(exact, by_band, decide, signatures, 0.0) == {port: sorted([reprint, harbor])}
    # And the stage: the port story, decided again, joins only its reprint's cluster.
    with site.store.engine.begin() as c:
        c.execute(update(ENTRIES).values(dedup_pending=True))
    dedup.run(site.store, settings(), [port])
    state = site.state()
    assert state["harbor.md"][:2] == (None, None)
    assert {state["port.md"][0], state["reprint.md"][0]} in ({None, "port.md"}, {None, "reprint.md"})


def test_the_index_tables_of_an_older_database_are_dropped_and_its_entries_indexed_again(tmp_path: Path) -> None:
    """Databases made before 2026-12-04 hold the band keys in other tables, and index the URL
    and text digests on the entries table: `db upgrade` drops those, and the next run computes every entry's
    features again (ALGORITHM), which fills the key index, URL and text keys included."""
    from sqlalchemy import inspect

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    store = Store(url)
    site = Site(store)
    dedup.run(store, settings(), site.save(entry("a.md")))
    with store.engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE minhash_bands (key BIGINT, entry_id INTEGER, PRIMARY KEY (key, entry_id))")
        c.exec_driver_sql("CREATE TABLE lsh_bands_0 (key BIGINT, entry_id INTEGER, PRIMARY KEY (key, entry_id))")
        c.exec_driver_sql("CREATE INDEX ix_entries_url_key ON entries (url_key)")
        c.exec_driver_sql("CREATE INDEX ix_entries_fingerprint ON entries (fingerprint)")
        for t in KEY_TABLES:
            c.execute(t.delete())  # as if they were new: the keys were in the old tables
        c.exec_driver_sql("UPDATE dedup_state SET value = 'older' WHERE name IN ('features', 'decisions')")
        c.exec_driver_sql("DROP TABLE alembic_version")  # as 0.1 left it: no numbered migrations
    store.close()
    with pytest.raises(SchemaError, match="aggregator db upgrade"):
        Store(url)
    database.upgrade(url)
    site.store = store = Store(url)
    try:
        tables = inspect(store.engine).get_table_names()
        assert "minhash_bands" not in tables and "lsh_bands_0" not in tables
        assert {i["name"] for i in inspect(store.engine).get_indexes("entries")}.isdisjoint(
            {"ix_entries_url_key", "ix_entries_fingerprint"}
        )
        assert dedup.run(store, settings(), []).computed == 1
        assert len(_keys(store)["a.md"]) == BANDS + 2
        # Found again by each layer: a copy of it under another URL (text key), the same URL with
        # tracking parameters and an added paragraph (URL key), a reprint (bands).
        dedup.run(
            store,
            settings(),
            site.save(
                entry("copy.md", link="http://other.example.com/copy.html", source="wire"),
                entry("trk.md", paras=[*PORT, "另一段。"], link=URL + "?utm_source=x", source="wire"),
                entry("b.md", "【转载】" + TITLE, REPRINT, None, source="wire"),
            ),
        )
        state = site.state()
        assert [state[k][:2] for k in ("copy.md", "trk.md", "b.md")] == [
            ("a.md", "content"),
            ("a.md", "url"),
            ("a.md", "near"),
        ]
    finally:
        store.close()


def test_keys_stored_with_new_entries_are_merged_down_as_level_0_fills(store: Store) -> None:
    """The ingest stores the keys of the features its workers computed; level 0 is merged into
    the next level as it fills, not only when a dedup run ends (a cold start would otherwise
    pile every key of the corpus into level 0)."""
    from dataclasses import replace

    from aggregator.store import keyindex

    small = Store(store.url, key_shape=KeyIndexShape(level0_keys=60, ratio=2))
    try:
        site, patterns = Site(small), features.tracking_patterns(())
        stored = 0
        for i in range(6):
            e = entry(f"k{i}.md", f"t{i}", EN[i:] + PORT[i:], f"http://e.test/{i}")
            f = features.features(e.link, e.content_html, patterns)
            site.save(replace(e, features=f))
            stored += len(f.keys)
            with small.engine.connect() as c:
                sizes = {r.level: r.size for r in c.execute(select(keyindex.LEVELS))}
            assert sizes[0] <= 60 and sum(sizes.values()) == stored, sizes
        assert stored > 2 * 60
    finally:
        small.close()
