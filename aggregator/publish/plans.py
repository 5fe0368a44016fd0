"""Which feeds a build publishes, and which entries each may show.

A feed plan is one category's options resolved over `[output]` (plus the `all` feed); the
entry selection honours the category's keyword filter. Also the public URLs of feeds,
archive pages and article permalinks, which every part of publishing needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import Settings
from ..store import CategoryRef, Store
from . import archive
from .files import FILENAMES

ALL = "all"
_CHUNK = 500


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
    summary_chars: int | None = None  # summaries cut to this length
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


def feed_plans(settings: Settings, categories: Sequence[CategoryRef]) -> list[FeedPlan]:
    out = settings.output
    plans = [
        FeedPlan(
            ALL, "All", None, out.title, out.description, out.icon, out.logo or out.icon,
            out.max_items, tuple(out.formats), out.summary_only, out.summary_chars,
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
                summary_chars=o.summary_chars or out.summary_chars,
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


def eligible(store: Store, plan: FeedPlan, limit: int | None) -> list[tuple[int, str]]:
    """(id, version) of the entries the feed may show, newest first, at most `limit` (None: all)."""
    if not plan.filtered:
        return store.listing_versions(plan.category_id, limit)
    found: list[tuple[int, str]] = []
    offset = 0
    while limit is None or len(found) < limit:
        rows = store.listing_page(plan.category_id, offset, _CHUNK)
        if not rows:
            break
        offset += len(rows)
        found += [(r.id, r.version) for r in rows if keep(plan, r.title, r.summary, r.tags)]
    return found if limit is None else found[:limit]


def also_reported(store: Store, ids: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
    """Per canonical entry: (outlet or source, URL) of the duplicates dedup linked to it."""
    return store.also_reported(ids)
