"""Recording one fetch: the source's new state (`sources.remote.decide`) and, for a document,
its entries, stored.

A fetch run (`fetching`) hands each result here. Entries go to the store on the run's one
writer thread; a 304 touches no table and is recorded on the event loop. Source states are
written in batches (`StateBatch`), always by the writer thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from .config import Settings, SourceSettings
from .model import Entry, Rejected
from .store import SourceRecord, Store

if TYPE_CHECKING:
    from .fetching import FetchReport
    from .sources.feeds import ParsedFeed
    from .sources.remote import FetchResult

log = logging.getLogger("aggregator.pipeline")


def feed_state(row):
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


class StateBatch:
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
            full = len(self._rows) >= STATE_BATCH
        if full:
            self.flush()

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
    states: StateBatch  # source states not written yet
    started: float = field(default_factory=time.monotonic)
    # The outcome counts are kept from two threads (304s on the event loop, the rest on the writer).
    tally: threading.Lock = field(default_factory=threading.Lock)

    def clock(self) -> datetime:
        """The run's `now` moved on by the time it has run: when a fetch is recorded. A source's
        next fetch counts from its own fetch, not from the run's start, or a run that waited
        long for host slots would make its late fetches due again at once. Whole seconds, like
        the store's clock, so a fetch never looks later than a `now_utc()` read after it."""
        from datetime import timedelta

        return (self.now + timedelta(seconds=time.monotonic() - self.started)).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class Fetched:
    """One source's fetch, as `record_fetch` takes it."""

    source: SourceSettings
    row: SourceRecord  # the source's stored state before this fetch
    result: FetchResult
    parsed: ParsedFeed | None = None  # the document, when one was fetched and parsed
    problem: str | None = None  # why the document could not be parsed (or stored)


def record_fetch(run: FetchRun, fetched: Fetched) -> None:
    """Store one fetch's entries and the source's new state: on the run's writer thread, or on
    the event loop for a 304, which stores no entries (its state joins the batch). Storing may
    fail (a database error, a value it refuses): that is this source's error, recorded with
    back-off like any other, never the end of the run."""
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
    state, outcome = decide(feed_state(row), result, interval, run.clock(), parse_error=problem, hint=hint)
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
