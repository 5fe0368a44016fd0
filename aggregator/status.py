"""`aggregator status`: is the daemon running, its last cycle, each source's health,
entries per category, the database's size."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .store import Store


@dataclass(slots=True)
class SourceHealth:
    name: str
    kind: str
    last_fetch: datetime | None
    last_status: int | None
    error_count: int
    next_due: datetime | None
    last_error: str | None
    entries: int


@dataclass(slots=True)
class Status:
    running: bool
    holder: str | None
    last_cycle: dict[str, Any] | None
    sources: list[SourceHealth]
    categories: list[tuple[str, str, int]]  # name, slug, visible entries
    database_bytes: int | None


def status(store: Store) -> Status:
    from .lock import writer_lock_for

    lock = writer_lock_for(store)
    running = lock.is_held_elsewhere()
    holder = lock.holder() if running else None
    per_source = store.entries_per_source()
    sources = [
        SourceHealth(
            r.name, r.kind, r.last_fetch, r.last_status, r.error_count, r.next_due, r.last_error,
            per_source.get(r.id, 0),
        )
        for r in store.source_rows()
    ]
    counts = store.category_counts()
    categories = [(c.name, c.slug, counts[c.id].entries if c.id in counts else 0) for c in store.categories()]
    return Status(running, holder.describe() if holder else None, store.last_cycle(), sources, categories,
                  store.size())  # fmt: skip
