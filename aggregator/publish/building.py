"""Building the published output: feeds, archives, article pages, index.html and index.opml
(`build`), and the article pages rendered during dedup (`early_pages`)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..config import Settings
from ..store import Store
from . import BuildReport, archive, pages, render, websub
from .files import is_whole, remove_stale_temps, sync, write_if_changed
from .formats import CONTENT_TYPES, EMPTY_FEED_DATE, FILENAMES
from .plans import FeedPlan, also_reported, eligible, feed_plans, feed_url, permalink
from .render import STATIC_DIR, STYLESHEET, templates

log = logging.getLogger("aggregator.publish")

LABELS = {"atom": "Atom", "rss": "RSS", "json": "JSON Feed"}

# Article pages are checked for emptiness (a stat each) once per process, not every build:
# their records are committed only after the files are flushed, so only a crash, which
# starts a new process, can leave a recorded page empty (or damage from outside).
_pages_checked = False


@dataclass(slots=True)
class Early:
    """Article pages handed to worker processes before dedup ran (see `early_pages`)."""

    work: render.Work
    todo: list[pages.Todo]


@contextmanager
def early_pages(store: Store, settings: Settings, touched: Sequence[int]) -> Iterator[Early | None]:
    """Hand the article pages due now to worker processes, for the build inside this block.

    Dedup runs in one process and takes a while on a cold start, while the other cores wait.
    An article page depends on its entry alone, not on dedup's decisions, except whether the
    entry keeps a page at all and which categories it lists, so the pages can render during
    dedup; the build then renders the few whose categories dedup changed and removes the pages
    of entries it hid. Yields None when there are too few pages to be worth workers, which
    `touched` (the entries ingested this run) tells without asking the store in a quiet cycle."""
    if len(touched) < settings.tuning.render_parallel_min:
        yield None
        return
    render.prepare(store, settings, force=False, first=not store.signatures())  # boots while pages are planned
    todo, _ = pages.plan(store, settings, _settings_digest(settings))
    if len(todo) < settings.tuning.render_parallel_min:
        yield None
        return
    remove_stale_temps(settings.output.dir)  # now: once workers write, temp files are theirs
    with render.Work(store, settings, store.source_names()) as work:
        # Page tasks kept back: they fill in at the end of the build, after the feed documents.
        work.pages(todo, hold=settings.tuning.early_hold)
        yield Early(work, todo) if work.parallel else None


# Over 60 lines: the build's order is what matters (page tasks start before the feeds are
# planned, the site index is written while the workers render, files are flushed to disk before
# any signature that trusts them is recorded), and one function shows that order whole.
def build(store: Store, settings: Settings, force: bool = False, early: Early | None = None) -> BuildReport:
    """Publish what the store holds: the feeds and article pages whose content changed (all
    with `force`), index.html and index.opml. `early`: pages handed to workers already.
    Raises PublishError when a file cannot be written; nothing is recorded then."""
    global _pages_checked
    out = settings.output
    report = BuildReport()
    if early is None:  # else early_pages removed them, before its workers began writing theirs
        remove_stale_temps(out.dir)
    plans = feed_plans(settings, store.categories())
    recorded = store.signatures()
    render.prepare(store, settings, force, first=not recorded)
    new_signatures: dict[str, str] = {}
    settings_digest = _settings_digest(settings)
    report.written += _write_static(settings, recorded, new_signatures, force)

    sources = store.source_names()
    with early.work if early else render.Work(store, settings, sources) as work:
        # (Pages rendered before dedup: uid → signature, held only while planning.)
        rendered = {uid: signature for uid, _, signature in early.todo} if early else None
        todo, gone = pages.plan(store, settings, settings_digest, force, rendered, sizes=not _pages_checked)
        del rendered
        work.pages(todo)  # workers start on these while the feeds are planned
        jobs: list[render.FeedJob] = []
        for plan in plans:
            work.keep_busy()
            report.feeds += 1
            window = eligible(store, plan, plan.max_items)
            also = also_reported(store, [i for i, _ in window])
            signature = hashlib.sha256(
                json.dumps([settings_digest, _plan_digest(plan), window, sorted(also.items())], default=str).encode()
            ).hexdigest()
            paths = [out.dir / plan.slug / FILENAMES[fmt] for fmt in plan.formats]
            whole = all(is_whole(p, fmt) for p, fmt in zip(paths, plan.formats, strict=True))
            if not force and recorded.get(plan.slug) == signature and whole:
                continue
            report.rebuilt += 1
            # A format dropped from the config: its file would go on being served, frozen.
            for fmt in set(FILENAMES) - set(plan.formats):
                (out.dir / plan.slug / FILENAMES[fmt]).unlink(missing_ok=True)
            feed_pages = _plan_archive(store, settings, plan, jobs)
            newest = tuple(i for i, _ in window)
            frozen = {i: tuple(pairs) for i, pairs in also.items()}
            jobs.append(render.FeedJob(plan, newest, None, feed_pages[-1] if feed_pages else None, frozen))
            new_signatures[plan.slug] = signature
        work.feeds(jobs, lambda: _positions(store))
        # while the workers render
        report.written += _write_site(store, settings, plans, {**recorded, **new_signatures}, new_signatures, force)
        done = work.wait()
    removed = pages.remove_files(out.dir, gone)
    report.written += done.files + removed
    if report.written or new_signatures or todo or gone or early:
        started = time.perf_counter()
        sync(out.dir)  # before anything that trusts these files is recorded
        log.debug("output flushed to disk in %.3f s", time.perf_counter() - started)
    if early:  # first: a page re-rendered since is recorded again below, and those dedup hid are forgotten
        pages.record(store, early.todo)
    pages.record(store, todo)
    pages.forget(store, gone)
    _pages_checked = True
    report.archive_pages = done.archive_pages
    report.pages = done.pages + removed
    report.changed = sorted(done.changed)
    report.changed_urls = done.changed_urls
    store.set_signatures(new_signatures)
    if settings.websub.hub and report.changed_urls:
        report.pinged = websub.ping(settings.websub.hub, report.changed_urls, settings.websub.timeout)
    return report


def _feed_on_index(store: Store, settings: Settings, plan: FeedPlan, count: int, newest) -> dict:
    """What index.html shows of one feed: its names, counts, newest titles and files."""
    out = settings.output
    latest = store.entries_by_id([i for i, _ in eligible(store, plan, 5)])
    return {
        "slug": plan.slug,
        "name": plan.name,
        "title": plan.title,
        # Only a description the operator wrote; the default one repeats the site's.
        "description": settings.category_options(plan.name).description if plan.category_id else None,
        "count": count,
        "newest": newest.strftime("%Y-%m-%d %H:%M UTC") if newest else None,
        "home_url": f"{out.base_url}index.html#{plan.slug}",
        "titles": [
            {
                "title": r.title,
                "link": r.link or permalink(out.base_url, r.uid),
                "date": (r.published or r.first_seen).strftime("%Y-%m-%d"),
            }
            for r in latest
        ],
        "files": [_file_link(out.base_url, plan.slug, f) for f in plan.formats],
    }


def _positions(store: Store) -> dict[int, int]:
    """Entry id → rank in the `all` listing (0 = newest): the order jobs are rendered in."""
    return {i: n for n, (i, _) in enumerate(store.listing_versions(None, None))}  # type: ignore[arg-type]


def _settings_digest(settings: Settings) -> str:
    shaping = {
        "output": settings.output.model_dump(mode="json", exclude={"dir"}),
        "hub": settings.websub.hub,
        "tracking": sorted(settings.dedup.tracking_params),  # published links drop these
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


def _plan_digest(plan: FeedPlan) -> str:
    from dataclasses import astuple

    return hashlib.sha256(json.dumps(astuple(plan), default=str).encode()).hexdigest()


# ---------------------------------------------------------------- RFC 5005 archives


def _plan_archive(store: Store, settings: Settings, plan: FeedPlan, jobs: list[render.FeedJob]) -> list[archive.Page]:
    """File newly fallen-out entries into archive pages and queue the pages that need writing:
    the open page (its URL changes as it grows), and full pages only when missing — a full
    page, once written, keeps its bytes forever."""
    out = settings.output
    everything = [i for i, _ in eligible(store, plan, None)]
    feed_pages = archive.archive(store, plan.slug, everything, plan.max_items, plan.max_items)
    root = out.dir / plan.slug / archive.ARCHIVE_DIR
    for page in feed_pages:
        folder = root / page.dirname
        if page.full and all(is_whole(folder / FILENAMES[f], f) for f in plan.formats):
            continue
        older = feed_pages[page.number - 2] if page.number > 1 else None
        jobs.append(render.FeedJob(plan, tuple(reversed(page.entry_ids)), page, older))
    # Earlier versions of the open page: superseded by a longer one or by the full page.
    keep_dirs = {p.dirname for p in feed_pages}
    if root.is_dir():
        for old in root.iterdir():
            if old.is_dir() and "-" in old.name and old.name not in keep_dirs:
                shutil.rmtree(old, ignore_errors=True)
    return feed_pages


# ---------------------------------------------------------------- static files, index.html and index.opml


def _write_static(settings: Settings, recorded: dict[str, str], signatures: dict[str, str], force: bool) -> int:
    """The feeds' stylesheet, rendered only when its template, language or the program changed
    (or the file is missing): a build with nothing to do must not load the template engine."""
    if not settings.output.stylesheet:
        return 0
    path = Path(settings.output.dir) / STATIC_DIR / STYLESHEET
    here = Path(__file__).parent
    source = (here / "templates" / STYLESHEET).read_bytes() + (here / "i18n.py").read_bytes()
    key = f"{STATIC_DIR}/{STYLESHEET}"  # not a slug (slugs have no '/'): shares the feeds' table
    signature = hashlib.sha256(f"{__version__}\0{settings.output.language}\0".encode() + source).hexdigest()
    if not force and recorded.get(key) == signature and path.is_file():
        return 0
    signatures[key] = signature
    data = templates().get_template(STYLESHEET).render(language=settings.output.language).encode("utf-8")
    return write_if_changed(path, data)


def _file_link(base_url: str, slug: str, fmt: str) -> dict:
    return {"fmt": fmt, "label": LABELS[fmt], "type": CONTENT_TYPES[fmt], "url": feed_url(base_url, slug, fmt)}


def _write_site(
    store: Store, settings: Settings, plans: Sequence[FeedPlan], feed_signatures: dict[str, str],
    signatures: dict[str, str], force: bool,
) -> int:  # fmt: skip
    """index.html and index.opml. They show each feed's newest entries (which its signature
    covers) and the counts; when neither changed, nothing is queried or rendered."""
    out = settings.output
    counts = store.category_counts()
    total = store.visible_count()
    key = "site/index"  # not a slug (slugs have no '/'): shares the feeds' table
    signature = hashlib.sha256(
        json.dumps(
            [[p.slug, feed_signatures.get(p.slug)] for p in plans]
            + [total, sorted((i, c.entries, c.newest.isoformat() if c.newest else None) for i, c in counts.items())]
        ).encode()
    ).hexdigest()
    whole = all((Path(out.dir) / name).is_file() for name in ("index.html", "index.opml"))
    if not force and whole and feed_signatures.get(key) == signature:
        return 0
    signatures[key] = signature
    newest_overall = max((c.newest for c in counts.values() if c.newest), default=EMPTY_FEED_DATE)
    feeds = []
    for plan in plans:
        if plan.category_id is None:
            count, newest = total, (newest_overall if total else None)
        else:
            found = counts.get(plan.category_id)
            count, newest = (found.entries, found.newest) if found else (0, None)
        feeds.append(_feed_on_index(store, settings, plan, count, newest))
    context = {
        "title": out.title,
        "description": out.description,
        "language": out.language,
        "feeds": feeds,
        "categories": len(plans) - 1,
        "total": total,
        "opml_url": f"{out.base_url}index.opml",
        "updated": newest_overall.strftime("%a, %d %b %Y %H:%M:%S +0000"),
        "updated_text": newest_overall.strftime("%Y-%m-%d %H:%M UTC") if total else None,
    }
    written = 0
    for name in ("index.html", "index.opml"):
        data = templates().get_template(name).render(context).encode("utf-8")
        written += write_if_changed(Path(out.dir) / name, data)
    return written
