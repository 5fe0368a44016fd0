"""`aggregator db copy --to URL`: every row of one database into another, e.g. a SQLite file
into PostgreSQL when one process is no longer enough.

The source must be at this version's schema (`db upgrade` first); the target is created at it
when empty and refused when it already holds sources or entries. Tables are copied parents
first, in batches; a table's references to itself (an entry's canonical entry) are filled in
by a second pass, as the row referred to may come later. Ids are kept, so on PostgreSQL each
table's id sequence is moved past the copied ids (`database.move_sequences`).
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update

from . import database
from .schema import DAEMON_STATE, ENTRIES, SOURCES, metadata

BATCH = 2000
SKIPPED_STATE = ("writer",)  # daemon_state rows not copied: the source's writer lease is its own


class TargetNotEmpty(Exception):
    """The target database already holds sources or entries; the message says which."""


def copy_database(source_url: str, target_url: str) -> dict[str, int]:
    """Copy every row of `source_url` into `target_url`; rows copied per table."""
    from . import Store

    src = Store(source_url)
    try:
        dst = Store(target_url)
        try:
            return _copy(src, dst)
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src, dst) -> dict[str, int]:
    with dst.engine.connect() as c:
        held = {
            t.name: c.scalar(select(func.count()).select_from(t)) for t in (SOURCES, ENTRIES)
        }
    if any(held.values()):
        raise TargetNotEmpty(
            f"{dst.describe()}: the target database is not empty ({held['sources']} sources, "
            f"{held['entries']} entries); copy into an empty database"
        )
    counts: dict[str, int] = {}
    tables = metadata.sorted_tables
    with src.engine.connect() as r, dst.engine.begin() as w:
        for t in reversed(tables):  # what opening the target wrote (the key index's levels)
            w.execute(delete(t))
        for t in tables:
            selfref = [fk.parent for fk in t.foreign_keys if fk.column.table is t]
            q = select(t)
            if t is DAEMON_STATE:
                q = q.where(t.c.name.not_in(SKIPPED_STATE))
            later: list[dict] = []
            n = 0
            result = r.execution_options(stream_results=True).execute(q)
            while rows := result.fetchmany(BATCH):
                batch = [dict(row._mapping) for row in rows]
                for row in batch:
                    if any(row[c.name] is not None for c in selfref):
                        later.append({"b_" + k.name: row[k.name] for k in (*t.primary_key.columns, *selfref)})
                        for c in selfref:
                            row[c.name] = None
                w.execute(t.insert(), batch)
                n += len(batch)
            if later:
                key = [c for c in t.primary_key.columns]
                q2 = update(t).where(*[c == _bind(c) for c in key]).values({c.name: _bind(c) for c in selfref})
                w.execute(q2, later)
            counts[t.name] = n
        database.move_sequences(w, tables)
    return counts


def _bind(column):
    from sqlalchemy import bindparam

    return bindparam("b_" + column.name, type_=column.type)
