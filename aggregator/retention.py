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

from .config import RetentionSettings
from .store import PruneCandidates, Store, now_utc

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


def plan(store: Store, rules: RetentionSettings, now: datetime) -> PruneCandidates:
    """Ids to prune: too old, over the per-source limit, withdrawn article files to forget."""
    old: list[int] = []
    excess: list[int] = []
    forget: list[int] = []
    remote = store.remote_source_ids()
    limit = cutoff(now, rules.max_age_days)
    if limit is not None:
        old = store.remote_entries_before(remote, limit)
        forget = store.file_entries_withdrawn_before(limit)
    if rules.max_entries_per_source is not None:
        seen = set(old)
        for sid in remote:
            newest_first = store.source_entries_newest_first(sid)
            excess += [i for i in beyond_newest(newest_first, rules.max_entries_per_source) if i not in seen]
    return PruneCandidates(old, excess, forget)


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
    found = plan(store, rules, now)
    for ids, attr, tombstone in (
        (found.old, "by_age", True),
        (found.excess, "by_count", True),
        (found.forget, "withdrawn", False),
    ):
        for i in range(0, len(ids), batch):
            if stop is not None and stop.is_set():
                report.seconds = time.monotonic() - started
                return report
            n = store.remove_entries(ids[i : i + batch], now, tombstone)
            setattr(report, attr, getattr(report, attr) + n)
    report.seconds = time.monotonic() - started
    return report


def upkeep(store: Store) -> None:
    """Periodic database maintenance (the dialect decides what that is)."""
    store.upkeep()
