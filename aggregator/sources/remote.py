"""HTTP fetching of remote feeds: polite to publishers, robust against every server that is not.

The I/O is `fetch_many` (aiohttp, concurrency bounded globally and per host, one time limit
per source, bodies streamed and cut off at `max_bytes`). Every decision about a source — is it
due, how long to back off, which hints to honour, when a permanent redirect becomes the new
URL — is a small pure function of data below, so it is tested without a network.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from .. import __version__
from .hostbudget import HostBudget, next_poll

USER_AGENT = f"aggregator/{__version__} (+https://github.com/aggregator/aggregator)"
ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
MAX_REDIRECTS = 5
REDIRECT_GRACE = 3  # consecutive fetches that must agree before a permanent redirect replaces the URL
BACKOFF_CAP = 24 * 3600.0  # a failing source is still polled at least daily, so it recovers by itself
BACKOFF_JITTER = 0.2  # delays are spread over [80 %, 100 %] so failed sources do not retry in lockstep
HINT_CAP = 24 * 3600.0  # a feed's own hints may lengthen its interval up to this, never shorten it
CHUNK = 64 * 1024


# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class FetchRequest:
    name: str
    url: str
    etag: str | None = None
    last_modified: str | None = None
    timeout: float = 20.0
    user_agent: str = USER_AGENT
    allow_private: bool = False  # may connect to loopback/private addresses (`netpolicy`)
    # Per-source options (`httpopts`); left out of the repr, as they may carry secrets.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    auth: object = field(default=None, repr=False)  # httpopts.Credentials
    proxy: str | None = field(default=None, repr=False)  # the source's own; None: the environment's
    verify_tls: bool = True
    trusted_host: str | None = None  # headers, cookies and auth go to this host only
    discover: bool = True  # an HTML page is searched for the feed it links to
    prefer: str | None = None  # atom | rss | json, for discovery


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one request came back with; `status` is None when there was no HTTP response."""

    name: str
    url: str  # the URL requested
    status: int | None
    body: bytes | None = None
    headers: dict[str, str] | None = None  # lower-case names
    final_url: str | None = None  # after redirects
    permanent: str | None = None  # where a leading run of permanent redirects (301/308) leads
    error: str | None = None
    seconds: float = 0.0
    page: str | None = None  # the HTML page this feed's URL was discovered on


@dataclass(frozen=True, slots=True)
class SourceState:
    """The stored bookkeeping of one remote source (a `SOURCES`'s remote columns)."""

    location: str  # the URL currently fetched
    etag: str | None = None
    last_modified: str | None = None
    last_fetch: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    error_count: int = 0
    next_due: datetime | None = None
    disabled: str | None = None
    moved_to: str | None = None
    moved_count: int = 0


# ---------------------------------------------------------------- decisions


def is_due(state: SourceState, now: datetime) -> bool:
    """A source is fetched by schedule when it is not disabled and its time has come."""
    return state.disabled is None and (state.next_due is None or state.next_due <= now)


def backoff_delay(errors: int, interval: float, rand: float) -> float:
    """Seconds to wait after `errors` consecutive failures: the interval doubled per failure,
    capped at a day, then spread downwards by up to 20 % with `rand` in [0, 1)."""
    raw = min(BACKOFF_CAP, interval * 2.0 ** min(max(0, errors - 1), 64))  # months of errors must not overflow
    return raw * (1.0 - BACKOFF_JITTER * rand)


def apply_hints(interval: float, *hints: float | None) -> float:
    """The fetch interval after a feed's own hints (`<ttl>`, sy:updatePeriod, max-age): they
    may lengthen it, up to HINT_CAP (or the configured interval if that is longer), never shorten it."""
    given = [h for h in hints if h is not None and h > 0]
    if not given or max(given) <= interval:
        return interval
    return min(max(given), max(interval, HINT_CAP))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d+)", re.I)


def parse_max_age(cache_control: str | None) -> float | None:
    if not cache_control or "no-cache" in cache_control.lower() or "no-store" in cache_control.lower():
        return None
    m = _MAX_AGE.search(cache_control)
    return float(m.group(1)) if m else None


def redirect_step(state: SourceState, permanent: str | None) -> SourceState:
    """Bookkeeping of permanent redirects. The stored URL changes only after REDIRECT_GRACE
    consecutive fetches were redirected permanently to the same place, so one misconfigured
    response cannot lose a subscription; any fetch that is not so redirected resets the count."""
    if not permanent or permanent == state.location:
        return replace(state, moved_to=None, moved_count=0)
    count = state.moved_count + 1 if permanent == state.moved_to else 1
    if count >= REDIRECT_GRACE:
        # The conditional-GET validators belong to the old URL's responses; start afresh.
        return replace(state, location=permanent, moved_to=None, moved_count=0)
    return replace(state, moved_to=permanent, moved_count=count)


# Outcomes of `decide`.
FETCHED, NOT_MODIFIED, FAILED, GONE = "fetched", "not_modified", "failed", "gone"


def decide(
    state: SourceState,
    result: FetchResult,
    interval: float,
    now: datetime,
    *,
    parse_error: str | None = None,
    hint: float | None = None,
    rand: float | None = None,
) -> tuple[SourceState, str]:
    """The source's new state after a fetch (and the parse of its body): the whole policy of
    conditional GET, redirects, 410, back-off, Retry-After and feed hints in one pure function."""
    rand = random.random() if rand is None else rand
    headers = result.headers or {}
    if result.status is not None:
        state = redirect_step(state, result.permanent)
    if result.page is not None and result.status == 200 and result.error is None:
        # The configured URL is a page; from now on its feed is fetched directly.
        state = replace(state, location=result.url, moved_to=None, moved_count=0)
    state = replace(state, last_fetch=now, last_status=result.status)

    if result.status == 410:
        reason = f"410 Gone from {result.final_url or result.url} on {now:%Y-%m-%d}"
        return replace(state, disabled=reason, last_error=reason, next_due=None), GONE

    error = result.error
    if error is None and result.status not in (200, 304):
        error = f"HTTP {result.status}" + (f" from {result.final_url}" if result.final_url != result.url else "")
    if error is None and parse_error is not None:
        error = parse_error
    if error is not None:
        errors = state.error_count + 1
        delay = backoff_delay(errors, interval, rand)
        if result.status in (429, 503):
            retry = parse_retry_after(headers.get("retry-after"), now)
            if retry is not None:
                # Honoured for this URL only; other sources on the host go on as scheduled.
                delay = max(delay, min(retry, BACKOFF_CAP))
                error += f" (Retry-After {retry:.0f} s)"
        return replace(state, error_count=errors, last_error=error, next_due=now + timedelta(seconds=delay)), FAILED

    wait = apply_hints(interval, hint, parse_max_age(headers.get("cache-control")))
    moved = state.location != result.url
    state = replace(
        state,
        etag=headers.get("etag") or (None if moved else state.etag),
        last_modified=headers.get("last-modified") or (None if moved else state.last_modified),
        error_count=0,
        last_error=None,
        disabled=None,
        next_due=now + timedelta(seconds=wait),
    )
    if result.status == 304:
        return state, NOT_MODIFIED
    return state, FETCHED


# ---------------------------------------------------------------- I/O


class _TooBig(Exception):
    pass


REDIRECTS = (301, 302, 303, 307, 308)


def permanent_target(hops: Sequence[tuple[int, str]]) -> str | None:
    """The URL reached by the leading run of permanent redirects: `hops` are (status, target)."""
    target = None
    for status, url in hops:
        if status not in (301, 308):
            break
        target = url
    return target


def redirect_refusal(current: str, target: str) -> str | None:
    """Why a redirect from `current` to `target` is not followed (a downgrade, a non-HTTP scheme)."""
    old, new = urlsplit(current).scheme.lower(), urlsplit(target).scheme.lower()
    if new not in ("http", "https"):
        return f"refused: redirect to a non-HTTP URL ({new or 'no'} scheme)"
    if old == "https" and new == "http":
        return f"refused: redirect from https to http ({target[:200]})"
    return None


def connection_error(e: BaseException, host: str) -> str:
    """One message per kind of failure to connect. "Connection refused" and "no route" are not
    told apart: for a private address that would say which ports are open (a port-scan oracle)."""
    from .netpolicy import PrivateAddress
    from .tls import import_aiohttp

    aiohttp = import_aiohttp()
    cause = getattr(e, "os_error", None) or e.__cause__ or e
    if isinstance(cause, PrivateAddress) or isinstance(e, PrivateAddress):
        return str(cause if isinstance(cause, PrivateAddress) else e)
    if isinstance(e, getattr(aiohttp, "ClientConnectorDNSError", ())):  # aiohttp ≥ 3.10
        return f"cannot resolve host {host}"
    if isinstance(e, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return f"TLS error with {host}: {e.__class__.__name__}"
    return f"cannot connect to {host}"


async def _read_capped(resp, limit: int) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise _TooBig(f"body of {declared:,} bytes is over the {limit:,}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            raise _TooBig(f"body is over the {limit:,}-byte limit (cut off)")
        chunks.append(chunk)
    return b"".join(chunks)


# Over 60 lines: one loop over the redirect hops with a guard at each step; split up, the
# pieces would hand the hop state (URL, hops, status, headers) back and forth.
async def fetch_one(session, req: FetchRequest, max_bytes: int) -> FetchResult:
    """One conditional GET, bounded by `req.timeout` from the moment it starts. Redirects are
    followed here, hop by hop (at most MAX_REDIRECTS), so each hop passes `redirect_refusal` and,
    unless the source allows private addresses, the address policy (`netpolicy`) before it is
    requested; the session's connector applies that policy again to the address it connects to."""
    from yarl import URL

    from .netpolicy import PrivateAddress, host_reason
    from .sessions import hop_options
    from .tls import import_aiohttp

    aiohttp = import_aiohttp()

    started = time.monotonic()

    def done(status: int | None, **kw) -> FetchResult:
        return FetchResult(req.name, req.url, status, seconds=time.monotonic() - started, **kw)

    if req.auth is not None and req.auth.problem:
        return done(None, error=req.auth.problem)
    status: int | None = None
    meta: dict = {}
    url = req.url
    hops: list[tuple[int, str]] = []
    try:
        async with asyncio.timeout(req.timeout):
            while True:
                host = urlsplit(url).hostname or ""
                refused = None if req.allow_private else host_reason(host)
                if refused is not None:
                    raise PrivateAddress(host, refused)
                options = await hop_options(req, url, host, ACCEPT)
                async with session.get(
                    url,
                    **options,
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    location = resp.headers.get("Location")
                    if status in REDIRECTS and location:
                        target = str(resp.url.join(URL(location)))
                        why = redirect_refusal(url, target)
                        if why is not None:
                            return done(None, error=why, final_url=url, permanent=permanent_target(hops))
                        hops.append((status, target))
                        if len(hops) > MAX_REDIRECTS:
                            return done(None, error=f"more than {MAX_REDIRECTS} redirects")
                        url = target
                        continue
                    meta = {
                        "headers": {k.lower(): v for k, v in resp.headers.items()},
                        "final_url": url,
                        "permanent": permanent_target(hops),
                    }
                    body = await _read_capped(resp, max_bytes) if status == 200 else None
                    return done(status, body=body, **meta)
    except TimeoutError:
        return done(status, error=f"timed out after {req.timeout:g} s", **meta)
    except _TooBig as e:
        return done(status, error=str(e), **meta)
    except (PrivateAddress, aiohttp.ClientConnectorError) as e:
        return done(None, error=connection_error(e, urlsplit(url).hostname or url))
    except (aiohttp.ClientError, OSError, ValueError) as e:
        reason = str(e).strip() or e.__class__.__name__
        return done(None, error=f"{e.__class__.__name__}: {reason}" if reason != e.__class__.__name__ else reason)


Handler = Callable[[FetchRequest, FetchResult], Awaitable[None]]

# Requests in flight to one host start at this many (or `per_host` if lower) and grow to
# `per_host` only while the host is slow to answer. More connections help only when the time
# goes into waiting on the network; to a fast host they just arrive together, and a small
# server's accept queue (Python's http.server listens with a backlog of 5) drops the SYNs past
# it: each dropped one is retransmitted after a second, which made a 300-feed revalidation on
# loopback take 1.2 s where 0.3 s of it was work.
HOST_START = 4
HOST_SLOW = 0.05  # s per request: past this, the host's slots grow by one


class HostSlots:
    """How many requests may be in flight to one host: from min(HOST_START, most) up to `most`,
    one more after each request that took longer than HOST_SLOW (AIMD without the decrease:
    a fetch cycle is short, and `per_host` is the operator's ceiling)."""

    def __init__(self, most: int):
        self.most = max(1, most)
        self.limit = min(HOST_START, self.most)
        self.busy = 0
        # A semaphore grows by a release without an acquire: one permit more for good.
        self._free = asyncio.Semaphore(self.limit)

    async def acquire(self) -> None:
        await self._free.acquire()
        self.busy += 1

    async def release(self, seconds: float) -> None:
        self.busy -= 1
        self._free.release()
        if seconds > HOST_SLOW and self.limit < self.most:
            self.limit += 1
            self._free.release()


async def _take(budget: HostBudget, host: str):
    """A slot of the shared budget for `host`, polling while it has none free (`hostbudget`)."""
    wait = 0.0
    while True:
        slot = await asyncio.to_thread(budget.take, host)
        if slot is not None:
            return slot
        wait = next_poll(wait)
        await asyncio.sleep(wait)


async def fetch_many(
    requests: Sequence[FetchRequest], concurrency: int, per_host: int, max_bytes: int, handle: Handler,
    *, hosts: dict[str, HostSlots] | None = None, budget: HostBudget | None = None,
) -> None:  # fmt: skip
    """Fetch every request, at most `concurrency` at once and `per_host` per host (see
    `HostSlots`), and hand each result to `handle` as soon as it arrives (outside the limits, so
    parsing and storing one feed never holds a connection slot). A slot is taken before a
    source's clock starts, so a stalled server delays the others on its host by at most its own
    timeout. `hosts`: the slots of another call to share (a run's article pages and its feeds
    count against one limit per host). `budget`, when given, is a per-host budget shared beyond
    this call (the process's, or the database's for fetch workers): a slot of it is held as well
    for each request."""
    from .sessions import ProxyUnavailable, Sessions, follow_discovery

    overall = asyncio.Semaphore(concurrency)
    hosts = {} if hosts is None else hosts
    session_for = Sessions(concurrency)
    try:

        async def one(req: FetchRequest) -> None:
            host = (urlsplit(req.url).hostname or "").lower()
            slots = hosts.get(host)
            if slots is None:
                slots = hosts[host] = HostSlots(per_host)
            await slots.acquire()
            took = 0.0
            slot = None
            try:
                if budget is not None:
                    slot = await _take(budget, host)
                async with overall:
                    try:
                        session = session_for(req)
                    except ProxyUnavailable as e:
                        result = FetchResult(req.name, req.url, None, error=str(e))
                    else:
                        result = await fetch_one(session, req, max_bytes)
                        result = await follow_discovery(session_for, req, result, max_bytes)
                took = result.seconds
            finally:
                if slot is not None:
                    await asyncio.to_thread(budget.give, host, slot)
                await slots.release(took)
            await handle(req, result)

        await asyncio.gather(*(one(r) for r in requests))
    finally:
        await session_for.close()

