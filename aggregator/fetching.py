"""The remote-fetch stage: fetch feeds over HTTP, parse what changed off the event loop, store.

`fetch` (the CLI's `fetch`, and `update` for the due feeds) and `fetch_one` (the daemon's
per-source job) are the entry points; `pipeline` re-exports them.

A cycle where every feed answers 304 must cost little more than its HTTP: nothing here imports
the parser, the dedup or the publishing modules until a document actually needs parsing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from .config import Settings, SourceSettings
from .fullpages import FullTextRun
from .model import Rejected
from .recording import STATE_BATCH, Fetched, FetchRun, StateBatch, feed_state, record_fetch  # noqa: F401  (STATE_BATCH: the stage's API)
from .store import Store, now_utc

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
    store: Store, settings: Settings, names: list[str] | None = None, due_only: bool = False, now=None, budget=None,
    with_features: bool = False,
) -> FetchReport:
    """Fetch remote sources: the ones named (even if disabled), else every enabled one that is
    not disabled (by a 410) and, with `due_only`, whose next fetch is due. An unknown name is
    a ConfigError. `with_features`: the parse workers also compute the entries' dedup features
    (`update`, which dedups next, has them computed in parallel there rather than by the dedup
    stage in the main process; a fetch alone leaves them to the next dedup run)."""
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
            wanted = (lambda r: is_due(feed_state(r), now)) if due_only else (lambda r: not r.disabled)
            chosen = [s for s in chosen if wanted(rows[s.name])]
        if chosen:
            report.sources = len(chosen)
            # Worker processes only when documents are coming: a source without validators
            # (never fetched, or a server that sends none) will answer with one; the others
            # mostly answer 304, and a cycle of those must not fork parsers or import feedparser.
            expected = sum(1 for s in chosen if not (rows[s.name].etag or rows[s.name].last_modified))
            parser = _parse_pool(expected)
            # Planned for threads, the run still moves to processes if documents keep coming.
            later = _parse_pool(len(chosen), now=False) if parser is None else None
            patterns = None
            if with_features and (parser or later) is not None and settings.dedup.enabled:
                from .features import tracking_patterns

                patterns = tracking_patterns(settings.dedup.tracking_params)
            asyncio.run(_fetch_all(store, settings, chosen, rows, now, report, parser, budget, patterns, later))
    report.seconds = time.monotonic() - started
    return report


def fetch_sources(store: Store, settings: Settings, sources: list[SourceSettings], budget=None) -> FetchReport:
    """Fetch exactly `sources` now (a fetch worker's claimed batch), parsing in threads: a
    batch is small, and a worker runs one batch after another. A big one (`[workers] batch`)
    whose documents keep coming moves to worker processes as `fetch` does (`Parsers`' `later`)."""
    started = time.monotonic()
    report = FetchReport(sources=len(sources))
    if sources:
        rows = store.feed_sources({s.name: s.url or "" for s in sources})
        later = _parse_pool(len(sources), now=False)
        asyncio.run(_fetch_all(store, settings, sources, rows, now_utc(), report, None, budget, later=later))
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


def _parse_pool(n: int, now: bool = True) -> ParsePools | None:
    """The worker processes for parsing when `n` documents are expected (feedparser is pure
    Python, so threads would not add CPU); None means threads (see `sources.parsing`). `now`:
    start the first pool here, before the event loop and the writer thread exist, so it can
    fork; otherwise nothing starts, nor is counted, until a pool is asked for (`Parsers`' `later`)."""
    if n < PARSE_PROCESSES_MIN:
        return None  # before importing `workers`: it loads multiprocessing, which a 304 cycle never needs
    if not now:
        return ParsePools()
    pools = ParsePools()
    if pools.workers < 2:
        return None
    from .sources import feeds  # noqa: F401  (loaded once here, inherited by forked workers)

    pools.first = pools()
    return pools


class ParsePools:
    """The parse worker pools of one run: called for each pool `Parsers` needs (its first, and a
    new one whenever a parse ran over the limit); `first`, when started early, is the first."""

    def __init__(self) -> None:
        self.first = None

    @property
    def workers(self) -> int:
        from .workers import cpu_workers

        return cpu_workers()

    def __call__(self):
        if self.first is not None:
            pool, self.first = self.first, None
            return pool
        from .workers import process_pool

        return process_pool(self.workers, ["aggregator.sources.feeds"])

    def close(self) -> None:
        """Shut down the early pool if no parse ever took it."""
        if self.first is not None:
            self.first.shutdown(wait=True)
            self.first = None


# Over 60 lines: one run's event-loop closure (parsers made on the first document, 304s recorded
# in place, the rest handed to the writer) reads best whole; its parts are the modules it calls.
async def _fetch_all(
    store: Store, settings: Settings, sources: list[SourceSettings], rows, now, report, parser, budget=None,
    dedup_patterns: tuple[str, ...] | None = None, later=None,
) -> None:
    """Fetch `sources`, parse each body in `parser` (a process pool, or None for threads) as it
    arrives, and store the results on one writer thread. `budget`: the per-host budget shared
    beyond this call (`sources.hostbudget`), if any. `dedup_patterns`: compute dedup features
    in the parse too (`parsing.parse_with_features`). `later`: with threads, the process pool
    to move to when more than PARSE_PROCESSES_MIN documents come."""
    from concurrent.futures import ThreadPoolExecutor

    from .sources.remote import USER_AGENT, FetchRequest, fetch_many

    loop = asyncio.get_running_loop()
    by_name = {s.name: s for s in sources}
    aliases = settings.category_aliases
    writer = ThreadPoolExecutor(1, thread_name_prefix="aggregator-store")  # one writer: SQLite has one anyway
    run = FetchRun(store, settings, now, report, StateBatch(store, writer))
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
                parsers = Parsers(settings.fetch.parse_timeout, parser, parser.workers if parser else 1, dedup_patterns,
                                  later, PARSE_PROCESSES_MIN)
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
            record_fetch(run, fetched)
        else:
            await loop.run_in_executor(writer, record_fetch, run, fetched)

    requests = [_request(settings, s, rows[s.name], USER_AGENT, FetchRequest) for s in sources]
    try:
        f = settings.fetch
        await fetch_many(requests, f.concurrency, f.per_host, f.max_bytes, handle, hosts=pages.hosts, budget=budget)
    finally:
        run.states.flush()
        writer.shutdown(wait=True)
        if parsers is not None:
            parsers.shutdown()
        if parser is not None:
            parser.close()


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
