"""The dedup key index: which stored entries hold a key, built so that adding an entry costs
as little more as it can as the store grows (figures in docs/benchmarks.md).

One row per key of an entry's features (`lsh.index_keys`: its LSH band keys, its URL key and
its text key), so the candidates of every layer but identity are found by indexed lookups,
never by comparing against every entry. A single B-tree of random keys made adding an entry
cost more as the store grew: each new key dirties its own page once the tree is bigger than a
batch, so every commit wrote back more pages, and each lookup fell through more pages that
were not in any cache (measured: 1.26× the cost at 1,000,000 entries). So the index is a
log-structured merge tree:

- **Levels.** Keys are inserted into level 0, which stays small (`Shape.level0_keys`). When a level
  outgrows its size (each level `Shape.ratio` times the one above), it is merged into the next in
  key order, which writes each page of the next level about once for many keys; into an
  empty level it is not copied at all: the two tables swap places. Every key is in exactly
  one level. Levels live in fixed tables (`SLOTS`); which table is which level is a row in
  `key_levels`, so a swap is an update of two numbers.
- **Filters.** Every level below 0 has a Bloom filter of its keys (in `key_levels.bits`), so
  a lookup reads a level's B-tree only for the keys its filter may hold: those of a real
  match and about 1 % more, instead of every key of the batch. A filter only grows (a
  deleted key leaves its bits, which only costs a wasted lookup); it is rebuilt when its
  level outgrows the size it was made for, and dropped when its level is merged away.
- **No index by entry.** It would be rewritten at random places by every merge (it made a
  merge cost twice as much). Deletes, which are rare, pass the keys, which the caller
  recomputes from the stored signature.

The tables are an index the dedup stage keeps, without a foreign key (checking one cost more
than the insert itself). A key left behind would only offer a candidate that no longer loads
or whose signature then rules it out.
"""

from __future__ import annotations

import json
import os
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from ..lsh import KEY_BITS, SPACES
from ..sharing import HOLDERS, Sharing, count_shared
from .schema import KEY_LEVELS as LEVELS
from .schema import KEY_SLOTS as SLOTS
from .schema import KEY_TABLES as TABLES

if TYPE_CHECKING:  # numpy is imported by the functions that use it: a run with nothing new does not
    import numpy as np

BITS_PER_KEY = 12  # Bloom filter: ≈ 1 % false positives with 5 bits of one 64-bit word per key


@dataclass(frozen=True, slots=True)
class Shape:
    """How big the levels grow. The defaults suit any store; a test passes small ones to see
    merges happen with a handful of entries."""

    level0_keys: int = 50_000  # 2,000 entries: level 0 stays a few hundred pages, mostly in cache
    ratio: int = 8  # each level holds up to this many times the keys of the one above


DEFAULT_SHAPE = Shape()


def capacity(level: int, shape: Shape = DEFAULT_SHAPE) -> int | None:
    """How many keys `level` holds before it is merged into the next; None: no limit."""
    return None if level >= SLOTS - 1 else shape.level0_keys * shape.ratio**level


def _mark(c: Connection) -> str:
    return "?" if c.dialect.paramstyle == "qmark" else "%s"  # qmark: sqlite3; format: psycopg


def _put(c: Connection, table: str, rows: list[tuple[int, int]]) -> None:
    """(key, entry id) rows into `table`: straight to the driver's executemany (no per-row
    parameter processing), in key order (consecutive rows land on the same or the next page
    instead of a random one each)."""
    sql = f"INSERT INTO {table} (key, entry_id) VALUES ({_mark(c)}, {_mark(c)})"
    rows.sort()
    for i in range(0, len(rows), 5000):
        c.exec_driver_sql(sql, rows[i : i + 5000])


def insert(c: Connection, rows: list[tuple[int, int]], shape: Shape = DEFAULT_SHAPE) -> None:
    """Store (band key, entry id) rows, in level 0 (the biggest write of a cold start), and
    merge level 0 down once it outgrows its size. Merged as it fills, not only when dedup
    ends: a level 0 grown to every key of a cold start (≈ 27 per entry) took each commit's
    keys onto as many pages, most of them out of cache (measured: 5 s of inserts and 5 s of
    commits for 35,000 entries)."""
    if not rows:
        return
    top = _state(c, for_update=True)[0]
    _put(c, TABLES[top.slot].name, rows)
    c.execute(update(LEVELS).where(LEVELS.c.slot == top.slot).values(size=LEVELS.c.size + len(rows)))
    limit = capacity(0, shape)
    if limit is not None and top.size + len(rows) > limit:
        settle(c, shape)


def delete(c: Connection, rows: list[tuple[int, int]]) -> None:
    """Drop these (band key, entry id) rows, from whichever level holds them."""
    if rows:
        for t in TABLES:
            c.exec_driver_sql(f"DELETE FROM {t.name} WHERE key = {_mark(c)} AND entry_id = {_mark(c)}", rows)


def clear(c: Connection) -> None:
    for t in TABLES:
        c.execute(t.delete())
    c.execute(update(LEVELS).values(level=LEVELS.c.slot, size=0, stamp=0, bits=None))
    _CACHE.pop(c.engine, None)


def shared(c: Connection, rows: list[tuple[int, int]]) -> Sharing:
    """Which stored entries share keys with the (key, entry id) `rows`, and how many of each
    `lsh.kind` (`sharing.count_shared`).

    Bounded by design: each key offers at most HOLDERS entries, the most recently stored ones
    holding it, whatever how many hold it. A key many entries share is boilerplate (a template
    sentence, a fixed footer, a section page every item links to): its holders say little about
    which story an entry tells, and reading all of them made the cost of a lookup grow with how
    alike unrelated texts are. A true copy shares most of its keys with the original, and a
    story reprinted many times is still found through its most recent copies.

    The `rows` themselves count as holders (the entries of one batch find each other before
    their keys are stored). Each level is asked once per distinct key, in the database, for its
    newest HOLDERS holders (a primary-key range read of at most that many rows) and answers only
    for the keys it holds; levels below 0 only for the keys their filter may hold."""
    import numpy as np

    probe_keys = np.fromiter((k for k, _ in rows), dtype=np.uint64, count=len(rows))
    probe_ids = np.fromiter((i for _, i in rows), dtype=np.int64, count=len(rows))
    held_keys, held_ids = [np.zeros(0, dtype=np.uint64)], [np.zeros(0, dtype=np.int64)]
    if rows:
        keys = np.unique(probe_keys)
        for lv in _state(c):
            if not lv.size and lv.level:
                continue
            wanted = keys if lv.level == 0 else keys[_filter(c, lv).may_hold(keys)]
            if len(wanted):
                k, i = _newest_holders(c, TABLES[lv.slot].name, wanted.tolist())
                held_keys.append(k)
                held_ids.append(i)
    return count_shared(probe_keys, probe_ids, np.concatenate(held_keys), np.concatenate(held_ids))


def _newest_holders(c: Connection, table: str, keys: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(keys, entry ids), one pair per holder, for `keys` (Python ints, from `tolist()`) held in
    `table`: for each key at most HOLDERS, its newest holders."""
    import numpy as np

    c.exec_driver_sql("CREATE TEMPORARY TABLE IF NOT EXISTS key_lookup (key BIGINT PRIMARY KEY)")
    c.exec_driver_sql("DELETE FROM key_lookup")
    # All the keys as one parameter of one statement, whatever they are. Written inline, each
    # batch of keys made a statement text of its own, which sqlite3 keeps prepared (128 per
    # connection, ≈ 0.4 MB each with 5,000 values): a cold dedup's memory grew with the corpus.
    if c.dialect.name == "sqlite":
        listed = json.dumps(keys, separators=(",", ":"))  # C speed: twice a join's
        c.exec_driver_sql("INSERT INTO key_lookup (key) SELECT value FROM json_each(?)", (listed,))
    else:
        c.exec_driver_sql("INSERT INTO key_lookup (key) SELECT unnest(CAST(%s AS BIGINT[]))", (keys,))
    newest = f"SELECT entry_id FROM {table} WHERE key = p.key ORDER BY entry_id DESC LIMIT {HOLDERS}"
    # A correlated subquery: one short range read of the primary key per probed key, for the keys
    # an EXISTS probe finds. (Filtering on the list itself, `WHERE h IS NOT NULL` around it, made
    # SQLite build each found key's list twice: 25-40 % more time for a batch of held keys.)
    if c.dialect.name == "postgresql":
        agg = f"array_to_string(ARRAY({newest}), ',')"
    else:
        agg = f"(SELECT group_concat(entry_id) FROM ({newest}))"
    query = f"SELECT p.key, {agg} FROM key_lookup AS p WHERE EXISTS (SELECT 1 FROM {table} WHERE key = p.key)"
    found = c.exec_driver_sql(query).fetchall()
    if not found:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    # Parsed in one pass: the holders' lists joined into one text, each key repeated per holder.
    per_key = np.fromiter((h.count(",") + 1 for _, h in found), dtype=np.int64, count=len(found))
    ids = np.fromstring(",".join(h for _, h in found), dtype=np.int64, sep=",")
    held = np.repeat(np.fromiter((k for k, _ in found), dtype=np.uint64, count=len(found)), per_key)
    return held, ids


def settle(c: Connection, shape: Shape = DEFAULT_SHAPE) -> None:
    """Merge every level that outgrew its capacity into the next, top down."""
    state = _state(c, for_update=True)
    for n in range(SLOTS - 1):
        src, dst = state[n], state[n + 1]
        limit = capacity(n, shape)
        if limit is None or src.size <= limit:
            break
        if dst.size == 0 or c.execute(select(TABLES[dst.slot].c.key).limit(1)).first() is None:
            # The next level is empty: the two tables trade places, nothing is copied.
            state[n], state[n + 1] = dst, src
            src.level, dst.level, dst.size = n + 1, n, 0
            if n == 0:  # level 0 has no filter
                src.filter = _build(c, src.slot, src.size, src.level, shape)
                _save(c, src)
            else:
                c.execute(update(LEVELS).where(LEVELS.c.slot == src.slot).values(level=src.level))
            c.execute(update(LEVELS).where(LEVELS.c.slot == dst.slot).values(level=n, size=0, stamp=0, bits=None))
            continue
        s, d = TABLES[src.slot], TABLES[dst.slot]
        f = _filter(c, dst)
        outgrown = dst.size + src.size > f.capacity  # then made again from all its keys, these included
        moved = None if outgrown else _keys(c, src.slot)
        c.execute(d.insert().from_select(["key", "entry_id"], select(s.c.key, s.c.entry_id).order_by(s.c.key)))
        c.execute(s.delete())
        dst.size += src.size
        dst.filter = _build(c, dst.slot, dst.size, dst.level, shape) if moved is None else f.with_keys(moved)
        _save(c, dst)
        src.size, src.filter = 0, None
        c.execute(update(LEVELS).where(LEVELS.c.slot == src.slot).values(size=0, stamp=0, bits=None))


# ------------------------------------------------------------------ levels and filters


class _Level:
    __slots__ = ("filter", "level", "size", "slot", "stamp")

    def __init__(self, slot: int, level: int, size: int, stamp: int):
        self.slot, self.level, self.size, self.stamp = slot, level, size, stamp
        self.filter: BloomFilter | None = None


def _state(c: Connection, for_update: bool = False) -> list[_Level]:
    """The levels, top (0) first. `for_update`: locked until the transaction ends, so that a
    concurrent writer cannot store keys into a table that a merge is moving to another level
    (PostgreSQL; a SQLite transaction that writes holds the whole database already)."""
    q = select(LEVELS.c.slot, LEVELS.c.level, LEVELS.c.size, LEVELS.c.stamp).order_by(LEVELS.c.slot)
    if for_update:
        q = q.with_for_update()
    rows = c.execute(q).all()
    if not rows:  # a new database
        c.execute(LEVELS.insert(), [{"slot": n, "level": n, "size": 0, "stamp": 0, "bits": None} for n in range(SLOTS)])
        rows = c.execute(q).all()
    return sorted((_Level(*r) for r in rows), key=lambda lv: lv.level)


# Filters read from the database, per engine: (stamp, filter) by slot. A stamp is random and
# changes with every write, so a filter written by a transaction that rolled back, or by another
# process, is never taken for the stored one.
_CACHE: weakref.WeakKeyDictionary[Engine, dict[int, tuple[int, BloomFilter]]] = weakref.WeakKeyDictionary()


def _filter(c: Connection, lv: _Level) -> BloomFilter:
    if lv.filter is not None:
        return lv.filter
    cache = _CACHE.setdefault(c.engine, {})
    hit = cache.get(lv.slot)
    if hit is None or hit[0] != lv.stamp:
        bits = c.scalar(select(LEVELS.c.bits).where(LEVELS.c.slot == lv.slot))
        # No filter stored for a level with keys (it should not happen): one that holds them all.
        hit = (lv.stamp, BloomFilter.from_bytes(bits) if bits else _build(c, lv.slot, lv.size, lv.level))
        cache[lv.slot] = hit
    lv.filter = hit[1]
    return hit[1]


def _build(c: Connection, slot: int, size: int, level: int, shape: Shape = DEFAULT_SHAPE) -> BloomFilter:
    """A filter of every key of TABLES[slot], with room for what its level will hold (all of
    it, or twice `size` for the last level), so that it is rarely made again."""
    stored = _keys(c, slot)
    limit = capacity(level, shape)
    room = 2 * max(size, len(stored))
    if limit is not None:
        room = max(room, limit + limit // 2)
    return BloomFilter.empty(room).with_keys(stored)


def _keys(c: Connection, slot: int) -> np.ndarray:
    """Every key of TABLES[slot], fast: a merge reads a whole level. Fetched as one text per
    key space, parsed by numpy (a Python object per row would cost 3× more)."""
    import numpy as np

    name = TABLES[slot].name
    agg = "group_concat(key)" if c.dialect.name == "sqlite" else "string_agg(CAST(key AS TEXT), ',')"
    parts = [np.zeros(0, dtype=np.uint64)]
    for space in range(SPACES):
        low, high = space << KEY_BITS, (space + 1) << KEY_BITS
        text = c.exec_driver_sql(f"SELECT {agg} FROM {name} WHERE key >= {low} AND key < {high}").scalar()
        if text:
            parts.append(np.fromstring(text, dtype=np.uint64, sep=","))
    return np.concatenate(parts)


def _save(c: Connection, lv: _Level) -> None:
    assert lv.filter is not None
    lv.stamp = int.from_bytes(os.urandom(8), "little") >> 1  # a positive BIGINT
    c.execute(
        update(LEVELS)
        .where(LEVELS.c.slot == lv.slot)
        .values(level=lv.level, size=lv.size, stamp=lv.stamp, bits=lv.filter.to_bytes())
    )
    _CACHE.setdefault(c.engine, {})[lv.slot] = (lv.stamp, lv.filter)


class BloomFilter:
    """A blocked Bloom filter over 64-bit keys: each key sets 5 bits of one 64-bit word, so a
    test reads one word (one cache miss, however big the filter). Vectorized with numpy."""

    __slots__ = ("words",)
    _MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant

    def __init__(self, words: np.ndarray):
        self.words = words

    @classmethod
    def empty(cls, keys: int) -> BloomFilter:
        import numpy as np

        return cls(np.zeros(max(1, -(-max(keys, 1) * BITS_PER_KEY // 64)), dtype=np.uint64))

    @classmethod
    def from_bytes(cls, data: bytes) -> BloomFilter:
        import numpy as np

        return cls(np.frombuffer(data, dtype="<u8").astype(np.uint64))

    def to_bytes(self) -> bytes:
        return self.words.astype("<u8").tobytes()

    @property
    def capacity(self) -> int:
        return len(self.words) * 64 // BITS_PER_KEY

    def _where(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        h = keys.astype(np.uint64) * np.uint64(self._MIX)
        # The top 32 bits pick the word (multiply-shift onto the word count), the low 30 the bits.
        word = ((h >> np.uint64(32)) * np.uint64(len(self.words))) >> np.uint64(32)
        bits = np.zeros_like(h)
        for shift in (0, 6, 12, 18, 24):
            bits |= np.uint64(1) << ((h >> np.uint64(shift)) & np.uint64(63))
        return word.astype(np.intp), bits

    def with_keys(self, keys: np.ndarray) -> BloomFilter:
        import numpy as np

        words = self.words.copy()
        word, bits = self._where(keys)
        np.bitwise_or.at(words, word, bits)
        return BloomFilter(words)

    def may_hold(self, keys: np.ndarray) -> np.ndarray:
        word, bits = self._where(keys)
        return (self.words[word] & bits) == bits
