"""The pipeline's stages wired together: sources → store → publish.

The CLI and the scheduler call these functions and nothing below them; each returns a
report of what it did so the callers can print or log it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import dedup
from .config import Settings, SourceSettings
from .model import Entry, Rejected
from .publish import BuildReport, build
from .sources.articles import ArticleContext, read_articles, scan
from .store import BATCH, Store, now_utc

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(slots=True)
class IngestReport:
    seen: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    touched: list[int] = field(default_factory=list)  # ids of new or changed entries

    def add(self, other: IngestReport) -> None:
        for name in ("seen", "new", "updated", "unchanged", "withdrawn"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected += other.rejected
        self.touched += other.touched


def ingest_files(
    store: Store, settings: Settings, source: SourceSettings, progress: Progress | None = None
) -> IngestReport:
    """Bring one article folder's files into the store.

    Unchanged files (same size and mtime as stored) are not even opened; changed ones are
    re-parsed and updated only if what a reader sees changed; files that disappeared
    withdraw their entry. A bad file is reported and skipped; its last good version stays.
    """
    assert source.path is not None
    report = IngestReport()
    source_id = store.source_id(source.name, "files", str(source.path))
    known = store.stamps(source_id)
    ctx = ArticleContext(
        source=source.name,
        zone=source.zone,
        categories=tuple(settings.canonical_category(c) for c in source.categories),
        aliases=settings.category_aliases,
        base_url=settings.output.base_url,
    )
    now = now_utc()
    stamps = list(scan(source.path))
    batch: list[Entry] = []

    def flush() -> None:
        saved, touched = store.save_entries(source_id, batch, known, now)
        report.new += saved.new
        report.updated += saved.updated
        report.unchanged += saved.unchanged
        report.touched += touched
        batch.clear()

    todo = []
    for stamp in stamps:
        old = known.get(stamp.path)
        if old and not old.withdrawn and (old.mtime_ns, old.size) == (stamp.mtime_ns, stamp.size):
            report.unchanged += 1
        else:
            todo.append(stamp)
    report.seen = len(stamps)
    for done, item in enumerate(read_articles(source.path, todo, ctx, source.max_file_bytes), 1):
        if isinstance(item, Rejected):
            report.rejected.append(item)
            log.warning("rejected %s", item)
            continue
        batch.append(item)
        if len(batch) >= BATCH:
            flush()
        if progress and done % 200 == 0:
            progress(report.unchanged + done, len(stamps))
    flush()
    if progress:
        progress(len(stamps), len(stamps))

    present = {s.path for s in stamps}
    gone = [old.id for key, old in known.items() if key not in present and not old.withdrawn]
    store.withdraw(gone, now)
    report.withdrawn = len(gone)
    report.touched += gone
    return report


def ingest(store: Store, settings: Settings, progress: Progress | None = None) -> IngestReport:
    """Every enabled article folder."""
    total = IngestReport()
    for source in settings.file_sources:
        started = time.monotonic()
        r = ingest_files(store, settings, source, progress)
        log.info(
            "source=%s seen=%d new=%d updated=%d unchanged=%d withdrawn=%d rejected=%d seconds=%.2f",
            source.name, r.seen, r.new, r.updated, r.unchanged, r.withdrawn, len(r.rejected),
            time.monotonic() - started,
        )  # fmt: skip
        total.add(r)
    return total


@dataclass(slots=True)
class UpdateReport:
    ingest: IngestReport
    build: BuildReport
    seconds: float
    dedup: dedup.DedupReport | None = None  # None when [dedup] enabled = false

    def summary(self) -> str:
        i, b = self.ingest, self.build
        d = f"{self.dedup.duplicates} duplicates; " if self.dedup else ""  # ---- dedup
        return (
            f"{i.seen} files seen: {i.new} new, {i.updated} updated, {i.unchanged} unchanged, "
            f"{len(i.rejected)} rejected, {i.withdrawn} withdrawn; {d}"
            f"{b.written} files written for {b.rebuilt} of {b.feeds} feeds; {self.seconds:.2f} s"
        )


def update(store: Store, settings: Settings, progress: Progress | None = None) -> UpdateReport:
    """Ingest every source, then publish what changed."""
    started = time.monotonic()
    ingested = ingest(store, settings, progress)
    deduped, built = settle(store, settings, ingested.touched)
    return UpdateReport(ingested, built, time.monotonic() - started, deduped)


def settle(store: Store, settings: Settings, touched: list[int]) -> tuple[dedup.DedupReport | None, BuildReport]:
    """After ingesting: dedup what changed, then publish. `update` and the daemon's build job both
    end with this, so a cycle of the daemon and a run of `update` do the same work."""
    # ---- dedup: cluster what changed (new, changed and withdrawn ids) before publishing.
    deduped = dedup.run(store, settings, touched) if settings.dedup.enabled else dedup.disable(store)
    built = build(store, settings)
    return deduped, built
