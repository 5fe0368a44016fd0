"""The pipeline's stages wired together: sources → store → publish.

The CLI and the scheduler call these functions and nothing below them; each returns a
report of what it did so the callers can print or log it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from . import dedup
from .config import Settings, SourceSettings
from .features import tracking_patterns
from .model import Entry, Held, Rejected
from .publish import BuildReport, build, early_pages, render
from .runtime import paused_gc
from .sources.articles import ArticleContext, read_articles
from .sources.sites import Site, detect
from .sources.walk import ScanOptions, ScanResult, scan
from .store import Store, now_utc

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


def article_context(settings: Settings, source: SourceSettings, site: Site, now: datetime) -> ArticleContext:
    """How the articles of `source` are read: its options over its site's defaults."""
    from dataclasses import replace

    from .sources.permalinks import unknown_placeholder
    from .sources.sites import IMAGE_KEYS, LINK_KEYS

    unknown = unknown_placeholder(site) if site.url else None
    if unknown:
        log.warning(
            "source=%s: the site's permalink pattern uses %s, which is not supported; entries without an "
            "original URL link to their generated article page",
            source.name, unknown,
        )  # fmt: skip
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
    assert source.path is not None
    site = detect(source.path)
    options = ScanOptions(tuple(source.include), tuple(source.exclude), source.drafts, source.follow_symlinks)
    return scan(source.path, site, options, source.name, explain)


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
    ctx = article_context(settings, source, scanned.site, now)
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

    todo = []
    for stamp in stamps:
        old = known.get(stamp.path)
        if old and not old.withdrawn and (old.mtime_ns, old.size) == (stamp.mtime_ns, stamp.size):
            report.unchanged += 1
        else:
            todo.append(stamp)
    report.seen = len(stamps)
    held: set[str] = set()
    found = read_articles(source.path, todo, ctx, source.max_file_bytes, settings.tuning.read_parallel_min)
    for done, item in enumerate(found, 1):
        if isinstance(item, Rejected):
            report.rejected.append(item)
            log.warning("rejected %s", item)
            continue
        if isinstance(item, Held):
            held.add(item.where)
            report.held += 1
            log.info("held back %s", item)
            if item.until and (report.next_release is None or item.until < report.next_release):
                report.next_release = item.until
            continue
        batch.append(item)
        if len(batch) >= INGEST_BATCH:
            flush()
        if progress and done % 200 == 0:
            progress(report.unchanged + done, len(stamps))
    if len(todo) >= settings.tuning.render_parallel_min:
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
    started = time.monotonic()
    fetched = fetch(store, settings, due_only=True)  # the feeds that are due
    ingested = ingest(store, settings, progress)
    deduped, built = settle(store, settings, ingested.touched + fetched.touched)
    return UpdateReport(ingested, built, time.monotonic() - started, deduped, fetched)


def settle(store: Store, settings: Settings, touched: list[int]) -> tuple[dedup.DedupReport | None, BuildReport]:
    """After ingesting: dedup what changed, then publish. `update` and the daemon's build job both
    end with this, so a cycle of the daemon and a run of `update` do the same work."""
    if not settings.dedup.enabled:
        return dedup.disable(store), build(store, settings)
    # Cluster what changed (new, changed and withdrawn ids) before publishing; article pages
    # render meanwhile.
    with early_pages(store, settings, touched) as early:
        deduped = dedup.run(store, settings, touched)
        built = build(store, settings, early=early)
    return deduped, built


# ---- remote sources: fetch feeds over HTTP, parse off the event loop, store


@dataclass(slots=True)
class FetchReport:
    sources: int = 0  # remote sources requested this run
    fetched: int = 0  # answered with a document that was parsed
    not_modified: int = 0  # answered 304
    failed: int = 0  # error of any kind, including 410 (which also disables the source)
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[Rejected] = field(default_factory=list)  # (source, URL, reason) of each failure
    rejected: list[Rejected] = field(default_factory=list)  # items of fetched feeds that could not be stored
    touched: list[int] = field(default_factory=list)  # ids of new or changed entries
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.sources} feeds fetched: {self.fetched} downloaded, {self.not_modified} not modified, "
            f"{self.failed} failed; {self.new} new, {self.updated} updated, {self.unchanged} unchanged entries; "
            f"{self.seconds:.2f} s"
        )


PARSE_PROCESSES_MIN = 24  # below this many feeds, parse in a thread: starting processes costs more


def fetch(
    store: Store, settings: Settings, names: list[str] | None = None, due_only: bool = False, now=None
) -> FetchReport:
    """Fetch remote sources: the ones named (even if disabled), else every enabled one that is
    not disabled (by a 410) and, with `due_only`, whose next fetch is due. An unknown name is
    a ConfigError."""
    from .config import ConfigError
    from .sources.opml import remote_sources
    from .sources.remote import is_due

    started = time.monotonic()
    sources = remote_sources(settings)
    if names:
        by_name = {s.name: s for s in sources}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"{settings.config_path}: no remote source named {', '.join(map(repr, unknown))}")
        chosen = [by_name[n] for n in dict.fromkeys(names)]
    else:
        chosen = [s for s in sources if s.enabled]
    report = FetchReport()
    if chosen:
        rows = store.feed_sources({s.name: s.url or "" for s in chosen})
        now = now or now_utc()
        if not names:
            wanted = (lambda r: is_due(_feed_state(r), now)) if due_only else (lambda r: not r.disabled)
            chosen = [s for s in chosen if wanted(rows[s.name])]
        if chosen:
            report.sources = len(chosen)
            asyncio.run(_fetch_all(store, settings, chosen, rows, now, report, _parse_pool(len(chosen))))
    report.seconds = time.monotonic() - started
    return report


def fetch_one(store: Store, settings: Settings, source: SourceSettings) -> FetchReport:
    """Fetch one remote source now (the daemon's per-source job)."""
    from .config import ConfigError

    if source.url is None:
        raise ConfigError(f"{settings.config_path}: source {source.name!r} has no url")
    started = time.monotonic()
    rows = store.feed_sources({source.name: source.url})
    report = FetchReport(sources=1)
    asyncio.run(_fetch_all(store, settings, [source], rows, now_utc(), report, None))
    report.seconds = time.monotonic() - started
    return report


def _feed_state(row):
    from .sources.remote import SourceState

    return SourceState(
        location=row.location,
        etag=row.etag,
        last_modified=row.last_modified,
        last_fetch=row.last_fetch,
        last_status=row.last_status,
        last_error=row.last_error,
        error_count=row.error_count or 0,
        next_due=row.next_due,
        disabled=row.disabled,
        moved_to=row.moved_to,
        moved_count=row.moved_count or 0,
    )


def _parse_pool(n: int):
    """A factory of worker processes for parsing when there are many feeds (feedparser is pure
    Python, so threads would not add CPU); None means threads (see `sources.parsing`)."""
    from .workers import cpu_workers, process_pool

    workers = cpu_workers()
    if n < PARSE_PROCESSES_MIN or workers < 2:
        return None
    from .sources import feeds  # noqa: F401  (loaded once here, inherited by forked workers)

    def make():
        return process_pool(workers, ["aggregator.sources.feeds"])

    make.workers = workers
    make.first = make()  # started before the event loop and the writer thread exist, so fork when it can
    return make


async def _fetch_all(
    store: Store, settings: Settings, sources: list[SourceSettings], rows, now, report, parser
) -> None:
    """Fetch `sources`, parse each body in `parser` (a process pool, or None for threads) as it
    arrives, and store the results on one writer thread."""
    from concurrent.futures import ThreadPoolExecutor

    from .sources.feeds import FeedContext, FeedError
    from .sources.parsing import Parsers
    from .sources.remote import USER_AGENT, FetchRequest, fetch_many

    loop = asyncio.get_running_loop()
    by_name = {s.name: s for s in sources}
    aliases = settings.category_aliases
    writer = ThreadPoolExecutor(1, thread_name_prefix="aggregator-store")  # one writer: SQLite has one anyway
    states: list[dict] = []  # source states not yet written; flushed in batches (a 304 costs one row update)
    pools = _first_then(parser) if parser else None
    parsers = Parsers(settings.fetch.parse_timeout, pools, getattr(parser, "workers", 1))

    async def handle(req: FetchRequest, result) -> None:
        src = by_name[req.name]
        parsed, problem = None, None
        if result.status == 200 and result.body is not None and result.error is None:
            ctx = FeedContext(
                src.name,
                result.final_url or req.url,
                tuple(settings.canonical_category(c) for c in src.categories),
                aliases,
                settings.limits_for(src),
                src.feed_categories,
            )
            try:
                parsed = await parsers.parse(result.body, result.headers or {}, ctx)
            except FeedError as e:
                problem = str(e)
            except Exception as e:  # a parser crash is this feed's problem, not the run's
                problem = f"cannot parse: {e.__class__.__name__}: {e}"
        await loop.run_in_executor(
            writer, _record_fetch, store, settings, src, rows[src.name], result, parsed, problem, now, report, states
        )

    requests = [
        FetchRequest(
            s.name,
            rows[s.name].location,
            rows[s.name].etag,
            rows[s.name].last_modified,
            s.timeout or settings.fetch.timeout,
            s.user_agent or settings.fetch.user_agent or USER_AGENT,
            settings.allow_private(s),
        )
        for s in sources
    ]
    try:
        f = settings.fetch
        await fetch_many(requests, f.concurrency, f.per_host, f.max_bytes, handle)
    finally:
        writer.submit(_flush_states, store, states)
        writer.shutdown(wait=True)
        parsers.shutdown()


def _first_then(make):
    """The pool `_parse_pool` started early, then fresh ones from `make`."""
    first = [make.first]
    return lambda: first.pop() if first else make()


STATE_BATCH = 100


def _new_category_budget(store: Store, settings: Settings, src, source_id: int, entries: list[Entry], now):
    """`entries` with the categories this source may not create today removed (see
    `cleaning.cap_new_categories`); the source's configured categories always stay."""
    from datetime import timedelta

    from .cleaning import cap_new_categories

    limit = settings.limits_for(src).new_categories_per_day
    names = {c for e in entries for c in e.categories}
    existing = store.existing_categories(names)
    if names <= existing:
        return entries
    created = store.categories_created_since(source_id, now - timedelta(days=1))
    configured = {settings.canonical_category(c) for c in src.categories}
    entries, dropped = cap_new_categories(entries, existing | configured, max(0, limit - created))
    if dropped:
        shown = ", ".join(repr(d) for d in dropped[:5]) + (" …" if len(dropped) > 5 else "")
        log.warning(
            "source=%s limit: %d new categories not created (new_categories_per_day = %d, %d created in the "
            "last 24 h): %s", src.name, len(dropped), limit, created, shown,
        )  # fmt: skip
    return entries


def _flush_states(store: Store, states: list[dict]) -> None:
    store.save_feed_states(states)
    states.clear()


def _record_fetch(store: Store, settings: Settings, src, row, result, parsed, problem, now, report, states) -> None:
    """Store one fetch's entries and the source's new state (runs on the single writer thread).
    Storing may fail (a database error, a value it refuses): that is this source's error,
    recorded with back-off like any other, never the end of the run."""
    try:
        _store_fetch(store, settings, src, row, result, parsed, problem, now, report, states)
    except Exception as e:
        log.exception("source=%s %s: cannot store the fetched entries", src.name, result.url)
        reason = f"cannot store entries: {e.__class__.__name__}: {str(e)[:200]}"
        _store_fetch(store, settings, src, row, result, None, reason, now, report, states)


MAX_CUT_LINES = 20  # per fetch; a feed with thousands of oversized items must not flood the log


def _report_cuts(src, parsed, report) -> None:
    for note in parsed.cuts[:MAX_CUT_LINES]:
        log.warning("source=%s limit: %s", src.name, note)
    if len(parsed.cuts) > MAX_CUT_LINES:
        log.warning("source=%s limit: … and %d more cuts", src.name, len(parsed.cuts) - MAX_CUT_LINES)
    for r in parsed.rejected:
        log.warning("source=%s rejected %s", src.name, r)
    report.rejected += parsed.rejected


def _store_fetch(store: Store, settings: Settings, src, row, result, parsed, problem, now, report, states) -> None:
    from dataclasses import asdict

    from .sources.feeds import assign_keys, choose_identity
    from .sources.remote import FAILED, FETCHED, GONE, decide

    interval = src.every or settings.fetch.every
    hint = parsed.hint if parsed else None
    state, outcome = decide(_feed_state(row), result, interval, now, parse_error=problem, hint=hint)
    extra: dict = {}
    if parsed is not None and outcome == FETCHED:
        _report_cuts(src, parsed, report)
        known = store.stamps(row.id)
        links = store.entry_links(row.id) if known and row.identity != "link" else {}
        decision = choose_identity(parsed.items, row.identity or "guid", row.identity_reason, links)
        if decision.mode != (row.identity or "guid"):
            log.warning("source=%s switches to link identity: %s", src.name, decision.reason)
            # Keep what is stored under the new identity, so nothing comes back as a duplicate.
            if store.rekey(row.id, {key: f"link:{link}" for link, key in links.items() if key.startswith("guid:")}):
                known = store.stamps(row.id)
        entries = assign_keys(parsed.items, decision.mode)
        entries = _new_category_budget(store, settings, src, row.id, entries, now)
        saved, touched = store.save_entries(row.id, entries, known, now)
        report.new += saved.new
        report.updated += saved.updated
        report.unchanged += saved.unchanged
        report.touched += touched
        extra = {"identity": decision.mode, "identity_reason": decision.reason, "feed_flags": parsed.flag}
        if parsed.flag:
            log.warning("source=%s %s: ill-formed feed, entries kept: %s", src.name, result.url, parsed.flag)
    if state.location != row.location:
        log.warning("source=%s moved permanently: %s → %s", src.name, row.location, state.location)
    # Entries are already committed; if the run dies before this batch is written, the next run
    # fetches those feeds again without validators and finds their entries unchanged.
    if not extra:
        extra = {"identity": row.identity or "guid", "identity_reason": row.identity_reason}
        extra["feed_flags"] = row.feed_flags
    states.append({"id": row.id, **asdict(state), **extra})
    if len(states) >= STATE_BATCH:
        _flush_states(store, states)
    if outcome == FETCHED:
        report.fetched += 1
    elif outcome in (FAILED, GONE):
        report.failed += 1
        report.errors.append(Rejected(src.name, result.url, state.last_error or "failed"))
        log.warning("source=%s %s: %s", src.name, result.url, state.last_error)
    else:
        report.not_modified += 1
    log.info(
        "source=%s status=%s outcome=%s seconds=%.2f next_due=%s",
        src.name, result.status, outcome, result.seconds, state.next_due,
    )  # fmt: skip
