"""Retention's reads and writes: which entries a rule reaches, and removing them while
leaving tombstones (source, key, uid, fingerprint) so a feed still carrying an item does not
bring it back (`EntryStore.save_entries` skips tombstoned keys)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select, tuple_

from .daemon_state import PUBLISHED, put_value
from .entries import E, delete_keys
from .schema import SOURCES, TOMBSTONES

T = TOMBSTONES


class RetentionStore:
    """Pruning (a part of `Store`)."""

    engine: object

    def remote_source_ids(self) -> list[int]:
        with self.engine.connect() as c:
            return list(c.scalars(select(SOURCES.c.id).where(SOURCES.c.kind != "files")))

    def remote_entries_before(self, source_ids: Sequence[int], limit: datetime) -> list[int]:
        """Entries of these sources sorted before `limit`."""
        if not source_ids:
            return []
        q = select(E.c.id).where(E.c.source_id.in_(list(source_ids)), E.c.sort_date < limit)
        with self.engine.connect() as c:
            return list(c.scalars(q))

    def file_entries_withdrawn_before(self, limit: datetime) -> list[int]:
        """Entries of article folders whose file went before `limit`."""
        q = (
            select(E.c.id)
            .join(SOURCES, SOURCES.c.id == E.c.source_id)
            .where(SOURCES.c.kind == "files", E.c.withdrawn_at < limit)
        )
        with self.engine.connect() as c:
            return list(c.scalars(q))

    def source_entries_newest_first(self, source_id: int) -> list[int]:
        q = select(E.c.id).where(E.c.source_id == source_id).order_by(E.c.sort_date.desc(), E.c.id.desc())
        with self.engine.connect() as c:
            return list(c.scalars(q))

    def remove_entries(self, ids: Sequence[int], now: datetime, tombstone: bool) -> int:
        """One small transaction: remember the entries' identities (with `tombstone`), then
        delete them. Categories go with them (ON DELETE CASCADE), their dedup index keys are
        dropped here (an index without a foreign key); duplicates that pointed at them become
        orphans the dedup stage re-clusters."""
        with self.engine.begin() as c:
            if tombstone:
                rows = c.execute(select(E.c.source_id, E.c.key, E.c.uid, E.c.fingerprint).where(E.c.id.in_(ids))).all()
                if rows:
                    c.execute(delete(T).where(tuple_(T.c.source_id, T.c.key).in_([(r[0], r[1]) for r in rows])))
                    stones = [
                        {"source_id": s, "key": k, "uid": u, "fingerprint": f, "pruned_at": now} for s, k, u, f in rows
                    ]
                    c.execute(insert(T), stones)
            delete_keys(c, ids)
            put_value(c, PUBLISHED, None)  # the feeds still list them: the next cycle must build
            return c.execute(delete(E).where(E.c.id.in_(ids))).rowcount or 0
