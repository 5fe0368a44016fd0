"""Readable HTML pages at the permalink (`a/<uid>.html`) of entries that have no original URL.

A feed item needs a link a person can open; an article file without `<http…>` has none, so
the site hosts it. A page is re-rendered only when its entry's version (or the settings
that shape pages) changes, tracked in its own small table; a page whose entry was
withdrawn, or became a duplicate of another, is removed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..cleaning import safe_url
from ..config import Settings
from ..store import Store, StoredEntry

PAGE_DIR = "a"
Todo = tuple[str, int, str]  # (uid, entry id, signature) of a page to write


@dataclass(frozen=True, slots=True)
class PageContext:
    site_title: str
    language: str
    base_url: str
    sources: dict[int, str]
    render: Callable[[str, dict], bytes]  # template name, context → bytes


def page_name(uid: str) -> str:
    return f"{uid}.html"


def page_path(out_dir: Path, uid: str) -> Path:
    return out_dir / PAGE_DIR / page_name(uid)


def plan(
    store: Store,
    settings: Settings,
    settings_digest: str,
    force: bool = False,
    rendered: dict[str, str] | None = None,
    sizes: bool = False,
) -> tuple[list[Todo], list[str]]:
    """The pages to (re)write, as (uid, entry id, signature), and the uids of pages no longer
    wanted. `rendered`: uid → signature of pages written in this run but not recorded yet.
    `sizes`: an empty page counts as missing (a stat per page: 65 ms for 15,000)."""
    out_dir = Path(settings.output.dir)
    rendered = rendered or {}
    on_disk = _files(out_dir / PAGE_DIR, sizes)
    todo: list[Todo] = []
    seen_rendered = set()
    after = ""
    # A chunk of the wanted pages at a time, with their records: nothing O(pages) is held but
    # what is due. A page lists its entry's categories, which dedup may change (lending those
    # of its duplicates) without a new version of the entry.
    while rows := store.page_rows(after):
        for uid, i, version, categories, recorded in rows:
            signature = _signature(settings_digest, version, categories)
            if uid in rendered:
                recorded = rendered[uid]
                seen_rendered.add(uid)
            if force or recorded != signature or page_name(uid) not in on_disk:
                todo.append((uid, i, signature))
        after = rows[-1][0]
    gone = set(store.unwanted_pages()) | (rendered.keys() - seen_rendered)
    return todo, sorted(gone)


def render(store: Store, out_dir: Path, todo: Sequence[Todo], ctx: PageContext) -> int:
    """Write the pages of `todo` whose bytes changed; returns how many."""
    from .files import write_if_changed

    rows = store.entries_by_id([i for _, i, _ in todo])
    cats = store.entry_categories([r.id for r in rows])
    return sum(
        write_if_changed(page_path(out_dir, r.uid), ctx.render("article.html", _context(r, cats[r.id], ctx)))
        for r in rows
    )


def record(store: Store, todo: Sequence[Todo]) -> None:
    """Remember what the pages of `todo` were rendered from."""
    store.record_pages([(uid, sig) for uid, _, sig in todo])


def remove_files(out_dir: Path, gone: Sequence[str]) -> int:
    """Delete the pages of entries withdrawn or hidden as duplicates; returns files removed.
    Their records go with `forget`, once the removals are on disk."""
    removed = 0
    for uid in gone:
        path = page_path(out_dir, uid)
        if path.exists():
            path.unlink()
            removed += 1
    return removed


def forget(store: Store, gone: Sequence[str]) -> None:
    store.forget_pages(gone)


def _files(folder: Path, nonempty: bool) -> set[str]:
    """Names of the files in `folder` (only the non-empty ones with `nonempty`): a page that
    is missing or empty is written again whatever its record says. One listing of the folder
    instead of a stat per page, unless sizes are asked for."""
    try:
        if not nonempty:
            return set(os.listdir(folder))
        with os.scandir(folder) as it:
            return {e.name for e in it if _size(e) > 0}
    except FileNotFoundError:
        return set()


def _size(e: os.DirEntry) -> int:
    try:
        return e.stat(follow_symlinks=False).st_size
    except OSError:
        return 0


def _signature(settings_digest: str, version: str, categories: str | None) -> str:
    """What a page is rendered from. `categories`: its category ids, ascending, as "3,17"
    (written as the list "[3, 17]": the form signatures have always been computed from)."""
    listed = f"[{categories.replace(',', ', ')}]" if categories else "[]"
    return hashlib.sha256(f"{settings_digest}\x00{version}\x00{listed}".encode()).hexdigest()


def _context(row: StoredEntry, categories: Sequence, ctx: PageContext) -> dict:
    published = row.published or row.first_seen
    updated = row.updated if row.updated and row.updated > published else None
    authors = row.authors or ([row.outlet] if row.outlet else [ctx.sources.get(row.source_id, "")])
    return {
        "site_title": ctx.site_title,
        "language": ctx.language,
        "index_url": "../index.html",
        "title": row.title,
        "authors": [a for a in authors if a],
        "outlet": row.outlet,
        "published": published.strftime("%Y-%m-%d %H:%M UTC"),
        "published_iso": published.isoformat(),
        "updated": updated.strftime("%Y-%m-%d %H:%M UTC") if updated else None,
        "categories": [{"name": c.name, "url": f"../index.html#{c.slug}", "feed": f"../{c.slug}/"} for c in categories],
        "tags": row.tags,
        "image": safe_url(row.image, 8192),  # http(s) only: never javascript: or data: in <img src>
        "content": row.content,
        "summary": row.summary,
        "permalink": f"{ctx.base_url}{PAGE_DIR}/{row.uid}.html",
    }
