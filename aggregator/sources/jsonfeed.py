"""JSON Feed 1.0/1.1 documents (https://jsonfeed.org/version/1.1) → `Entry`.

`feeds.parse_feed` hands a document here when it is JSON; its items are built, cleaned and
rejected one by one with the same helpers as RSS and Atom items (`feeds`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ..text import absolute_url, is_url
from .feeds import (
    FeedContext,
    FeedError,
    ParsedFeed,
    ParsedItem,
    _as_html,
    _capped,
    _categories,
    _enclosure,
    _finished,
    _guid,
    _keep,
    _rewritten,
)

JSON_FEED_VERSION = "https://jsonfeed.org/version/"


def parse_json_feed(body: bytes, ctx: FeedContext) -> ParsedFeed:
    """JSON Feed 1.0/1.1 (https://jsonfeed.org/version/1.1)."""
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FeedError(f"not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith(JSON_FEED_VERSION):
        raise FeedError("JSON document is not a JSON Feed (no https://jsonfeed.org/version/ 'version')")
    items = doc.get("items")
    if not isinstance(items, list):
        raise FeedError("JSON Feed has no 'items' list")
    feed_title = " ".join(str(doc.get("title") or "").split()) or None
    base = doc.get("feed_url") if is_url(str(doc.get("feed_url") or "")) else ctx.url
    feed_authors = _json_authors(doc)
    parsed = ParsedFeed([], feed_title, None, None)
    for i in _capped([i for i in items if isinstance(i, dict)], ctx, parsed):
        _keep(parsed, ctx, i.get("url") or i.get("id"), lambda i=i: _json_item(i, feed_title, feed_authors, base, ctx))
    return parsed


def _json_item(
    i: dict, feed_title: str | None, feed_authors: tuple[str, ...], base: str, ctx: FeedContext
) -> ParsedItem:
    link = next(
        (absolute_url(str(u), base) for u in (i.get("url"), i.get("external_url")) if isinstance(u, str) and u),
        None,
    )
    link = link if link and is_url(link) else None
    if isinstance(i.get("content_html"), str) and i["content_html"].strip():
        content = i["content_html"]
    elif isinstance(i.get("content_text"), str):
        content = _as_html({"value": i["content_text"], "type": "text/plain"})
    else:
        content = ""
    title = " ".join(str(i.get("title") or "")[: ctx.limits.title_chars * 2].split())
    summary_text = str(i["summary"]) if isinstance(i.get("summary"), str) else ""
    tags = [str(t) for t in _list(i.get("tags")) if isinstance(t, str | int)]
    authors = _json_authors(i) or feed_authors
    categories, dropped = _categories(tags, ctx)
    if ctx.rules:
        title, content, summary_text, categories = _rewritten(ctx, title, content, summary_text, link, authors,
                                                              categories)  # fmt: skip
    image = next((str(u) for u in (i.get("image"), i.get("banner_image")) if isinstance(u, str) and u), None)
    image = absolute_url(image, base) if image else None
    attachments = [(a.get("url"), a.get("mime_type"), a.get("size_in_bytes")) for a in _list(i.get("attachments"))
                   if isinstance(a, dict)]  # fmt: skip
    return _finished(
        ctx, feed_title, title=title, content=content, content_base=link or base, summary=summary_text, link=link,
        authors=authors, categories=categories, dropped=dropped, published=_iso_date(i.get("date_published")),
        updated=_iso_date(i.get("date_modified")), image=image if image and is_url(image) else None,
        enclosure=_enclosure(attachments, base),
        guid=_guid(i["id"], ctx.limits) if i.get("id") not in (None, "") else None,
        date_text=str(i.get("date_published") or ""),
    )  # fmt: skip


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _json_authors(obj: dict) -> tuple[str, ...]:
    people = obj.get("authors")
    if not isinstance(people, list):
        people = [obj["author"]] if isinstance(obj.get("author"), dict) else []  # JSON Feed 1.0
    names = [str(p.get("name") or "").strip() for p in people if isinstance(p, dict)]
    return tuple(dict.fromkeys(n for n in names if n))


def _iso_date(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    from dateutil.parser import isoparse

    try:
        d = isoparse(value.strip())
    except (ValueError, OverflowError):
        return None
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).astimezone(UTC)
