"""Publish: the store's visible entries → per-category feeds, archives, article pages, index.html, index.opml.

A feed is rebuilt only when its signature (what it would contain, plus the settings that
shape it) differs from the one recorded at its last build, or when one of its files is
missing, empty or cut off, so a no-change cycle costs one small query per category and
writes nothing. Files are written atomically and only when their bytes change, so readers
keep getting 304s, and flushed to disk before the signatures that trust them are committed
(`files`); after a build that changed a feed the WebSub hub, when configured, is pinged for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..config import Settings
from ..store import Store
from .files import FILENAMES, PublishError, is_whole
from .plans import ALL, FeedPlan, feed_plans, keep

__all__ = [
    "ALL", "BuildReport", "Early", "FeedPlan", "PublishError", "build", "early_pages", "feed_plans", "keep",
    "stamp", "still_published",
]  # fmt: skip

# The build itself (`building`: rendering with lxml and Jinja, article pages, archives, WebSub)
# is imported when first asked for: a quiet cycle only checks `still_published`, and loading the
# build's modules was a twentieth of it.
_LAZY = {"build", "early_pages", "Early"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import building

        return getattr(building, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def stamp(settings: Settings) -> str:
    """What a build depends on besides the store: the whole config and this version (templates,
    formats). Recorded after a build (`Store.set_published_stamp`); any config change rebuilds."""
    return hashlib.sha256(f"{__version__}\n{settings.model_dump_json()}".encode()).hexdigest()


def still_published(store: Store, settings: Settings) -> BuildReport | None:
    """The report of a build that has nothing to do, or None when one is needed: the last build
    finished under this config with nothing stored since (`Store.published_stamp`, cleared by
    anything that changes what is published), and every feed file and index is there and whole.

    A quiet cycle then costs a few reads and stats instead of planning every feed and article
    page. (An article page deleted by hand comes back with the next change, or `aggregator
    build`.)"""
    if store.published_stamp() != stamp(settings):
        return None
    out = Path(settings.output.dir)
    plans = feed_plans(settings, store.categories())
    feeds = all(is_whole(out / plan.slug / FILENAMES[fmt], fmt) for plan in plans for fmt in plan.formats)
    if not feeds or not all((out / name).is_file() for name in ("index.html", "index.opml")):
        return None
    return BuildReport(feeds=len(plans))
