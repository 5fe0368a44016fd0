"""The pipeline's stages wired together: sources → store → publish.

The CLI and the scheduler call these functions and nothing below them; each returns a
report of what it did so the callers can print or log it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from .config import Settings, SourceSettings
from .fetching import PARSE_PROCESSES_MIN, STATE_BATCH, FetchReport, fetch, fetch_one  # noqa: F401  (the stage's API)
from .model import Entry, FileStamp, Held, Rejected
from .runtime import paused_gc
from .store import Store, now_utc

if TYPE_CHECKING:
    from . import dedup
    from .publish import BuildReport
    from .sources.articles import ArticleContext
    from .sources.sites import Site
    from .sources.walk import ScanResult
    from .store.records import StoredStamp
    from .usage import Meter, StageUsage

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)
# Entries stored per transaction. Big: each commit rewrites the pages of the random-keyed LSH
# band index it touched, which for a batch of a few hundred entries is most of them.
INGEST_BATCH = 2000


@dataclass(slots=True)
class IngestReport:
    seen: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    held: int = 0  # drafts and posts dated in the future, not published
    rejected: list[Rejected] = field(default_factory=list)
    touched: list[int] = field(default_factory=list)  # ids of new or changed entries
    next_release: datetime | None = None  # when the earliest held-back future post is due

    def add(self, other: IngestReport) -> None:
        for name in ("seen", "new", "updated", "unchanged", "withdrawn", "held"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected += other.rejected
        self.touched += other.touched
        if other.next_release and (self.next_release is None or other.next_release < self.next_release):
            self.next_release = other.next_release


_WARNED_PLACEHOLDERS: set[tuple[str, str]] = set()  # (source, placeholder) already reported


def article_context(settings: Settings, source: SourceSettings, site: Site, now: datetime) -> ArticleContext:
    """How the articles of `source` are read: its options over its site's defaults."""
    from dataclasses import replace

    from .features import tracking_patterns
    from .sources.articles import ArticleContext
    from .sources.permalinks import unknown_placeholder
    from .sources.sites import IMAGE_KEYS, LINK_KEYS

    unknown = unknown_placeholder(site) if site.url else None
    if unknown and (source.name, unknown) not in _WARNED_PLACEHOLDERS:
        # Once per source and process: the daemon rescans a folder every few minutes.
        _WARNED_PLACEHOLDERS.add((source.name, unknown))
        log.warning(
            "source=%s: the site's permalink pattern uses %s, which is not supported; entries without an "
            "original URL link to their generated article page",
            source.name, unknown,
        )  # fmt: skip
    if unknown:
        site = replace(site, url=None)
    # A site that declares its zone knows better than the source's default one.
    zone = source.zone
    if "timezone" not in source.model_fields_set and site.timezone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            zone = ZoneInfo(site.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("source=%s: the site's timezone %r is unknown; using %s", source.name, site.timezone, zone)
    return ArticleContext(
        source=source.name,
        zone=zone,
        categories=tuple(settings.canonical_category(c) for c in source.categories),
        aliases=settings.category_aliases,
        base_url=settings.output.base_url,
        dedup_patterns=tracking_patterns(settings.dedup.tracking_params) if settings.dedup.enabled else None,
        site=site,
        link_keys=tuple(dict.fromkeys((*source.link_keys, *LINK_KEYS[site.generator]))),
        image_keys=tuple(dict.fromkeys((*source.image_keys, *IMAGE_KEYS[site.generator]))),
        drafts=source.drafts,
        future=source.future,
        now=now,
        follow_symlinks=source.follow_symlinks,
        limits=settings.limits_for(source),
        parse_seconds=settings.tuning.parse_seconds,
    )


def scan_source(source: SourceSettings, explain: bool = False) -> ScanResult:
    """Recognize the layout of an article folder and list the files it takes (nothing is read)."""
    from .sources.sites import detect
    from .sources.walk import ScanOptions, scan

    assert source.path is not None
    site = detect(source.path)
    options = ScanOptions(tuple(source.include), tuple(source.exclude), source.drafts, source.follow_symlinks)
    return scan(source.path, site, options, source.name, explain)


# Over 60 lines: one folder's pass (scan, skip the unchanged, read the rest, store in batches,
# withdraw the missing) shares its report, stamps and batch; the steps that stand alone are
# `_to_read` and `_kept`.
def ingest_files(
    store: Store,
    settings: Settings,
    source: SourceSettings,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> IngestReport:
    """Bring one article folder's files into the store.

    Unchanged files (same size and mtime as stored) are not even opened; changed ones are
    re-parsed and updated only if what a reader sees changed; files that disappeared, or that
    became drafts, withdraw their entry. A bad file is reported and skipped; its last good
    version stays. Held-back files (drafts, future posts) are read again on each scan, so a
    future post comes in on the first scan after its date.
    """
    assert source.path is not None
    report = IngestReport()
    source_id = store.source_id(source.name, "files", str(source.path))
    known = store.stamps(source_id)
    now = now or now_utc()
    scanned = scan_source(source)
    for problem in scanned.rejected:
        report.rejected.append(problem)
        log.warning("rejected %s", problem)
    stamps = scanned.files
    batch: list[Entry] = []

    def flush() -> None:
        saved, touched = store.save_entries(source_id, batch, known, now)
        report.new += saved.new
        report.updated += saved.updated
        report.unchanged += saved.unchanged
        report.touched += touched
        batch.clear()

    todo = _to_read(stamps, known)
    report.unchanged += len(stamps) - len(todo)
    report.seen = len(stamps)
    held: set[str] = set()
    found: Iterable = ()
    if todo:  # the article parser (YAML, Markdown) loads only when a file has to be read
        from .sources.reading import read_articles

        ctx = article_context(settings, source, scanned.site, now)
        found = read_articles(source.path, todo, ctx, source.max_file_bytes, settings.tuning.read_parallel_min)
    rewrites = _rewrites(settings, source.name)
    for done, item in enumerate(found, 1):
        if rewrites and isinstance(item, Entry):
            from .rules import rewrite

            item = rewrite(rewrites, item)  # on the sanitized article: tags and text, no classes
        if _kept(item, report, held):
            batch.append(item)
            if len(batch) >= INGEST_BATCH:
                flush()
        if progress and done % 200 == 0:
            progress(report.unchanged + done, len(stamps))
    if len(todo) >= settings.tuning.render_parallel_min:
        from .publish import render

        render.warm_up()  # the build's workers boot while the last entries are stored
    flush()
    if progress:
        progress(len(stamps), len(stamps))

    present = {s.path for s in stamps} - held
    gone = [old.id for key, old in known.items() if key not in present and not old.withdrawn]
    store.withdraw(gone, now)
    report.withdrawn = len(gone)
    report.touched += gone
    return report


def _to_read(stamps: Sequence[FileStamp], known: dict[str, StoredStamp]) -> list[FileStamp]:
    """The files to open: all but those stored, not withdrawn, with the same size and mtime."""
    todo = []
    for stamp in stamps:
        old = known.get(stamp.path)
        if not (old and not old.withdrawn and (old.mtime_ns, old.size) == (stamp.mtime_ns, stamp.size)):
            todo.append(stamp)
    return todo


def _kept(item: Entry | Rejected | Held, report: IngestReport, held: set[str]) -> bool:
    """Whether a read file's result is an entry to store; a rejected or held-back file is
    counted and logged in `report` (a held one's path joins `held`: it is not withdrawn)."""
    if isinstance(item, Rejected):
        report.rejected.append(item)
        log.warning("rejected %s", item)
        return False
    if isinstance(item, Held):
        held.add(item.where)
        report.held += 1
        log.info("held back %s", item)
        if item.until and (report.next_release is None or item.until < report.next_release):
            report.next_release = item.until
        return False
    return True


def _rewrites(settings: Settings, source: str) -> tuple:
    """The rewriting rules (`rules.rewrites_for`) that cover `source`."""
    if not settings.rules:
        return ()
    from .rules import compile_rules, rewrites_for

    return rewrites_for(compile_rules(settings.rules), source)


def ingest(
    store: Store, settings: Settings, progress: Progress | None = None, now: datetime | None = None
) -> IngestReport:
    """Every enabled article folder."""
    total = IngestReport()
    for source in settings.file_sources:
        started = time.monotonic()
        with paused_gc():
            r = ingest_files(store, settings, source, progress, now)
        log.info(
            "source=%s seen=%d new=%d updated=%d unchanged=%d withdrawn=%d held=%d rejected=%d seconds=%.2f",
            source.name, r.seen, r.new, r.updated, r.unchanged, r.withdrawn, r.held, len(r.rejected),
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
    fetch: FetchReport | None = None  # the due feeds fetched first
    stages: list[StageUsage] = field(default_factory=list)  # what each stage cost (`usage`)

    def summary(self) -> str:
        i, b = self.ingest, self.build
        d = f"{self.dedup.duplicates} duplicates; " if self.dedup else ""
        f = self.fetch
        r = (
            f"{f.sources} feeds: {f.fetched} downloaded, {f.not_modified} not modified, {f.failed} failed, "
            f"{f.new} new, {f.updated} updated; "
            if f and f.sources
            else ""
        )
        return (
            f"{r}{i.seen} files seen: {i.new} new, {i.updated} updated, {i.unchanged} unchanged, "
            f"{len(i.rejected)} rejected, {i.withdrawn} withdrawn{f', {i.held} held back' if i.held else ''}; {d}"
            f"{b.written} files written for {b.rebuilt} of {b.feeds} feeds; {self.seconds:.2f} s"
        )


def update(store: Store, settings: Settings, progress: Progress | None = None) -> UpdateReport:
    """Ingest every source, then publish what changed."""
    from .usage import Meter

    started = time.monotonic()
    meter = Meter()
    with meter.stage("fetch"):
        fetched = fetch(store, settings, due_only=True, with_features=True)  # the feeds that are due
    with meter.stage("ingest"):
        ingested = ingest(store, settings, progress)
    deduped, built = settle(store, settings, ingested.touched + fetched.touched, meter)
    return UpdateReport(ingested, built, time.monotonic() - started, deduped, fetched, meter.stages)


def settle(store: Store, settings: Settings, touched: list[int], meter: Meter | None = None,
           ) -> tuple[dedup.DedupReport | None, BuildReport]:  # fmt: skip
    """After ingesting: dedup what changed, then publish. `update` and the daemon's build job both
    end with this, so a cycle of the daemon and a run of `update` do the same work. `meter`:
    measures the dedup and build stages (`usage`)."""
    from contextlib import nullcontext

    from . import dedup
    from .hiding import judge
    from .publish import stamp, still_published

    def stage(name: str):
        return meter.stage(name) if meter is not None else nullcontext()

    # Block and keep rules first: what they hide leaves its cluster and every feed.
    touched = [*touched, *judge(store, settings, touched)]
    if not touched and not store.has_pending_changes():
        unchanged = still_published(store, settings)
        if unchanged is not None:
            return (dedup.DedupReport() if settings.dedup.enabled else None), unchanged
    from .publish import build, early_pages  # the build's modules: not loaded by a quiet cycle
    # Cleared first: if this cycle stops between dedup and the end of the build, the next one
    # must build even though it finds nothing new.
    store.set_published_stamp(None)
    if not settings.dedup.enabled:
        deduped = dedup.disable(store)
        with stage("build"):
            built = build(store, settings)
    else:
        # Cluster what changed (new, changed and withdrawn ids) before publishing; article
        # pages render meanwhile. (Their workers' CPU counts in the stage it is spent in; planning
        # them, on entering `early_pages`, in neither stage.)
        with early_pages(store, settings, touched) as early:
            with stage("dedup"):
                deduped = dedup.run(store, settings, touched)
            with stage("build"):
                built = build(store, settings, early=early)
    store.set_published_stamp(stamp(settings))
    return deduped, built
