"""The full-text step of the remote-fetch stage, for sources with `full_text` (teaser feeds).

After a teaser feed is parsed, the page of each entry not seen before is fetched, politely: with
the fetch stage's own HTTP code (`sources.remote.fetch_many`: the run's per-host limits,
`max_bytes`, the source's timeout, user agent and address policy), at most once per URL (the
`page_cache` table, keyed by URL, also answers every later parse of the feed that still carries
the teaser), and a failure that may pass is tried again later with back-off and a conditional
request. The article is extracted (`sources.fulltext`: trafilatura, or the source's CSS
selector), sanitized with absolute URLs, and becomes the entry's content; the feed's teaser
stays its summary. A page that yields no article leaves the teaser, with the reason stored
and logged beside the URL.

The decisions (`due`, `after_fetch`) are pure functions of records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from .config import Settings
from .store import CachedPage, Store

log = logging.getLogger("aggregator.pipeline")

RETRY_AFTER = 3600.0  # s before a page that failed in a way that may pass is fetched again, doubled each time
MAX_ATTEMPTS = 4  # failures in a row after which a page is not fetched again
MAX_PAGES = 50  # pages fetched per feed and fetch: a feed that suddenly lists a thousand items waits


# ---------------------------------------------------------------- decisions


def due(urls: Sequence[str], cached: Mapping[str, CachedPage], now: datetime) -> list[str]:
    """The pages to fetch now: never fetched, or failed and due again. In feed order, at most MAX_PAGES."""
    out = []
    for url in dict.fromkeys(urls):
        page = cached.get(url)
        if page is None or (page.content is None and page.retry_at is not None and page.retry_at <= now):
            out.append(url)
    return out[:MAX_PAGES]


def transient(status: int | None) -> bool:
    """A failure worth trying again later: no answer, a timeout, rate limiting, a server error."""
    return status is None or status in (408, 425, 429) or status >= 500


def after_fetch(url: str, status: int | None, article: str | None, error: str | None, headers: Mapping[str, str],
                before: CachedPage | None, now: datetime) -> CachedPage:  # fmt: skip
    """The page's record after a fetch: `status` (None: no answer), the extracted `article` or
    the `error` that says why there is none. A 304 keeps what the page had."""
    if status == 304 and before is not None:
        return replace(before, status=304, fetched_at=now, retry_at=None, error=before.error)
    etag, modified = headers.get("etag"), headers.get("last-modified")
    if article is not None:
        return CachedPage(url, status, article, None, 0, now, None, etag, modified)
    attempts = (before.attempts if before else 0) + 1
    # A page that answers without an article may be finished later (a placeholder published
    # before its text); a 404 or a refused address will not change.
    again = (transient(status) or status == 200) and attempts < MAX_ATTEMPTS
    retry = now + timedelta(seconds=RETRY_AFTER * 2 ** (attempts - 1)) if again else None
    return CachedPage(url, status, None, error or f"HTTP {status}", attempts, now, retry, etag, modified)


def with_articles(items: list, pages: Mapping[str, CachedPage], content_bytes: int) -> list:
    """The parsed items, each whose page has an article carrying it as content (the teaser
    stays the summary). Dedup's features described the teaser: they are recomputed."""
    out = []
    for item in items:
        page = pages.get(item.entry.link or "")
        text = page.content if page is not None else None
        if text and len(text.encode("utf-8", "surrogatepass")) <= content_bytes:
            item = replace(item, entry=replace(item.entry, content_html=text, features=None))
        out.append(item)
    return out


# ---------------------------------------------------------------- I/O


@dataclass(slots=True)
class FullTextRun:
    """What the pages of one fetch run share: the store (used on the run's writer thread) and
    the per-host slots of the run's requests."""

    store: Store
    settings: Settings
    writer: Executor
    now: datetime
    hosts: dict = field(default_factory=dict)


async def complete(parsed, src, base_request, run) -> None:
    """Give the parsed teaser feed of `src` the articles of its pages (fetching those due).
    `base_request`: the source's FetchRequest, whose options the page requests reuse; `run`:
    the fetch run's `FullTextRun` (store access on the writer thread, the shared host slots)."""
    from .sources.fulltext import ExtractionError, extract_article
    from .sources.remote import fetch_many

    loop = asyncio.get_running_loop()
    links = [it.entry.link for it in parsed.items if it.entry.link]
    if not links:
        return
    now = run.now
    cached = await loop.run_in_executor(run.writer, run.store.cached_pages, links)
    todo = due(links, cached, now)
    fresh: list[CachedPage] = []
    selector = src.full_text if isinstance(src.full_text, str) else None

    async def got(req, result) -> None:
        before = cached.get(req.url)
        article, error = None, result.error
        if result.status == 200 and result.body is not None and result.error is None:
            try:
                article = await loop.run_in_executor(None, extract_article, result.body, result.final_url or req.url,
                                                     selector)  # fmt: skip
            except ExtractionError as e:
                error = str(e)
            except Exception as e:  # one page the extractor chokes on fails alone
                error = f"cannot extract: {e.__class__.__name__}: {str(e)[:200]}"
        page = after_fetch(req.url, result.status, article, error, result.headers or {}, before, now)
        if page.content is None:
            again = f"; tried again after {page.retry_at:%Y-%m-%d %H:%M} UTC" if page.retry_at else ""
            log.warning("source=%s full text %s: %s, the teaser is kept%s", src.name, req.url, page.error, again)
        fresh.append(page)

    if todo:
        requests = [
            replace(base_request, url=u, etag=cached[u].etag if u in cached else None,
                    last_modified=cached[u].last_modified if u in cached else None, discover=False)
            for u in todo
        ]  # fmt: skip
        f = run.settings.fetch
        await fetch_many(requests, f.concurrency, f.per_host, f.max_bytes, got, hosts=run.hosts)
        await loop.run_in_executor(run.writer, run.store.save_pages, fresh)
    pages = {**cached, **{p.url: p for p in fresh}}
    parsed.items = with_articles(parsed.items, pages, run.settings.limits_for(src).content_bytes)
