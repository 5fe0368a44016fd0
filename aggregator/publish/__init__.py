"""Publish: the store's visible entries → per-category feeds, `all/`, index.html and index.opml.

A feed is rebuilt only when its signature (what it would contain, plus the settings that
shape it) differs from the one recorded at its last build, so a no-change cycle costs one
small query per category and writes nothing. Files are written atomically and only when
their bytes change, so readers keep getting 304s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path

from .. import __version__
from ..config import Settings
from ..store import CategoryRow, EntryRow, Store, loads_list
from .feeds import CONTENT_TYPES, EMPTY_FEED_DATE, FILENAMES, RENDERERS, FeedInfo, Item
from .files import write_if_changed

ALL = "all"
LABELS = {"atom": "Atom", "rss": "RSS", "json": "JSON Feed"}


@dataclass(slots=True)
class BuildReport:
    feeds: int = 0  # feeds considered
    rebuilt: int = 0  # feeds whose content was re-rendered
    written: int = 0  # files whose bytes changed
    changed: list[str] = field(default_factory=list)  # slugs of feeds with a changed file


@dataclass(frozen=True, slots=True)
class _Target:
    slug: str
    name: str
    category_id: int | None  # None: every entry


def permalink(base_url: str, uid: str) -> str:
    """Where an entry with no original URL lives on this site."""
    return f"{base_url}a/{uid}.html"


def feed_url(base_url: str, slug: str, fmt: str) -> str:
    return f"{base_url}{slug}/{FILENAMES[fmt]}"


def build(store: Store, settings: Settings, force: bool = False) -> BuildReport:
    out = settings.output
    report = BuildReport()
    categories = store.categories()
    targets = [_Target(ALL, "All", None)] + [_Target(c.slug, c.name, c.id) for c in categories]
    recorded = store.signatures()
    new_signatures: dict[str, str] = {}
    settings_digest = _settings_digest(settings)
    sources = store.source_names()

    for t in targets:
        report.feeds += 1
        versions = store.listing_versions(t.category_id, out.max_items)
        signature = hashlib.sha256(json.dumps([settings_digest, t.name, versions]).encode()).hexdigest()
        paths = [out.dir / t.slug / FILENAMES[fmt] for fmt in out.formats]
        if not force and recorded.get(t.slug) == signature and all(p.exists() for p in paths):
            continue
        report.rebuilt += 1
        info = _feed_info(store, settings, t, sources)
        wrote = False
        for fmt, path in zip(out.formats, paths, strict=True):
            if write_if_changed(path, RENDERERS[fmt](info)):
                report.written += 1
                wrote = True
        if wrote:
            report.changed.append(t.slug)
        new_signatures[t.slug] = signature

    report.written += _write_site(store, settings, categories)
    store.set_signatures(new_signatures)
    return report


def _settings_digest(settings: Settings) -> str:
    shaping = {"output": settings.output.model_dump(mode="json", exclude={"dir"}), "version": __version__}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


def _feed_info(store: Store, settings: Settings, t: _Target, sources: dict[int, str]) -> FeedInfo:
    out = settings.output
    rows = store.listing(t.category_id, out.max_items)
    cats = store.entry_categories([r.id for r in rows])
    host = out.base_url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
    return FeedInfo(
        id=f"tag:{host},2024:feeds/{t.slug}",
        title=out.title if t.category_id is None else f"{t.name} | {out.title}",
        description=out.description if t.category_id is None else f"{t.name}: {out.description}",
        home_url=f"{out.base_url}index.html#{t.slug}",
        base_url=out.base_url,
        self_urls={fmt: feed_url(out.base_url, t.slug, fmt) for fmt in out.formats},
        language=out.language,
        author=out.author,
        category_scheme=out.base_url,
        items=tuple(_item(r, cats[r.id], sources, out.base_url) for r in rows),
    )


def _item(row: EntryRow, categories: list[CategoryRow], sources: dict[int, str], base_url: str) -> Item:
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
        content_html=row.content,
        image=row.image,
    )


# ---------------------------------------------------------------- index.html and index.opml


@cache
def _templates():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("aggregator.publish", "templates"),
        autoescape=select_autoescape(["html", "opml"]),
        keep_trailing_newline=True,
    )


def _write_site(store: Store, settings: Settings, categories: list[CategoryRow]) -> int:
    out = settings.output
    counts = store.category_counts()
    total = store.visible_count()
    newest_overall = max((d for _, d in counts.values() if d), default=EMPTY_FEED_DATE)
    feeds = []
    entries: list[tuple[str, str, int | None, int, datetime | None]] = [
        (ALL, "All", None, total, newest_overall if total else None)
    ]
    entries += [(c.slug, c.name, c.id, *counts.get(c.id, (0, None))) for c in categories]
    for slug, name, cid, count, newest in entries:
        latest = store.listing(cid, 5)
        feeds.append(
            {
                "slug": slug,
                "name": name,
                "title": out.title if cid is None else f"{name} | {out.title}",
                "count": count,
                "newest": newest.strftime("%Y-%m-%d %H:%M UTC") if newest else None,
                "home_url": f"{out.base_url}index.html#{slug}",
                "titles": [{"title": r.title, "link": r.link or permalink(out.base_url, r.uid)} for r in latest],
                "files": [
                    {"fmt": f, "label": LABELS[f], "type": CONTENT_TYPES[f], "url": feed_url(out.base_url, slug, f)}
                    for f in out.formats
                ],
            }
        )
    context = {
        "title": out.title,
        "description": out.description,
        "language": out.language,
        "feeds": feeds,
        "opml_url": f"{out.base_url}index.opml",
        "updated": newest_overall.strftime("%a, %d %b %Y %H:%M:%S +0000"),
    }
    written = 0
    for name in ("index.html", "index.opml"):
        data = _templates().get_template(name).render(context).encode("utf-8")
        written += write_if_changed(Path(out.dir) / name, data)
    return written
