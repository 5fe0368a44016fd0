"""One feed's data → Atom 1.0, RSS 2.0 and JSON Feed 1.1 bytes.

Atom and RSS are built with feedgen, then finished on its lxml tree where feedgen falls
short (see shared notes on output feeds): it cannot write media:thumbnail without wrapping
it in media:group, loses `rel`/`type`/`length` on entry links (so enclosures are added
here), writes no dc:creator, drops the hub link from RSS, and knows neither RFC 5005
(fh:archive, prev-archive/current links) nor the xml-stylesheet processing instruction.
Everything here is a pure function of its arguments, so equal inputs give equal bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

from .. import __version__
from .files import CONTENT_TYPES, FILENAMES  # noqa: F401  (the formats' file names, re-exported)

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_NS = "http://search.yahoo.com/mrss/"
DC_NS = "http://purl.org/dc/elements/1.1/"
CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
FH_NS = "http://purl.org/syndication/history/1.0"  # RFC 5005
GENERATOR = "aggregator"
GENERATOR_URI = "https://github.com/aggregator/aggregator"
# An empty feed still needs an `updated`; a fixed one keeps its bytes stable.
EMPTY_FEED_DATE = datetime(2000, 1, 1, tzinfo=UTC)

RSS_DOCS = "https://www.rssboard.org/rss-specification"


@dataclass(frozen=True, slots=True)
class FeedEnclosure:
    url: str
    length: int  # bytes; RSS requires it, so an enclosure of unknown size is not published
    type: str  # MIME type


@dataclass(frozen=True, slots=True)
class FeedItem:
    id: str  # permanent id (urn:uuid:…)
    title: str
    link: str
    published: datetime
    updated: datetime
    authors: tuple[str, ...]
    categories: tuple[tuple[str, str], ...]  # (slug, display name)
    summary: str
    content_html: str | None  # None: publish the summary only
    image: str | None = None
    enclosure: FeedEnclosure | None = None
    also: tuple[tuple[str, str], ...] = ()  # (name, URL) of other reports of the same story
    also_label: str = "Also reported by:"  # in the site's language


@dataclass(frozen=True, slots=True)
class FeedInfo:
    id: str
    title: str
    description: str
    home_url: str  # the HTML page about this feed
    base_url: str  # the site root, for category schemes
    self_urls: dict[str, str]  # format → URL the file is served at
    language: str
    author: str
    category_scheme: str
    items: tuple[FeedItem, ...] = ()
    ttl_minutes: int | None = None
    icon: str | None = None  # square
    logo: str | None = None  # 2:1; also the RSS channel image
    stylesheet: str | None = None  # URL of an XSLT for browsers, relative to the file
    # Extra feed-level links, rel → format → URL: RFC 5005 "prev-archive" and "current".
    links: dict[str, dict[str, str]] = field(default_factory=dict)
    archive: bool = False  # an RFC 5005 archive document: <fh:archive/>
    hub: str | None = None

    @property
    def updated(self) -> datetime:
        return max((i.updated for i in self.items), default=EMPTY_FEED_DATE)


def _generator(info: FeedInfo, fmt: str):
    """The feed's head (everything but its entries) as a feedgen FeedGenerator."""
    from feedgen.feed import FeedGenerator

    fg = FeedGenerator()
    fg.id(info.id)
    fg.title(info.title)
    fg.subtitle(info.description) if fmt == "atom" else fg.description(info.description)
    fg.language(info.language)
    fg.author(name=info.author)
    fg.generator(GENERATOR, version=__version__, uri=GENERATOR_URI)
    if fmt == "rss":
        fg.docs(RSS_DOCS)
    if info.icon:
        fg.icon(info.icon)
    if info.logo:
        fg.logo(info.logo)
    # RSS's channel <link> is the last link added: self first, alternate last.
    fg.link(href=info.self_urls[fmt], rel="self", type=f"application/{fmt}+xml")
    fg.link(href=info.home_url, rel="alternate", type="text/html")
    fg.updated(info.updated)
    if fmt == "rss":
        fg.lastBuildDate(info.updated)
        if info.ttl_minutes:
            fg.ttl(info.ttl_minutes)
    return fg


def entry_elements(item: FeedItem, formats: Sequence[str], category_scheme: str) -> dict[str, etree._Element]:
    """One item as an Atom <entry> and/or RSS <item> element (per format of `formats`):
    feedgen's, finished where it falls short.

    They depend only on the item, so a build renders an entry once and moves the elements into
    every feed and archive page that lists it. One feedgen entry serves both formats: it maps
    an Atom category's label to the RSS category text."""
    from feedgen.entry import FeedEntry

    fe = FeedEntry()
    fe.id(item.id)
    fe.guid(item.id, permalink=False)
    fe.title(item.title)
    fe.link(href=item.link, rel="alternate")
    fe.published(item.published)
    fe.updated(item.updated)
    for name in item.authors:
        fe.author(name=name)
    if item.categories:
        fe.category(
            [{"term": slug, "label": name, "scheme": f"{category_scheme}{slug}/"} for slug, name in item.categories]
        )
    if item.summary:
        fe.summary(item.summary)
    if item.content_html is not None:
        fe.content(_with_also(item), type="html")
    elif not item.summary:
        fe.summary(item.title)
    out = {}
    if "atom" in formats:
        out["atom"] = _finish_atom_entry(fe.atom_entry(), item)
    if "rss" in formats:
        out["rss"] = _finish_rss_item(fe.rss_entry(), item)
    return out


def entry_element(item: FeedItem, fmt: str, category_scheme: str) -> etree._Element:
    """The item's element in one format (see `entry_elements`)."""
    return entry_elements(item, (fmt,), category_scheme)[fmt]


def _finish_atom_entry(entry: etree._Element, item: FeedItem) -> etree._Element:
    for link in entry.iterfind("link"):
        link.set("rel", "alternate")
        link.set("type", "text/html")
    if item.enclosure:
        e = item.enclosure
        entry.append(etree.Element("link", rel="enclosure", href=e.url, type=e.type, length=str(e.length)))
    if item.image:
        etree.SubElement(entry, f"{{{MEDIA_NS}}}thumbnail", url=item.image)
    return entry


def _finish_rss_item(el: etree._Element, item: FeedItem) -> etree._Element:
    anchor = el.find("guid")
    for name in reversed(item.authors):
        creator = etree.Element(f"{{{DC_NS}}}creator")
        creator.text = name
        anchor.addnext(creator)
    if item.enclosure:
        e = item.enclosure
        # RSS allows one enclosure per item; it goes before the guid, as in the spec's order.
        anchor.addprevious(etree.Element("enclosure", url=e.url, length=str(e.length), type=e.type))
    if item.image:
        el.append(etree.Element(f"{{{MEDIA_NS}}}thumbnail", url=item.image))
    return el


# How a renderer gets an item's element: build it, or copy it from a build-wide cache.
ElementSource = Callable[[FeedItem, str, str], etree._Element]


def _with_also(item: FeedItem) -> str:
    """The content, followed by links to the other reports of the same story (dedup clusters)."""
    content = item.content_html or ""
    if not item.also:
        return content
    from html import escape

    links = ", ".join(f'<a href="{escape(url)}">{escape(name)}</a>' for name, url in item.also)
    return f"{content}\n<p>{escape(item.also_label)} {links}</p>"


def _serialize(root: etree._Element, info: FeedInfo) -> bytes:
    # Declares every namespace the document uses once, on the root; unused ones are dropped.
    etree.cleanup_namespaces(root, top_nsmap=NSMAP)
    body = etree.tostring(root, encoding="UTF-8", xml_declaration=False, pretty_print=True)
    head = b'<?xml version="1.0" encoding="UTF-8"?>\n'
    if info.stylesheet:
        head += f'<?xml-stylesheet type="text/xsl" href="{info.stylesheet}"?>\n'.encode()
    return head + body


NSMAP = {"atom": ATOM_NS, "media": MEDIA_NS, "dc": DC_NS, "content": CONTENT_NS, "fh": FH_NS}


def render_atom(info: FeedInfo, element: ElementSource = entry_element) -> bytes:
    root, _ = _generator(info, "atom")._create_atom()
    # feedgen writes Atom elements without a namespace and a literal xmlns attribute.
    extra = [etree.Element("link", rel="hub", href=info.hub)] if info.hub else []
    for rel, by_format in info.links.items():
        if "atom" in by_format:
            extra.append(etree.Element("link", rel=rel, href=by_format["atom"], type="application/atom+xml"))
    if info.archive:
        extra.append(etree.Element(f"{{{FH_NS}}}archive"))
    links = root.findall("link")
    _insert_after(links[-1] if links else root[0], extra)
    for item in info.items:
        root.append(element(item, "atom", info.category_scheme))
    return _serialize(root, info)


def render_rss(info: FeedInfo, element: ElementSource = entry_element) -> bytes:
    root, _ = _generator(info, "rss")._create_rss()
    channel = root.find("channel")
    extra = [etree.Element(f"{{{ATOM_NS}}}link", rel="hub", href=info.hub)] if info.hub else []
    for rel, by_format in info.links.items():
        if "rss" in by_format:
            extra.append(
                etree.Element(f"{{{ATOM_NS}}}link", rel=rel, href=by_format["rss"], type="application/rss+xml")
            )
    if info.archive:
        extra.append(etree.Element(f"{{{FH_NS}}}archive"))
    self_link = channel.find(f"{{{ATOM_NS}}}link")
    _insert_after(self_link if self_link is not None else channel.find("description"), extra)
    for item in info.items:
        channel.append(element(item, "rss", info.category_scheme))
    return _serialize(root, info)


def render_json(info: FeedInfo, element: ElementSource | None = None) -> bytes:
    # `element` is there so that every renderer takes the same arguments; JSON items are dicts.
    doc: dict = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": info.title,
        "home_page_url": info.home_url,
        "feed_url": info.self_urls["json"],
        "description": info.description,
        "language": info.language,
        "authors": [{"name": info.author}],
    }
    # JSON Feed's icon is square like Atom's icon; a 2:1 logo is only a fallback.
    if info.icon or info.logo:
        doc["icon"] = info.icon or info.logo
    if info.icon:
        doc["favicon"] = info.icon
    # JSON Feed's pagination: `next_url` leads to older items, the way prev-archive does.
    older = info.links.get("prev-archive", {}).get("json")
    if older:
        doc["next_url"] = older
    if info.hub:
        doc["hubs"] = [{"type": "WebSub", "url": info.hub}]
    doc["items"] = [_json_item(item) for item in info.items]
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _json_item(item: FeedItem) -> dict:
    out: dict = {"id": item.id, "url": item.link, "title": item.title}
    if item.content_html is not None:
        out["content_html"] = _with_also(item)
    else:
        out["content_text"] = item.summary or item.title
    out["summary"] = item.summary
    if item.image:
        out["image"] = item.image
    out["date_published"] = item.published.isoformat()
    out["date_modified"] = item.updated.isoformat()
    out["authors"] = [{"name": a} for a in item.authors]
    out["tags"] = [name for _, name in item.categories]
    if item.enclosure:
        e = item.enclosure
        out["attachments"] = [{"url": e.url, "mime_type": e.type, "size_in_bytes": e.length}]
    return out


RENDERERS = {"atom": render_atom, "rss": render_rss, "json": render_json}


def _insert_after(anchor: etree._Element, new: list[etree._Element]) -> None:
    for el in new:
        anchor.addnext(el)
        anchor = el
