"""Which entries share dedup index keys, and how many: the counting behind candidate lookup.

A pure function over arrays (numpy), so that its cost is a few array passes per batch rather
than a Python step per shared key: a boilerplate-heavy batch shares up to HOLDERS entries on
each of its ~27 keys per entry, a few million pairs per cold start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .lsh import BAND, KEY_BITS, URL_SPACE

if TYPE_CHECKING:
    import numpy as np

HOLDERS = 12  # entries a key offers at most (the newest holding it): bounds the work per key


class Sharing(NamedTuple):
    """(entry, other, kind, count): `entry` shares `count` keys of `lsh.kind` `kind` with
    `other`. Sorted by entry, then count (most first), then other (newest first)."""

    entry: np.ndarray
    other: np.ndarray
    kind: np.ndarray
    count: np.ndarray


def count_shared(probe_keys: np.ndarray, probe_ids: np.ndarray, held_keys: np.ndarray, held_ids: np.ndarray,
                 holders: int = HOLDERS) -> Sharing:  # fmt: skip
    """Per pair of an entry probing a key and another entry holding it, the keys they share.

    `probe_keys`/`probe_ids`: (key, entry id) of the entries asking; `held_keys`/`held_ids`:
    (key, entry id) of the holders found (the probing rows count as holders too, so that the
    entries of one batch find each other). Each key offers only its `holders` newest (highest
    id) distinct holders, however many hold it; an entry never shares with itself."""
    import numpy as np

    probe_keys = np.asarray(probe_keys, dtype=np.uint64)
    probe_ids = np.asarray(probe_ids, dtype=np.int64)
    keys, inverse = np.unique(probe_keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    all_keys = np.concatenate([probe_keys, np.asarray(held_keys, dtype=np.uint64)])
    all_ids = np.concatenate([probe_ids, np.asarray(held_ids, dtype=np.int64)])
    slot = np.searchsorted(keys, all_keys)  # held keys are among the probed ones
    known = slot < len(keys)
    known[known] = keys[slot[known]] == all_keys[known]
    # Distinct (key slot, holder) pairs, ordered by slot then holder ascending.
    code = np.unique((slot[known].astype(np.uint64) << np.uint64(32)) | all_ids[known].astype(np.uint64))
    h_slot = (code >> np.uint64(32)).astype(np.int64)
    h_id = (code & np.uint64(0xFFFFFFFF)).astype(np.int64)
    # Keep the newest `holders` of each slot: those within `holders` of the slot's end.
    ends = np.cumsum(np.bincount(h_slot, minlength=len(keys)))
    keep = ends[h_slot] - np.arange(len(h_slot)) <= holders
    h_slot, h_id = h_slot[keep], h_id[keep]
    counts = np.bincount(h_slot, minlength=len(keys))
    starts = np.cumsum(counts) - counts
    # Every probing row joined with its key's holders.
    per_row = counts[inverse]
    row = np.repeat(np.arange(len(probe_ids)), per_row)
    offset = np.arange(len(row)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    other = h_id[starts[inverse[row]] + offset]
    entry = probe_ids[row]
    space = (probe_keys[row] >> np.uint64(KEY_BITS)).astype(np.int64)
    kind = np.where(space >= URL_SPACE, space - (URL_SPACE - 1), 0)  # 0: a band, 1: URL, 2: text
    mine = other != entry
    entry, other, kind = entry[mine], other[mine], kind[mine]
    # Count each (entry, other, kind) as one 64-bit code: ids below 2**31, two bits of kind.
    u64 = np.uint64
    code = (entry.astype(u64) << u64(33)) | (other.astype(u64) << u64(2)) | kind.astype(u64)
    code, n = np.unique(code, return_counts=True)
    entry = (code >> np.uint64(33)).astype(np.int64)
    other = ((code >> np.uint64(2)) & np.uint64(0x7FFFFFFF)).astype(np.int64)
    kind = (code & np.uint64(3)).astype(np.int64)
    kind = np.where(kind > 0, kind + (URL_SPACE - 1), BAND)
    order = np.lexsort((-other, -n, entry))
    return Sharing(entry[order], other[order], kind[order], n[order].astype(np.int64))
