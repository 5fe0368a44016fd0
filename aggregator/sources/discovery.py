"""Feed discovery: the feeds a web page announces with `<link rel="alternate">`.

A source URL is often a site's home page rather than its feed; every feed reader looks in the
page's head for `<link rel="alternate" type="application/rss+xml" href="…">` (Atom and JSON Feed
alike) and subscribes to what it names. Pure: HTML in, feed links out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..text import absolute_url, is_url

FEED_TYPES = {
    "application/rss+xml": "rss",
    "application/atom+xml": "atom",
    "application/feed+json": "json",
    "application/json": "json",  # JSON Feed 1.0 pages often say this
    "application/rdf+xml": "rss",  # RSS 1.0
    "text/xml": "rss",
}
MAX_HEAD = 512_000  # bytes of a page looked at: the links are in its head


@dataclass(frozen=True, slots=True)
class FeedLink:
    url: str
    kind: str  # atom | rss | json
    title: str | None = None


def discover(page: bytes | str, base_url: str) -> list[FeedLink]:
    """The feeds `page` (fetched from `base_url`) links to, in document order, without repeats."""
    import lxml.html
    from lxml import etree

    page = page[:MAX_HEAD]
    if not page.strip():
        return []
    try:
        doc = lxml.html.document_fromstring(page)
    except (etree.ParserError, ValueError):
        return []
    base = doc.find(".//base[@href]")
    base_url = absolute_url(base.get("href"), base_url) if base is not None else base_url
    found: list[FeedLink] = []
    seen: set[str] = set()
    for link in doc.iter("link"):
        rels = (link.get("rel") or "").lower().split()
        kind = FEED_TYPES.get((link.get("type") or "").split(";")[0].strip().lower())
        href = (link.get("href") or "").strip()
        if "alternate" not in rels or kind is None or not href:
            continue
        url = absolute_url(href, base_url)
        if not is_url(url) or url in seen:
            continue
        seen.add(url)
        title = " ".join((link.get("title") or "").split()) or None
        found.append(FeedLink(url, kind, title))
    return found


def choose(links: list[FeedLink], prefer: str | None = None) -> FeedLink | None:
    """The feed to subscribe to: the first of the preferred kind, else the first."""
    if prefer:
        for link in links:
            if link.kind == prefer:
                return link
    return links[0] if links else None
