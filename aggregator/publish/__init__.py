"""Publish: the store's visible entries → per-category feeds, archives, article pages, index.html, index.opml.

A feed is rebuilt only when its signature (what it would contain, plus the settings that
shape it) differs from the one recorded at its last build, so a no-change cycle costs one
small query per category and writes nothing. Files are written atomically and only when
their bytes change, so readers keep getting 304s; after a build that changed a feed the
WebSub hub, when configured, is pinged for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from sqlalchemy import select

from .. import __version__
from ..config import Settings
from ..store import CategoryRow, EntryRow, SourceRow, Store, loads_list
from . import archive, pages, websub
from .feeds import CONTENT_TYPES, EMPTY_FEED_DATE, FILENAMES, RENDERERS, Enclosure, FeedInfo, Item
from .files import write_if_changed

log = logging.getLogger(__name__)

ALL = "all"
LABELS = {"atom": "Atom", "rss": "RSS", "json": "JSON Feed"}
STATIC_DIR = "static"
STYLESHEET = "feed.xsl"
_CHUNK = 500


@dataclass(slots=True)
class BuildReport:
    feeds: int = 0  # feeds considered
    rebuilt: int = 0  # feeds whose content was re-rendered
    written: int = 0  # files whose bytes changed
    changed: list[str] = field(default_factory=list)  # slugs of feeds with a changed file
    changed_urls: list[str] = field(default_factory=list)  # public URLs of changed feed files
    archive_pages: int = 0  # archive pages written
    pages: int = 0  # article pages written or removed
    pinged: int = 0  # WebSub pings the hub accepted


@dataclass(frozen=True, slots=True)
class FeedPlan:
    """One feed to publish, with its options resolved ([categories."name"] over [output])."""

    slug: str
    name: str
    category_id: int | None  # None: every entry
    title: str
    description: str
    icon: str | None
    logo: str | None
    max_items: int
    formats: tuple[str, ...]
    summary_only: bool
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @property
    def filtered(self) -> bool:
        return bool(self.include or self.exclude)


def permalink(base_url: str, uid: str) -> str:
    """Where an entry with no original URL lives on this site."""
    return f"{base_url}a/{uid}.html"


def feed_url(base_url: str, slug: str, fmt: str) -> str:
    return f"{base_url}{slug}/{FILENAMES[fmt]}"


def archive_url(base_url: str, slug: str, page: archive.Page, fmt: str) -> str:
    return f"{base_url}{slug}/{archive.ARCHIVE_DIR}/{page.dirname}/{FILENAMES[fmt]}"


def feed_plans(settings: Settings, categories: Sequence[CategoryRow]) -> list[FeedPlan]:
    out = settings.output
    plans = [
        FeedPlan(
            ALL, "All", None, out.title, out.description, out.icon, out.logo or out.icon,
            out.max_items, tuple(out.formats), out.summary_only,
        )
    ]  # fmt: skip
    for c in categories:
        o = settings.category_options(c.name)
        plans.append(
            FeedPlan(
                slug=c.slug,
                name=c.name,
                category_id=c.id,
                title=o.title or f"{c.name} | {out.title}",
                description=o.description or f"{c.name}: {out.description}",
                icon=o.icon or out.icon,
                logo=o.logo or o.icon or out.logo or out.icon,
                max_items=o.max_items or out.max_items,
                formats=tuple(o.formats if o.formats is not None else out.formats),
                summary_only=out.summary_only if o.summary_only is None else o.summary_only,
                include=tuple(o.include),
                exclude=tuple(o.exclude),
            )
        )
    return plans


def keep(plan: FeedPlan, title: str, summary: str, tags: Sequence[str]) -> bool:
    """The category's keyword filter: case-insensitive substrings of title, summary and tags."""
    if not plan.filtered:
        return True
    text = "\n".join([title, summary, *tags]).casefold()
    if plan.include and not any(k.casefold() in text for k in plan.include):
        return False
    return not any(k.casefold() in text for k in plan.exclude)


def build(store: Store, settings: Settings, force: bool = False) -> BuildReport:
    out = settings.output
    report = BuildReport()
    archive.ensure_table(store)
    pages.ensure_table(store)
    categories = store.categories()
    plans = feed_plans(settings, categories)
    recorded = store.signatures()
    new_signatures: dict[str, str] = {}
    settings_digest = _settings_digest(settings)
    sources = store.source_names()
    report.written += _write_static(settings)

    for plan in plans:
        report.feeds += 1
        window = _eligible(store, plan, plan.max_items)
        also = _also_reported(store, [i for i, _ in window])
        signature = hashlib.sha256(
            json.dumps([settings_digest, _plan_digest(plan), window, sorted(also.items())], default=str).encode()
        ).hexdigest()
        paths = [out.dir / plan.slug / FILENAMES[fmt] for fmt in plan.formats]
        if not force and recorded.get(plan.slug) == signature and all(p.exists() for p in paths):
            continue
        report.rebuilt += 1
        # A format dropped from the config: its file would go on being served, frozen.
        for fmt in set(FILENAMES) - set(plan.formats):
            (out.dir / plan.slug / FILENAMES[fmt]).unlink(missing_ok=True)
        feed_pages = _publish_archive(store, settings, plan, sources, report)
        info = _feed_info(store, settings, plan, [i for i, _ in window], sources, also, feed_pages)
        wrote = False
        for fmt, path in zip(plan.formats, paths, strict=True):
            if write_if_changed(path, RENDERERS[fmt](info)):
                report.written += 1
                report.changed_urls.append(info.self_urls[fmt])
                wrote = True
        if wrote:
            report.changed.append(plan.slug)
        new_signatures[plan.slug] = signature

    report.pages = pages.publish(store, settings, settings_digest, _page_context(settings, sources), force)
    report.written += report.pages
    report.written += _write_site(store, settings, plans)
    store.set_signatures(new_signatures)
    if settings.websub.hub and report.changed_urls:
        report.pinged = websub.ping(settings.websub.hub, report.changed_urls, settings.websub.timeout)
    return report


def _settings_digest(settings: Settings) -> str:
    shaping = {
        "output": settings.output.model_dump(mode="json", exclude={"dir"}),
        "hub": settings.websub.hub,
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


def _plan_digest(plan: FeedPlan) -> str:
    from dataclasses import astuple

    return hashlib.sha256(json.dumps(astuple(plan), default=str).encode()).hexdigest()


# ---------------------------------------------------------------- selecting entries


def _eligible(store: Store, plan: FeedPlan, limit: int | None) -> list[tuple[int, str]]:
    """(id, version) of the entries the feed may show, newest first, at most `limit`."""
    if not plan.filtered:
        # limit=None: SQLAlchemy's .limit(None) means no limit (every entry, for archiving).
        return store.listing_versions(plan.category_id, limit)  # type: ignore[arg-type]
    from ..store import EntryCategoryRow

    found: list[tuple[int, str]] = []
    offset = 0
    while limit is None or len(found) < limit:
        q = select(EntryRow.id, EntryRow.version, EntryRow.title, EntryRow.summary, EntryRow.tags).where(
            EntryRow.withdrawn_at.is_(None), EntryRow.canonical_id.is_(None)
        )
        if plan.category_id is not None:
            q = q.join(EntryCategoryRow, EntryCategoryRow.entry_id == EntryRow.id).where(
                EntryCategoryRow.category_id == plan.category_id
            )
        q = q.order_by(EntryRow.sort_date.desc(), EntryRow.id.desc()).offset(offset).limit(_CHUNK)
        with store.engine.connect() as c:
            rows = c.execute(q).all()
        if not rows:
            break
        offset += len(rows)
        found += [(i, v) for i, v, title, summary, tags in rows if keep(plan, title, summary, loads_list(tags))]
    return found if limit is None else found[:limit]


def _also_reported(store: Store, ids: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
    """Per canonical entry: (outlet or source, URL) of the duplicates dedup linked to it."""
    out: dict[int, list[tuple[str, str]]] = {}
    if not ids:
        return out
    q = (
        select(EntryRow.canonical_id, EntryRow.outlet, SourceRow.name, EntryRow.link)
        .join(SourceRow, SourceRow.id == EntryRow.source_id)
        .where(EntryRow.canonical_id.in_(list(ids)), EntryRow.withdrawn_at.is_(None), EntryRow.link.is_not(None))
        .order_by(EntryRow.canonical_id, EntryRow.id)
    )
    with store.engine.connect() as c:
        for cid, outlet, source, link in c.execute(q):
            pair = (outlet or source, link)
            if pair not in out.setdefault(cid, []):
                out[cid].append(pair)
    return out


def _feed_info(
    store: Store,
    settings: Settings,
    plan: FeedPlan,
    ids: Sequence[int],
    sources: dict[int, str],
    also: dict[int, list[tuple[str, str]]],
    feed_pages: list[archive.Page],
    page: archive.Page | None = None,
) -> FeedInfo:
    """The feed (or, with `page`, one of its archive pages) as renderer input."""
    out = settings.output
    rows = [r for r in store.entries_by_id(ids) if page is None or r.withdrawn_at is None]
    cats = store.entry_categories([r.id for r in rows])
    host = out.base_url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
    current = {fmt: feed_url(out.base_url, plan.slug, fmt) for fmt in plan.formats}
    links: dict[str, dict[str, str]] = {}
    older = feed_pages[-1] if page is None and feed_pages else None
    if page is not None:
        older = feed_pages[page.number - 2] if page.number > 1 else None
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
        title=plan.title if page is None else f"{plan.title} (archive {page.number})",
        description=plan.description,
        home_url=f"{out.base_url}index.html#{plan.slug}",
        base_url=out.base_url,
        self_urls=current if page is None else {f: archive_url(out.base_url, plan.slug, page, f) for f in plan.formats},
        language=out.language,
        author=out.author,
        category_scheme=out.base_url,
        items=tuple(_item(r, cats[r.id], sources, out.base_url, plan.summary_only, also.get(r.id, ())) for r in rows),
        ttl_minutes=out.ttl,
        icon=plan.icon,
        logo=plan.logo,
        stylesheet=("../" * depth + f"{STATIC_DIR}/{STYLESHEET}") if out.stylesheet else None,
        links=links,
        archive=page is not None,
        hub=settings.websub.hub if page is None else None,  # archive pages are not for subscribing
    )


def _item(
    row: EntryRow,
    categories: list[CategoryRow],
    sources: dict[int, str],
    base_url: str,
    summary_only: bool = False,
    also: Sequence[tuple[str, str]] = (),
) -> Item:
    published = row.published or row.first_seen
    updated = max(row.updated or published, published)
    authors = tuple(loads_list(row.author)) or ((row.outlet,) if row.outlet else (sources[row.source_id],))
    return Item(
        id=f"urn:uuid:{row.uid}",
        title=row.title,
        link=row.link or permalink(base_url, row.uid),
        published=published,
        updated=updated,
        authors=authors,
        categories=tuple((c.slug, c.name) for c in categories),
        summary=row.summary,
        content_html=None if summary_only else row.content,
        image=row.image,
        enclosure=_enclosure(row.enclosure),
        also=tuple(also),
    )


def _enclosure(value: str | None) -> Enclosure | None:
    """A stored enclosure, when its size is known (RSS requires a length)."""
    if not value:
        return None
    d = json.loads(value)
    return Enclosure(d["url"], int(d["length"]), d["type"]) if d.get("length") else None


# ---------------------------------------------------------------- RFC 5005 archives


def _publish_archive(
    store: Store, settings: Settings, plan: FeedPlan, sources: dict[int, str], report: BuildReport
) -> list[archive.Page]:
    """File newly fallen-out entries into archive pages and write the pages that need it:
    the open page (its URL changes as it grows), and full pages only when missing — a full
    page, once written, keeps its bytes forever."""
    out = settings.output
    eligible = [i for i, _ in _eligible(store, plan, None)]
    feed_pages = archive.archive(store, plan.slug, eligible, plan.max_items, plan.max_items)
    root = out.dir / plan.slug / archive.ARCHIVE_DIR
    for page in feed_pages:
        folder = root / page.dirname
        if page.full and all((folder / FILENAMES[f]).exists() for f in plan.formats):
            continue
        info = _feed_info(store, settings, plan, list(reversed(page.entry_ids)), sources, {}, feed_pages, page)
        for fmt in plan.formats:
            wrote = write_if_changed(folder / FILENAMES[fmt], RENDERERS[fmt](info))
            report.archive_pages += wrote
            report.written += wrote
    # Earlier versions of the open page: superseded by a longer one or by the full page.
    keep_dirs = {p.dirname for p in feed_pages}
    if root.is_dir():
        for old in root.iterdir():
            if old.is_dir() and "-" in old.name and old.name not in keep_dirs:
                shutil.rmtree(old, ignore_errors=True)
    return feed_pages


# ---------------------------------------------------------------- static files, index.html and index.opml


@cache
def _templates():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("aggregator.publish", "templates"),
        autoescape=select_autoescape(["html", "opml", "xsl"]),
        keep_trailing_newline=True,
    )


def _write_static(settings: Settings) -> int:
    if not settings.output.stylesheet:
        return 0
    data = _templates().get_template(STYLESHEET).render(language=settings.output.language).encode("utf-8")
    return write_if_changed(Path(settings.output.dir) / STATIC_DIR / STYLESHEET, data)


def _page_context(settings: Settings, sources: dict[int, str]) -> pages.Context:
    out = settings.output
    return pages.Context(
        site_title=out.title,
        language=out.language,
        base_url=out.base_url,
        sources=sources,
        render=lambda name, ctx: _templates().get_template(name).render(ctx).encode("utf-8"),
    )


def _file_link(base_url: str, slug: str, fmt: str) -> dict:
    return {"fmt": fmt, "label": LABELS[fmt], "type": CONTENT_TYPES[fmt], "url": feed_url(base_url, slug, fmt)}


def _write_site(store: Store, settings: Settings, plans: Sequence[FeedPlan]) -> int:
    out = settings.output
    counts = store.category_counts()
    total = store.visible_count()
    newest_overall = max((d for _, d in counts.values() if d), default=EMPTY_FEED_DATE)
    feeds = []
    for plan in plans:
        if plan.category_id is None:
            count, newest = total, (newest_overall if total else None)
        else:
            count, newest = counts.get(plan.category_id, (0, None))
        latest = store.entries_by_id([i for i, _ in _eligible(store, plan, 5)])
        feeds.append(
            {
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
        )
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
        data = _templates().get_template(name).render(context).encode("utf-8")
        written += write_if_changed(Path(out.dir) / name, data)
    return written
