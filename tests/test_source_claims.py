"""Fetch workers' claims on sources (`store.leases`): the rule as a pure function, the claim's
SQL held to it on both databases, and claimers side by side never taking the same source."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from aggregator.store import Store, claimable, lease_lapsed
from aggregator.store.schema import SOURCES

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PAST, FUTURE = NOW - timedelta(seconds=30), NOW + timedelta(seconds=30)


def test_a_lease_lapses_at_its_expiry() -> None:
    assert lease_lapsed(None, NOW)
    assert lease_lapsed(NOW, NOW) and lease_lapsed(PAST, NOW)
    assert not lease_lapsed(FUTURE, NOW)


def test_claimable_when_enabled_due_and_not_claimed() -> None:
    assert claimable(None, None, None, NOW)  # never fetched
    assert claimable(PAST, None, PAST, NOW)  # due, and a dead worker's claim lapsed
    assert not claimable(FUTURE, None, None, NOW)  # fetched recently
    assert not claimable(PAST, "410 Gone", None, NOW)  # disabled
    assert not claimable(PAST, None, FUTURE, NOW)  # another worker is on it


CASES = list(itertools.product([None, PAST, NOW, FUTURE], [None, "gone"], [None, PAST, FUTURE]))


def _grid(store: Store) -> dict[str, tuple]:
    """One source per case of (next_due, disabled, lease_expires)."""
    names = {f"s{i:02d}": case for i, case in enumerate(CASES)}
    rows = store.feed_sources({n: f"http://example.org/{n}.xml" for n in names})
    t = SOURCES
    with store.engine.begin() as c:
        for name, (due, disabled, lease) in names.items():
            holder = "other" if lease else None
            values = {"next_due": due, "disabled": disabled, "lease_expires": lease, "lease_holder": holder}
            c.execute(update(t).where(t.c.id == rows[name].id).values(**values))
    return names


def test_the_claim_takes_exactly_the_claimable_sources(db_url: str) -> None:
    store = Store(db_url)
    try:
        names = _grid(store)
        got = store.claim_sources([*names, "not-stored"], "w1", NOW, FUTURE, most=1000)
        assert sorted(got) == sorted(n for n, case in names.items() if claimable(*case, NOW))
        assert all(store.claims()[n] == ("w1", FUTURE) for n in got)
        assert store.claim_sources(names, "w2", NOW, FUTURE, most=1000) == []  # all taken now
    finally:
        store.close()


def test_claims_are_renewed_and_released_by_their_holder_only(db_url: str) -> None:
    store = Store(db_url)
    try:
        names = [f"f{i}" for i in range(6)]
        store.feed_sources({n: f"http://example.org/{n}.xml" for n in names})
        first = store.claim_sources(names, "w1", NOW, FUTURE, most=2)
        assert len(first) == 2
        later = FUTURE + timedelta(minutes=1)
        assert store.renew_claims("w1", later) == 2
        store.release_claims("w2")  # not w2's: nothing happens
        assert {n: h for n, (h, _) in store.claims().items()} == {n: "w1" for n in first}
        assert all(until == later for _, until in store.claims().values())
        store.release_claims("w1", first[:1])
        assert set(store.claims()) == set(first[1:])
        assert sorted(store.claim_sources(names, "w2", NOW, FUTURE, most=10)) == sorted(set(names) - set(first[1:]))
        # A dead worker's claim, once lapsed, is taken over.
        assert store.claim_sources(names, "w3", later + timedelta(seconds=1), later + timedelta(minutes=1), 10)
    finally:
        store.close()


def test_next_claimable_is_the_earliest_due_time_or_claim_end(db_url: str) -> None:
    store = Store(db_url)
    try:
        assert store.next_claimable(["a"], NOW) is None  # nothing stored
        rows = store.feed_sources({"a": "http://example.org/a.xml", "b": "http://example.org/b.xml"})
        assert store.next_claimable(["a", "b"], NOW) == NOW  # never fetched
        store.save_feed_states([{"id": rows["a"].id, "next_due": FUTURE}, {"id": rows["b"].id, "next_due": FUTURE}])
        assert store.next_claimable(["a", "b"], NOW) == FUTURE
        store.save_feed_states([{"id": rows["b"].id, "next_due": PAST}])
        store.claim_sources(["b"], "w1", NOW, NOW + timedelta(seconds=10), 1)
        assert store.next_claimable(["a", "b"], NOW) == NOW + timedelta(seconds=10)
    finally:
        store.close()


def test_claimers_side_by_side_never_take_the_same_source(db_url: str) -> None:
    store = Store(db_url)
    try:
        names = [f"f{i:03d}" for i in range(120)]
        store.feed_sources({n: f"http://example.org/{n}.xml" for n in names})
        got: dict[str, list[str]] = {f"w{k}": [] for k in range(4)}
        gate = threading.Barrier(len(got))

        def claimer(me: str) -> None:
            gate.wait()
            while batch := store.claim_sources(names, me, NOW, FUTURE, most=5):
                got[me] += batch

        threads = [threading.Thread(target=claimer, args=(w,)) for w in got]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        claimed = [n for batch in got.values() for n in batch]
        assert sorted(claimed) == names  # each exactly once
    finally:
        store.close()
