"""The band index's Bloom filter (pure); the index itself is exercised through dedup in test_dedup_store."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from aggregator.store.keyindex import BloomFilter, capacity


def keys(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**63, size=n, dtype=np.uint64)


def test_a_filter_holds_every_key_added_and_few_others():
    stored, others = keys(200_000, 1), keys(200_000, 2)
    f = BloomFilter.empty(len(stored)).with_keys(stored)
    assert f.capacity >= len(stored)
    assert f.may_hold(stored).all()  # never a false negative: that would lose a duplicate
    assert f.may_hold(others).mean() < 0.02  # ≈ 1 % at capacity


def test_adding_keys_makes_a_new_filter_and_the_bytes_round_trip():
    empty = BloomFilter.empty(1000)
    f = empty.with_keys(keys(1000, 3))
    assert not empty.words.any() and f.words.any()
    again = BloomFilter.from_bytes(f.to_bytes())
    assert np.array_equal(again.words, f.words)
    assert again.may_hold(keys(1000, 3)).all()


def test_levels_grow_by_the_ratio_and_the_last_has_no_limit():
    sizes = [capacity(n) for n in range(6)]
    assert sizes[-1] is None
    assert all(b == 8 * a for a, b in pairwise(sizes[:-1]))
