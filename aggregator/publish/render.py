"""Rendering what a build decided to write: entry rows → feed documents and article pages.

A cold build writes thousands of documents that share entries: each entry is listed in the
`all` feed and in every one of its categories, current or archived. A `Renderer` turns an
entry into a feed item and its Atom and RSS elements once and moves them into every
document that lists it. It keeps only the most recently used few thousand (an LRU), so
memory stays bounded however large the corpus; `order` sorts the jobs so that documents
listing the same entries are rendered close together. A big build is split into runs of
consecutive jobs for worker processes, each with its own renderer (`Work`); a small one is
rendered in this process.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from lxml import etree

from ..cleaning import safe_url, xml_text
from ..config import Settings
from ..features import tracking_patterns, without_tracking
from ..store import CategoryRef, Store
from ..text import summarize
from . import archive, pages
from .files import write_if_changed
from .formats import FILENAMES, RENDERERS, FeedEnclosure, FeedInfo, FeedItem, entry_elements
from .i18n import text
from .plans import FeedPlan, archive_url, feed_url, permalink

log = logging.getLogger(__name__)
URL_CHARS = 8192  # a stored image or enclosure URL longer than this is not published
RUNS_PER_WORKER = 1  # runs of consecutive feed jobs per worker (each starts with a cold cache)
PRELOAD = (__name__, "feedgen.entry", "jinja2")  # what workers import before their first task
STATIC_DIR = "static"
STYLESHEET = "feed.xsl"

Also = tuple[tuple[str, str], ...]  # (outlet or source, URL) of other reports of a story


@dataclass(frozen=True, slots=True)
class FeedJob:
    """One feed document to write in every format of its plan: the current feed or an archive page."""

    plan: FeedPlan
    ids: tuple[int, ...]  # entries, newest first
    page: archive.Page | None = None  # None: the current feed
    older: archive.Page | None = None  # the archive page before it, for the prev-archive link
    also: dict[int, Also] = field(default_factory=dict)  # other reports per entry (current feeds only)

    @property
    def size(self) -> int:
        return len(self.ids)


@dataclass(slots=True)
class Written:
    files: int = 0  # files whose bytes changed
    archive_pages: int = 0
    pages: int = 0  # article pages
    changed_urls: list[str] = field(default_factory=list)  # public URLs of changed current feed files
    changed: list[str] = field(default_factory=list)  # slugs of current feeds with a changed file

    def add(self, other: Written) -> None:
        self.files += other.files
        self.archive_pages += other.archive_pages
        self.pages += other.pages
        self.changed_urls += other.changed_urls
        self.changed += other.changed


class Renderer:
    """Feed jobs and article pages → files, for one build, in one process."""

    def __init__(self, store: Store, settings: Settings, sources: dict[int, str]):
        self.store = store
        self.settings = settings
        self.sources = sources
        # (entry id, summary only, also) → (item, withdrawn); (item id, summary only, also) → format → element
        self._items: OrderedDict[tuple, tuple[FeedItem, bool]] = OrderedDict()
        self._elements: OrderedDict[tuple, dict[str, etree._Element]] = OrderedDict()
        formats = set(settings.output.formats).union(*(c.formats or () for c in settings.categories.values()))
        self._xml_formats = tuple(f for f in ("atom", "rss") if f in formats)
        self._tracking = tracking_patterns(settings.dedup.tracking_params)

    def feed(self, job: FeedJob) -> Written:
        out = self.settings.output
        plan, page = job.plan, job.page
        items = [
            it
            for it, gone in self.items(job.ids, plan.summary_only, job.also, plan.summary_chars)
            if page is None or not gone
        ]
        if self._xml_formats and any(f in self._xml_formats for f in plan.formats):
            items = [it for it in items if self._renders(it)]
        info = feed_info(self.settings, plan, items, page, job.older)
        folder = out.dir / plan.slug if page is None else out.dir / plan.slug / archive.ARCHIVE_DIR / page.dirname
        done = Written()
        for fmt in plan.formats:
            if write_if_changed(folder / FILENAMES[fmt], RENDERERS[fmt](info, self.element)):
                done.files += 1
                if page is None:
                    done.changed_urls.append(info.self_urls[fmt])
                else:
                    done.archive_pages += 1
        if page is None and done.files:
            done.changed.append(plan.slug)
        return done

    def pages(self, todo: Sequence[pages.Todo]) -> Written:
        ctx = page_context(self.settings, self.sources)
        n = pages.render(self.store, Path(self.settings.output.dir), todo, ctx)
        return Written(files=n, pages=n)

    def items(
        self, ids: Sequence[int], summary_only: bool, also: dict[int, Also], summary_chars: int | None = None
    ) -> list[tuple[FeedItem, bool]]:
        """(item, withdrawn) of each entry of `ids` still stored, in order, from the cache or the store."""
        found: dict[int, tuple[FeedItem, bool]] = {}
        for i in ids:
            key = (i, summary_only, also.get(i, ()), summary_chars)
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                found[i] = hit
        missing = [i for i in ids if i not in found]
        if missing:
            rows = self.store.entries_by_id(missing)
            cats = self.store.entry_categories([r.id for r in rows])
            shape = ItemShape(
                self.settings.output.base_url,
                summary_only,
                summary_chars,
                text(self.settings.output.language, "also_reported_by"),
                self._tracking,
            )
            for r in rows:
                a = also.get(r.id, ())
                try:
                    item = make_item(r, cats[r.id], self.sources, shape, a)
                except Exception:  # one entry that cannot be published must not stop the build
                    log.exception("entry %s (%s): cannot be published, skipped", r.id, r.uid)
                    continue
                found[r.id] = (item, r.gone)
                size = self.settings.tuning.render_cache_entries
                self._remember(self._items, (r.id, summary_only, a, summary_chars), found[r.id], size)
        return [found[i] for i in ids if i in found]

    def _renders(self, item: FeedItem) -> bool:
        """Can the item be rendered? Its elements are built (and cached for the documents) now,
        so an entry that fails is left out of the document instead of failing the build."""
        try:
            self.element(item, self._xml_formats[0], self.settings.output.base_url)
        except Exception:
            log.exception("entry %s: cannot be rendered, left out of the feed", item.id)
            return False
        return True

    def element(self, item: FeedItem, fmt: str, scheme: str) -> etree._Element:
        """The item's element. Not a copy: appending it to a document moves it out of the
        previous one, which was serialized already (a document lists an entry once)."""
        # Within a build, an entry's item differs only by these (the rest is the same row).
        key = (item.id, item.content_html is None, item.also, item.summary)
        els = self._elements.get(key)
        if els is None or fmt not in els:
            # Every XML format at once: the documents listing an entry come in both formats.
            els = entry_elements(item, self._xml_formats, scheme)
            self._remember(self._elements, key, els, self.settings.tuning.render_cache_entries)
        else:
            self._elements.move_to_end(key)
        return els[fmt]

    @staticmethod
    def _remember(lru: OrderedDict, key, value, size: int) -> None:
        lru[key] = value
        if len(lru) > size:
            lru.popitem(last=False)


def feed_info(
    settings: Settings,
    plan: FeedPlan,
    items: Sequence[FeedItem],
    page: archive.Page | None = None,
    older: archive.Page | None = None,
) -> FeedInfo:
    """The feed (or, with `page`, one of its archive pages) as renderer input."""
    out = settings.output
    host = out.base_url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
    current = {fmt: feed_url(out.base_url, plan.slug, fmt) for fmt in plan.formats}
    links: dict[str, dict[str, str]] = {}
    if page is not None:
        links["current"] = current
        if page.full:
            # The stable URL the next page will have once full (written once, so it cannot
            # wait for that); until then readers reach newer entries through `current`.
            following = archive.Page(page.number + 1, (), True)
            links["next-archive"] = {f: archive_url(out.base_url, plan.slug, following, f) for f in plan.formats}
    if older is not None:
        links["prev-archive"] = {fmt: archive_url(out.base_url, plan.slug, older, fmt) for fmt in plan.formats}
    depth = 1 if page is None else 3  # <slug>/file or <slug>/archive/<n>/file
    return FeedInfo(
        id=f"tag:{host},2024:feeds/{plan.slug}" + (f"/archive/{page.number}" if page else ""),
        # A category's name is its feed's title: cleaned like entry text (see `make_item`).
        title=xml_text(plan.title if page is None else f"{plan.title} (archive {page.number})"),
        description=xml_text(plan.description),
        home_url=f"{out.base_url}index.html#{plan.slug}",
        base_url=out.base_url,
        self_urls=current if page is None else {f: archive_url(out.base_url, plan.slug, page, f) for f in plan.formats},
        language=out.language,
        author=out.author,
        category_scheme=out.base_url,
        items=tuple(items),
        ttl_minutes=out.ttl,
        icon=plan.icon,
        logo=plan.logo,
        stylesheet=("../" * depth + f"{STATIC_DIR}/{STYLESHEET}") if out.stylesheet else None,
        links=links,
        archive=page is not None,
        hub=settings.websub.hub if page is None else None,  # archive pages are not for subscribing
    )


@dataclass(frozen=True, slots=True)
class ItemShape:
    """How a feed presents its items: options of the feed and of the site."""

    base_url: str
    summary_only: bool = False
    summary_chars: int | None = None  # summaries cut to this length (never lengthened)
    also_label: str = "Also reported by:"
    tracking: tuple[str, ...] = ()  # query parameters dropped from published links


def make_item(
    row, categories: list[CategoryRef], sources: dict[int, str], shape: ItemShape, also: Also = ()
) -> FeedItem:
    """A stored entry row as a feed item.

    The last line of defence: sources clean what they store (`cleaning`), but a row stored by an
    older version, or by a path that missed it, must still give a well-formed document. So text
    loses XML-illegal characters here too, and a link, image or enclosure that is not http(s)
    (`javascript:`, `data:`) is not published."""
    published = row.published or row.first_seen
    updated = max(row.updated or published, published)
    authors = tuple(x for a in row.authors if (x := xml_text(str(a)))) or (
        (xml_text(row.outlet),) if row.outlet else (xml_text(sources[row.source_id]),)
    )
    link = safe_url(row.link, URL_CHARS)
    summary = xml_text(row.summary)
    if shape.summary_chars and len(summary) > shape.summary_chars:
        summary = summarize(summary, shape.summary_chars)
    return FeedItem(
        id=f"urn:uuid:{row.uid}",
        title=xml_text(row.title),
        # Ids aside, links lose the tracking parameters dedup ignores: readers need not carry them.
        link=without_tracking(link, shape.tracking) if link else permalink(shape.base_url, row.uid),
        published=published,
        updated=updated,
        authors=authors,
        categories=tuple((c.slug, xml_text(c.name)) for c in categories),
        summary=summary,
        content_html=None if shape.summary_only else xml_text(row.content),
        image=safe_url(row.image, URL_CHARS),
        enclosure=_enclosure(row.enclosure),
        also=tuple((xml_text(name), url) for name, url in also if safe_url(url, URL_CHARS)),
        also_label=shape.also_label,
    )


def _enclosure(d: dict | None) -> FeedEnclosure | None:
    """A stored enclosure, when its size is known (RSS requires a length) and its URL is http(s)."""
    if not d:
        return None
    url = safe_url(d.get("url"), URL_CHARS)
    if not url or not d.get("length"):
        return None
    return FeedEnclosure(url, int(d["length"]), xml_text(str(d.get("type") or "application/octet-stream")))


@cache
def templates():
    from jinja2 import Environment, PackageLoader, pass_context, select_autoescape

    from .i18n import text

    env = Environment(
        loader=PackageLoader("aggregator.publish", "templates"),
        autoescape=select_autoescape(["html", "opml", "xsl"]),
        keep_trailing_newline=True,
        # The templates ship with the package: no stat of the file on every page rendered.
        auto_reload=False,
    )
    # `t("key")` / `t("entries", n=3)`: the site's own words in its language (i18n.py).
    env.globals["t"] = pass_context(lambda ctx, key, n=None: text(ctx.get("language"), key, n))
    return env


def page_context(settings: Settings, sources: dict[int, str]) -> pages.PageContext:
    out = settings.output
    return pages.PageContext(
        site_title=out.title,
        language=out.language,
        base_url=out.base_url,
        sources=sources,
        render=lambda name, ctx: templates().get_template(name).render(ctx).encode("utf-8"),
    )


# ---------------------------------------------------------------- scheduling the work


def order(jobs: Sequence[FeedJob], position: dict[int, int]) -> list[FeedJob]:
    """Oldest documents first, by the position of their newest entry in the `all` listing
    (`position`: entry id → rank, 0 the newest): an entry's `all` archive page and its
    category pages then come close together, while its item is still cached."""
    unknown = len(position)
    return sorted(jobs, key=lambda j: -min((position.get(i, unknown) for i in j.ids), default=unknown))


def split(jobs: Sequence[FeedJob], runs: int) -> list[list[FeedJob]]:
    """`jobs` cut into at most `runs` consecutive runs of about equal numbers of entries."""
    total = sum(j.size for j in jobs)
    out: list[list[FeedJob]] = [[]]
    done = 0
    for job in jobs:
        if done >= total * len(out) / runs and out[-1]:
            out.append([])
        out[-1].append(job)
        done += job.size
    return [r for r in out if r]


class Work:
    """The rendering of one build. Worker processes start the moment the work planned so far
    is big enough to be worth them. Article pages are independent small tasks: a few at a time
    keep the workers busy while this process plans the feed documents (`keep_busy`), and the
    rest go in after the documents, so that a worker done with its share of those fills in
    with pages instead of waiting for the other."""

    def __init__(self, store: Store, settings: Settings, sources: dict[int, str]):
        self.store, self.settings, self.sources = store, settings, sources
        self._pool = None
        self._workers = 0
        self._futures: list[Future[Written]] = []
        self._todo: list[Sequence[pages.Todo]] = []  # page tasks not handed to workers yet (next one last)
        self._queued: set[str] = set()  # uids of every page queued so far
        self._done = Written()  # rendered in this process

    def __enter__(self) -> Work:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def parallel(self) -> bool:
        return self._pool is not None

    def pages(self, todo: Sequence[pages.Todo], hold: int | None = None) -> None:
        """Queue article pages (after any queued already). With workers, hand them over a few
        at a time (see `keep_busy`), or with `hold`, all but that many tasks at once: for when
        this process goes on to other work and cannot top them up."""
        again = {uid for uid, _, _ in todo} & self._queued
        if again:
            # Pages queued before and due again (dedup changed their categories): the older
            # render must not land after the newer one. Drop them from the tasks not handed
            # over yet, and let the ones handed over finish first.
            self._todo = [kept for task in self._todo if (kept := [t for t in task if t[0] not in again])]
            for f in self._futures:
                f.result()
        self._queued.update(uid for uid, _, _ in todo)
        per_task = self.settings.tuning.pages_per_task
        tasks = [todo[i : i + per_task] for i in range(0, len(todo), per_task)]
        self._todo = tasks[::-1] + self._todo
        if self._pool is None and len(todo) >= self.settings.tuning.render_parallel_min:
            self._start()
        if hold is None:
            self.keep_busy()
        elif self._pool is not None:
            while len(self._todo) > hold:
                self._submit_page()

    def queued(self) -> list[pages.Todo]:
        """The page tasks' items not handed to workers yet, in the order they will be."""
        return [t for task in reversed(self._todo) for t in task]

    def keep_busy(self) -> None:
        """Hand the workers pages to render, just enough that none is left waiting."""
        if self._pool is None:
            return
        waiting = sum(1 for f in self._futures if not f.done())
        while self._todo and waiting <= self._workers:
            self._submit_page()
            waiting += 1

    def _submit_page(self) -> None:
        assert self._pool is not None
        self._futures.append(self._pool.submit(_page_run, self._todo.pop()))

    def feeds(self, jobs: Sequence[FeedJob], position: Callable[[], dict[int, int]]) -> None:
        """Render `jobs` (and pages not handed over yet): in the workers, which this returns
        without waiting for (see `wait`), or here."""
        wanted = sum(j.size for j in jobs) + sum(map(len, self._todo))
        if self._pool is None and wanted >= self.settings.tuning.render_parallel_min:
            self._start()
        if self._pool is None:
            renderer = Renderer(self.store, self.settings, self.sources)
            for job in order(jobs, position()) if len(jobs) > 1 else jobs:
                self._done.add(renderer.feed(job))
            while self._todo:
                self._done.add(renderer.pages(self._todo.pop()))
            return
        runs = split(order(jobs, position()), self._workers * RUNS_PER_WORKER)
        self._futures += [self._pool.submit(_feed_run, r) for r in runs]
        while self._todo:
            self._submit_page()

    def wait(self) -> Written:
        """What the workers wrote, once they are done."""
        for f in self._futures:
            self._done.add(f.result())
        self._futures = []
        return self._done

    def _start(self) -> bool:
        """Start the worker processes, unless this machine or database cannot use them."""
        from ..workers import cpu_workers, process_pool

        workers = cpu_workers()
        if workers < 2 or (self.store.dialect == "sqlite" and self.store.sqlite_path is None):
            return False  # an in-memory database: workers could not see it
        # Fresh workers, not forks: after a cold ingest this process is big, and a fork starts as
        # big as its parent before it adds a cache of its own.
        start = (self.store.url, self.settings, self.sources)
        self._pool = process_pool(workers, PRELOAD, _start_worker, start, fresh=True)
        self._workers = workers
        return True


def warm_up() -> None:
    """A big build is coming (a cold start's ingest is storing its last entries): get the
    workers' process started meanwhile."""
    from ..workers import cpu_workers, start_forkserver

    if cpu_workers() >= 2:
        start_forkserver(PRELOAD)


def prepare(store: Store, settings: Settings, force: bool, first: bool) -> None:
    """Before planning a build: when it will likely need workers (a first or forced build of
    a big store), get their process started meanwhile."""
    from ..workers import cpu_workers, start_forkserver

    if cpu_workers() >= 2 and (force or first) and store.visible_count() >= settings.tuning.render_parallel_min:
        start_forkserver(PRELOAD)


_worker: Renderer | None = None


def _start_worker(url: str, settings: Settings, sources: dict[int, str]) -> None:
    global _worker
    _worker = Renderer(Store(url, cache_mb=8), settings, sources)


def _feed_run(jobs: list[FeedJob]) -> Written:
    assert _worker is not None
    written = Written()
    for job in jobs:
        written.add(_worker.feed(job))
    return written


def _page_run(todo: Sequence[pages.Todo]) -> Written:
    assert _worker is not None
    return _worker.pages(todo)
