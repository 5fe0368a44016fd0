"""Retention: prune old entries of remote sources, leave tombstones, keep the database compact.

`[retention] max_age_days` and `max_entries_per_source` (both optional) bound what the
database keeps of each remote feed. Pruning runs in small transactions so fetches keep
writing between them. A pruned entry leaves a tombstone (source, key, uid, fingerprint):
a feed that still carries the item does not bring it back (see `store.save_entries`).
Files already published, archives included, are not touched; the next build simply
no longer lists the entry.

Article folders are the operator's own files: deleting a file withdraws its entry, so
retention only removes the rows of files withdrawn longer ago than `max_age_days` (a file
that comes back later is ingested again, as new).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, tuple_

from .config import RetentionSettings
from .store import EntryRow, SourceRow, Store, TombstoneRow, delete_keys, maintenance_statements, now_utc

log = logging.getLogger(__name__)

PRUNE_BATCH = 200


@dataclass(slots=True)
class PruneReport:
    by_age: int = 0
    by_count: int = 0
    withdrawn: int = 0  # rows of long-withdrawn article files removed
    seconds: float = 0.0

    @property
    def pruned(self) -> int:
        return self.by_age + self.by_count + self.withdrawn


def cutoff(now: datetime, max_age_days: int | None) -> datetime | None:
    return None if max_age_days is None else now - timedelta(days=max_age_days)


def beyond_newest(ids_newest_first: Sequence[int], keep: int) -> list[int]:
    """The ids past the first `keep` (the list is ordered newest first)."""
    return list(ids_newest_first[keep:])


def _remote_source_ids(store: Store) -> list[int]:
    with store.engine.connect() as c:
        return list(c.scalars(select(SourceRow.id).where(SourceRow.kind != "files")))


def plan(store: Store, rules: RetentionSettings, now: datetime) -> tuple[list[int], list[int], list[int]]:
    """Ids to prune: (too old, over the per-source limit, withdrawn article files to forget)."""
    old: list[int] = []
    excess: list[int] = []
    forget: list[int] = []
    remote = _remote_source_ids(store)
    limit = cutoff(now, rules.max_age_days)
    with store.engine.connect() as c:
        if limit is not None:
            if remote:
                q = select(EntryRow.id).where(EntryRow.source_id.in_(remote), EntryRow.sort_date < limit)
                old = list(c.scalars(q))
            q = (
                select(EntryRow.id)
                .join(SourceRow, SourceRow.id == EntryRow.source_id)
                .where(SourceRow.kind == "files", EntryRow.withdrawn_at < limit)
            )
            forget = list(c.scalars(q))
        if rules.max_entries_per_source is not None:
            seen = set(old)
            for sid in remote:
                q = (
                    select(EntryRow.id)
                    .where(EntryRow.source_id == sid)
                    .order_by(EntryRow.sort_date.desc(), EntryRow.id.desc())
                )
                excess += [i for i in beyond_newest(list(c.scalars(q)), rules.max_entries_per_source) if i not in seen]
    return old, excess, forget


def _tombstone_and_delete(store: Store, ids: Sequence[int], now: datetime, tombstone: bool) -> int:
    """One small transaction: remember the entries' identities, then delete them."""
    t = EntryRow.__table__
    fingerprint = t.c.get("fingerprint")  # present once the dedup stage has its columns
    cols = [t.c.source_id, t.c.key, t.c.uid] + ([fingerprint] if fingerprint is not None else [])
    with store.engine.begin() as c:
        if tombstone:
            rows = c.execute(select(*cols).where(t.c.id.in_(ids))).all()
            if rows:
                pairs = [(r[0], r[1]) for r in rows]
                tt = TombstoneRow.__table__
                c.execute(delete(tt).where(tuple_(tt.c.source_id, tt.c.key).in_(pairs)))
                c.execute(
                    insert(tt),
                    [
                        {
                            "source_id": r[0],
                            "key": r[1],
                            "uid": r[2],
                            "fingerprint": r[3] if len(r) > 3 else None,
                            "pruned_at": now,
                        }
                        for r in rows
                    ],
                )
        # Categories go with the entry (ON DELETE CASCADE), its dedup index keys are dropped here
        # (an index without a foreign key); duplicates that pointed at it become orphans the
        # dedup stage re-clusters.
        delete_keys(c, ids)
        return c.execute(delete(t).where(t.c.id.in_(ids))).rowcount or 0


def prune(
    store: Store,
    rules: RetentionSettings,
    now: datetime | None = None,
    stop: threading.Event | None = None,
    batch: int = PRUNE_BATCH,
) -> PruneReport:
    """Apply the retention rules; stops between batches when `stop` is set."""
    started = time.monotonic()
    now = now or now_utc()
    report = PruneReport()
    if rules.max_age_days is None and rules.max_entries_per_source is None:
        return report
    old, excess, forget = plan(store, rules, now)
    for ids, attr, tombstone in ((old, "by_age", True), (excess, "by_count", True), (forget, "withdrawn", False)):
        for i in range(0, len(ids), batch):
            if stop is not None and stop.is_set():
                report.seconds = time.monotonic() - started
                return report
            n = _tombstone_and_delete(store, ids[i : i + batch], now, tombstone)
            setattr(report, attr, getattr(report, attr) + n)
    report.seconds = time.monotonic() - started
    return report


def upkeep(store: Store) -> None:
    """Periodic database maintenance (the dialect decides what that is)."""
    statements = maintenance_statements(store.engine.dialect.name)
    if not statements:
        return
    with store.engine.begin() as c:
        for sql in statements:
            c.exec_driver_sql(sql)
