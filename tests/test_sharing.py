"""`sharing.count_shared`, the counting behind candidate lookup, against a plain reading of its rule."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.lsh import BAND, KEY_BITS, TEXT_SPACE, URL_SPACE, kind
from aggregator.sharing import Sharing, count_shared


def reference(probe: list[tuple[int, int]], held: list[tuple[int, int]], holders: int) -> Counter:
    """Each key offers its `holders` newest distinct holders (probing rows included); every
    probing row counts one shared key of its kind with each of them but itself."""
    found: dict[int, set[int]] = {}
    for k, i in [*probe, *held]:
        found.setdefault(k, set()).add(i)
    newest = {k: sorted(ids, reverse=True)[:holders] for k, ids in found.items()}
    pairs: Counter = Counter()
    for k, i in probe:
        for j in newest[k]:
            if j != i:
                pairs[i, j, kind(k)] += 1
    return pairs


def pairs(got: Sharing) -> dict[tuple[int, int, int], int]:
    """(entry, other, kind) → count."""
    cols = (got.entry.tolist(), got.other.tolist(), got.kind.tolist(), got.count.tolist())
    return {(i, j, k): n for i, j, k, n in zip(*cols, strict=True)}


def key(space: int, n: int) -> int:
    return (space << KEY_BITS) | n


keys = st.builds(key, st.sampled_from([0, 1, 24, URL_SPACE, TEXT_SPACE]), st.integers(0, 5))
ids = st.integers(1, 40)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys, ids), max_size=60), st.lists(st.tuples(keys, ids), max_size=60), st.integers(1, 4))
def test_pairs_are_counted_as_the_rule_says(probe, held, holders):
    probed = {k for k, _ in probe}
    held = [(k, i) for k, i in held if k in probed]  # the index answers only for keys asked
    got = count_shared(
        np.array([k for k, _ in probe], dtype=np.uint64), np.array([i for _, i in probe], dtype=np.int64),
        np.array([k for k, _ in held], dtype=np.uint64), np.array([i for _, i in held], dtype=np.int64),
        holders,
    )  # fmt: skip
    assert pairs(got) == reference(probe, held, holders)
    # Ordered by entry, then most shared, then newest.
    rows = list(zip(got.entry.tolist(), (-got.count).tolist(), (-got.other).tolist(), strict=True))
    assert rows == sorted(rows)


def test_a_key_many_entries_hold_offers_only_its_newest_holders():
    boiler = key(3, 7)
    got = count_shared(
        np.array([boiler], dtype=np.uint64), np.array([1000], dtype=np.int64),
        np.array([boiler] * 500, dtype=np.uint64), np.arange(500, dtype=np.int64),
    )  # fmt: skip
    # The twelve newest: the probing entry itself, then 499 down to 489.
    assert sorted(got.other.tolist()) == list(range(489, 500))
    assert set(got.kind.tolist()) == {BAND}
