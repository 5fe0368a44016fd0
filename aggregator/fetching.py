"""The remote-fetch stage: fetch feeds over HTTP, parse what changed off the event loop, store.

`fetch` (the CLI's `fetch`, and `update` for the due feeds) and `fetch_one` (the daemon's
per-source job) are the entry points; `pipeline` re-exports them.

A cycle where every feed answers 304 must cost little more than its HTTP: nothing here imports
the parser, the dedup or the publishing modules until a document actually needs parsing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from .config import Settings, SourceSettings
from .fullpages import FullTextRun
from .model import Entry, Rejected
from .store import SourceRecord, Store, now_utc

if TYPE_CHECKING:  # imported where a document is fetched: a cycle of 304s does not load them
    from .sources.feeds import ParsedFeed
    from .sources.remote import FetchResult

log = logging.getLogger("aggregator.pipeline")


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
    http_seconds: float = 0.0  # time spent waiting on HTTP, summed over the sources

    def summary(self) -> str:
        return (
            f"{self.sources} feeds fetched: {self.fetched} downloaded, {self.not_modified} not modified, "
            f"{self.failed} failed; {self.new} new, {self.updated} updated, {self.unchanged} unchanged entries; "
            f"{self.seconds:.2f} s"
        )


# Below this many documents to parse, parse in threads: starting processes costs more.
PARSE_PROCESSES_MIN = 24


def fetch(
    store: Store, settings: Settings, names: list[str] | None = None, due_only: bool = False, now=None, budget=None
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
            # Worker processes only when documents are coming: a source without validators
            # (never fetched, or a server that sends none) will answer with one; the others
            # mostly answer 304, and a cycle of those must not fork parsers or import feedparser.
            expected = sum(1 for s in chosen if not (rows[s.name].etag or rows[s.name].last_modified))
            asyncio.run(_fetch_all(store, settings, chosen, rows, now, report, _parse_pool(expected), budget))
    report.seconds = time.monotonic() - started
    return report


def fetch_sources(store: Store, settings: Settings, sources: list[SourceSettings], budget=None) -> FetchReport:
    """Fetch exactly `sources` now (a fetch worker's claimed batch), parsing in threads:
    a batch is small, and a worker runs one batch after another."""
    started = time.monotonic()
    report = FetchReport(sources=len(sources))
    if sources:
        rows = store.feed_sources({s.name: s.url or "" for s in sources})
        asyncio.run(_fetch_all(store, settings, sources, rows, now_utc(), report, None, budget))
    report.seconds = time.monotonic() - started
    return report


def fetch_one(store: Store, settings: Settings, source: SourceSettings, budget=None) -> FetchReport:
    """Fetch one remote source now (the daemon's per-source job)."""
    from .config import ConfigError

    if source.url is None:
        raise ConfigError(f"{settings.config_path}: source {source.name!r} has no url")
    started = time.monotonic()
    rows = store.feed_sources({source.name: source.url})
    report = FetchReport(sources=1)
    asyncio.run(_fetch_all(store, settings, [source], rows, now_utc(), report, None, budget))
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
    """A factory of worker processes for parsing when `n` documents are expected (feedparser is
    pure Python, so threads would not add CPU); None means threads (see `sources.parsing`)."""
    if n < PARSE_PROCESSES_MIN:
        return None  # before importing `workers`: it loads multiprocessing, which a 304 cycle never needs
    from .workers import cpu_workers, process_pool

    workers = cpu_workers()
    if workers < 2:
        return None
    from .sources import feeds  # noqa: F401  (loaded once here, inherited by forked workers)

    def make():
        return process_pool(workers, ["aggregator.sources.feeds"])

    make.workers = workers
    make.first = make()  # started before the event loop and the writer thread exist, so fork when it can
    return make


async def _fetch_all(
    store: Store, settings: Settings, sources: list[SourceSettings], rows, now, report, parser, budget=None
) -> None:
    """Fetch `sources`, parse each body in `parser` (a process pool, or None for threads) as it
    arrives, and store the results on one writer thread. `budget`: the per-host budget shared
    beyond this call (`sources.hostbudget`), if any."""
    from concurrent.futures import ThreadPoolExecutor

    from .sources.remote import USER_AGENT, FetchRequest, fetch_many

    loop = asyncio.get_running_loop()
    by_name = {s.name: s for s in sources}
    aliases = settings.category_aliases
    writer = ThreadPoolExecutor(1, thread_name_prefix="aggregator-store")  # one writer: SQLite has one anyway
    run = FetchRun(store, settings, now, report, _Pending(store, writer))
    parsers = None  # made when the first document arrives: a cycle of 304s never loads the parser
    shaping = None  # the rules and category names parsing needs, made with the parsers
    pages = FullTextRun(store, settings, writer, now)

    async def handle(req: FetchRequest, result) -> None:
        nonlocal parsers, shaping
        src = by_name[req.name]
        parsed, problem = None, None
        if result.status == 200 and result.body is not None and result.error is None:
            from .sources.feeds import FeedContext, FeedError
            from .sources.parsing import Parsers

            if parsers is None:
                pools = _first_then(parser) if parser else None
                parsers = Parsers(settings.fetch.parse_timeout, pools, getattr(parser, "workers", 1))
                shaping = _Shaping.of(settings)
            ctx = FeedContext(
                src.name,
                result.final_url or req.url,
                tuple(settings.canonical_category(c) for c in src.categories),
                aliases,
                settings.limits_for(src),
                src.feed_categories,
                shaping.known,
                shaping.rewrites(src.name),
            )
            try:
                parsed = await parsers.parse(result.body, result.headers or {}, ctx)
            except FeedError as e:
                problem = str(e)
            except Exception as e:  # a parser crash is this feed's problem, not the run's
                problem = f"cannot parse: {e.__class__.__name__}: {e}"
            if parsed is not None and src.full_text:
                await _full_text(parsed, src, req, pages)
        report.http_seconds += result.seconds
        fetched = Fetched(src, rows[src.name], result, parsed, problem)
        if result.status == 304 and result.error is None:
            # A 304 touches no table: its new state joins the batch that the writer thread
            # writes. Recorded here, it costs no hand-off to that thread and back (a sixth of
            # a cycle of 304s). Everything else is recorded on the writer thread.
            _record_fetch(run, fetched)
        else:
            await loop.run_in_executor(writer, _record_fetch, run, fetched)

    requests = [_request(settings, s, rows[s.name], USER_AGENT, FetchRequest) for s in sources]
    try:
        f = settings.fetch
        await fetch_many(requests, f.concurrency, f.per_host, f.max_bytes, handle, hosts=pages.hosts, budget=budget)
    finally:
        run.states.flush()
        writer.shutdown(wait=True)
        if parsers is not None:
            parsers.shutdown()
        elif parser is not None:
            parser.first.shutdown(wait=True)


@dataclass(frozen=True, slots=True)
class _Shaping:
    """What parsing needs of the republishing rules and `[categories]`, made once per run."""

    known: dict  # `categorymap.known_names`
    rules: tuple  # every `rules.Rule`

    @classmethod
    def of(cls, settings: Settings) -> _Shaping:
        from .categorymap import known_names
        from .rules import compile_rules

        return cls(known_names(settings), compile_rules(settings.rules) if settings.rules else ())

    def rewrites(self, source: str) -> tuple:
        from .rules import rewrites_for

        return rewrites_for(self.rules, source)


async def _full_text(parsed, src: SourceSettings, req, run) -> None:
    """The articles of a teaser feed's pages (`fullpages`); trouble there keeps the teasers."""
    from .fullpages import complete

    try:
        await complete(parsed, src, req, run)
    except Exception:
        log.exception("source=%s full text: cannot complete the teasers; they are kept", src.name)


_warned_tls: set[str] = set()


def _request(settings: Settings, src: SourceSettings, row, user_agent: str, request_type):
    """The fetch of one source, its HTTP options (`sources.httpopts`) included."""
    from urllib.parse import urlsplit

    from .sources.httpopts import cookie_header, credentials

    headers = dict(src.headers)
    cookie = cookie_header(src.cookies)
    if cookie:
        headers["Cookie"] = cookie
    if not src.verify_tls and src.name not in _warned_tls:
        _warned_tls.add(src.name)
        log.warning("source=%s verify_tls = false: its TLS certificate is not checked", src.name)
    return request_type(
        src.name,
        row.location,
        row.etag,
        row.last_modified,
        src.timeout or settings.fetch.timeout,
        src.user_agent or settings.fetch.user_agent or user_agent,
        settings.allow_private(src),
        headers=tuple(headers.items()),
        auth=credentials(src.auth, src.auth_env),
        proxy=src.proxy,
        verify_tls=src.verify_tls,
        trusted_host=(urlsplit(src.url or row.location).hostname or "").lower() or None,
        prefer=src.prefer,
    )


def _first_then(make):
    """The pool `_parse_pool` started early, then fresh ones from `make`."""
    first = [make.first]
    return lambda: first.pop() if first else make()


STATE_BATCH = 100


def _new_category_budget(
    store: Store, settings: Settings, src, source_id: int, entries: list[Entry], now, stored: set[str]
):
    """`entries` with the categories this source may not create today removed (see
    `cleaning.cap_new_categories`); the source's configured categories always stay."""
    from datetime import timedelta

    from .categorymap import known_names
    from .cleaning import cap_new_categories

    limit = settings.limits_for(src).new_categories_per_day
    names = {c for e in entries for c in e.categories}
    if names <= stored:
        return entries
    existing = store.existing_categories(names)
    if names <= existing:
        stored |= names
        return entries
    created = store.categories_created_since(source_id, now - timedelta(days=1))
    configured = {settings.canonical_category(c) for c in src.categories}
    # what the config names (`[categories]`, rules' categories) is not a feed's invention either
    configured |= {c for c in known_names(settings).values() if c in names}
    entries, dropped = cap_new_categories(entries, existing | configured, max(0, limit - created))
    if dropped:
        shown = ", ".join(repr(d) for d in dropped[:5]) + (" …" if len(dropped) > 5 else "")
        log.warning(
            "source=%s limit: %d new categories not created (new_categories_per_day = %d, %d created in the "
            "last 24 h): %s", src.name, len(dropped), limit, created, shown,
        )  # fmt: skip
    return entries


def _new_location(store: Store, src, row, result, state, outcome, now):
    """Where the source is fetched from next: the feed found on its page, a permanent
    redirect's target, or the page again when the feed found there is gone."""
    from .sources.remote import FETCHED

    if result.page is not None and outcome == FETCHED:
        store.save_discovery(row.id, result.page, state.location, now)
        log.info("source=%s %s is a page; its feed is %s", src.name, result.page, state.location)
    elif state.location != row.location:
        log.warning("source=%s moved permanently: %s → %s", src.name, row.location, state.location)
    return _rediscover_if_gone(store, src, row, result, state, outcome)


def _rediscover_if_gone(store: Store, src, row, result, state, outcome):
    """A feed found on a page that answers 404 or 410 is forgotten: the next fetch reads the
    page again (sites move their feeds), instead of the source being disabled."""
    from dataclasses import replace

    from .sources.remote import FAILED, GONE

    if outcome not in (FAILED, GONE) or result.status not in (404, 410) or not row.config_url:
        return state
    if row.location == row.config_url or result.page is not None:
        return state
    found = store.discoveries().get(row.id)
    if found is None or found[1] != row.location:
        return state
    store.forget_discovery(row.id)
    log.warning("source=%s the feed found on %s is gone (%s); the page is read again next time",
                src.name, found[0], result.status)  # fmt: skip
    return replace(state, location=found[0], disabled=None, etag=None, last_modified=None)


class _Pending:
    """Source states not yet written, written in batches on the writer thread (a 304 costs one
    row in a batched update); and the category names this run already found stored, so a feed
    whose items carry only those asks the database nothing (this run's writer is the only one
    creating categories, and nothing deletes them meanwhile).

    States come from the event loop (304s) and from the writer thread (everything else), so
    taking a batch is locked; the batch is then written by the writer, in the order submitted."""

    def __init__(self, store: Store, writer) -> None:
        self.store = store
        self.writer = writer
        self.categories: set[str] = set()
        self._rows: list[dict] = []
        self._lock = threading.Lock()

    def add(self, row: dict) -> None:
        with self._lock:
            self._rows.append(row)
            if len(self._rows) < STATE_BATCH:
                return
            batch, self._rows = self._rows, []
        self.writer.submit(_write_states, self.store, batch)

    def flush(self) -> None:
        with self._lock:
            batch, self._rows = self._rows, []
        if batch:
            self.writer.submit(_write_states, self.store, batch)


def _write_states(store: Store, batch: list[dict]) -> None:
    try:
        store.save_feed_states(batch)
    except Exception:
        # Those sources keep their previous state: the next run fetches them again without
        # the new validators, and finds their entries unchanged.
        log.exception("cannot save the state of %d sources", len(batch))


@dataclass(slots=True)
class FetchRun:
    """What every fetch of one run is recorded into."""

    store: Store
    settings: Settings
    now: datetime
    report: FetchReport
    states: _Pending  # source states not written yet
    started: float = field(default_factory=time.monotonic)
    # The outcome counts are kept from two threads (304s on the event loop, the rest on the writer).
    tally: threading.Lock = field(default_factory=threading.Lock)

    def clock(self) -> datetime:
        """The run's `now` moved on by the time it has run: when a fetch is recorded. A source's
        next fetch counts from its own fetch, not from the run's start, or a run that waited
        long for host slots would make its late fetches due again at once."""
        from datetime import timedelta

        return self.now + timedelta(seconds=time.monotonic() - self.started)


@dataclass(frozen=True, slots=True)
class Fetched:
    """One source's fetch, as the writer thread records it."""

    source: SourceSettings
    row: SourceRecord  # the source's stored state before this fetch
    result: FetchResult
    parsed: ParsedFeed | None = None  # the document, when one was fetched and parsed
    problem: str | None = None  # why the document could not be parsed (or stored)


def _record_fetch(run: FetchRun, fetched: Fetched) -> None:
    """Store one fetch's entries and the source's new state (runs on the single writer thread).
    Storing may fail (a database error, a value it refuses): that is this source's error,
    recorded with back-off like any other, never the end of the run."""
    try:
        _store_fetch(run, fetched)
    except Exception as e:
        log.exception("source=%s %s: cannot store the fetched entries", fetched.source.name, fetched.result.url)
        reason = f"cannot store entries: {e.__class__.__name__}: {str(e)[:200]}"
        _store_fetch(run, replace(fetched, parsed=None, problem=reason))


MAX_CUT_LINES = 20  # per fetch; a feed with thousands of oversized items must not flood the log


def _report_cuts(src, parsed, report) -> None:
    for note in parsed.cuts[:MAX_CUT_LINES]:
        log.warning("source=%s limit: %s", src.name, note)
    if len(parsed.cuts) > MAX_CUT_LINES:
        log.warning("source=%s limit: … and %d more cuts", src.name, len(parsed.cuts) - MAX_CUT_LINES)
    for r in parsed.rejected:
        log.warning("source=%s rejected %s", src.name, r)
    report.rejected += parsed.rejected


def _store_fetch(run: FetchRun, fetched: Fetched) -> None:
    from dataclasses import fields

    from .sources.remote import FAILED, FETCHED, GONE, decide

    store, settings, now, report, states = run.store, run.settings, run.now, run.report, run.states
    src, row, result, parsed, problem = fetched.source, fetched.row, fetched.result, fetched.parsed, fetched.problem

    interval = src.every or settings.fetch.every
    hint = parsed.hint if parsed else None
    state, outcome = decide(_feed_state(row), result, interval, run.clock(), parse_error=problem, hint=hint)
    extra: dict = {}
    if parsed is not None and outcome == FETCHED:
        from .sources.identity import assign_keys, choose_identity

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
        entries = _new_category_budget(store, settings, src, row.id, entries, now, states.categories)
        saved, touched = store.save_entries(row.id, entries, known, now)
        report.new += saved.new
        report.updated += saved.updated
        report.unchanged += saved.unchanged
        report.touched += touched
        extra = {"identity": decision.mode, "identity_reason": decision.reason, "feed_flags": parsed.flag}
        if parsed.flag:
            log.warning("source=%s %s: ill-formed feed, entries kept: %s", src.name, result.url, parsed.flag)
    state = _new_location(store, src, row, result, state, outcome, now)
    # Entries are already committed; if the run dies before this batch is written, the next run
    # fetches those feeds again without validators and finds their entries unchanged.
    if not extra:
        extra = {"identity": row.identity or "guid", "identity_reason": row.identity_reason}
        extra["feed_flags"] = row.feed_flags
    # A shallow copy of the fields: `asdict` deep-copies every value (datetimes included), which
    # was a tenth of the cost of recording a 304.
    states.add({"id": row.id, **{f.name: getattr(state, f.name) for f in fields(state)}, **extra})
    with run.tally:
        if outcome == FETCHED:
            report.fetched += 1
        elif outcome in (FAILED, GONE):
            report.failed += 1
            report.errors.append(Rejected(src.name, result.url, state.last_error or "failed"))
        else:
            report.not_modified += 1
    if outcome in (FAILED, GONE):
        log.warning("source=%s %s: %s", src.name, result.url, state.last_error)
    log.info(
        "source=%s status=%s outcome=%s seconds=%.2f next_due=%s",
        src.name, result.status, outcome, result.seconds, state.next_due,
    )  # fmt: skip
