"""Feed documents (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.x) → `Entry`.

feedparser does the XML work on the response bytes and headers, so the declared charset and
Content-Location count. Its own sanitizer and relative-URI rewriting are off: our pipeline
sanitizes and absolutizes once with nh3 (`text.sanitize_html`), which is several times faster.

Everything here is a pure function of bytes, headers and settings, so it runs in worker
processes while the event loop keeps fetching. Which identity an entry gets (guid, link or a
hash) is decided afterwards by `choose_identity` / `assign_keys`, because that depends on what
the store already holds for the source.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import feedparser

from ..categorymap import sort_terms
from ..cleaning import Limits, clean, xml_text
from ..model import Enclosure, Entry, Rejected, positional_pickle
from ..text import absolute_url, is_url, plain_text, sanitize_html, summarize
from . import feedparser_setup  # noqa: F401  (applied on import: ids kept as written, two shortcuts)
from .identity import IdentityDecision, assign_keys, choose_identity, item_key  # noqa: F401  (their old home)

# Legacy Chinese encodings are declared by their narrowest name but written with the widest
# codec the publishing tool had: decode with the superset so no character is lost.
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
}
_XML_DECL_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9._-]+)", re.I)
_PERIODS = {"hourly": 3600, "daily": 86400, "weekly": 604800, "monthly": 2592000, "yearly": 31536000}


class FeedError(ValueError):
    """The document yields no entries; the message says why."""


@dataclass(frozen=True, slots=True)
class FeedContext:
    """What parsing needs to know about the source."""

    source: str
    url: str  # the URL the document came from: the base of relative links
    categories: tuple[str, ...] = ()  # canonical names added to every entry
    aliases: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    feed_categories: str | bool = "keep"  # the items' own categories: keep, map or ignore (`categorymap`)
    known: Mapping[str, str] = field(default_factory=dict)  # what "map" keeps: `categorymap.known_names`
    rules: tuple = ()  # `rules.Rule`s covering this source, run on each item before sanitizing


@positional_pickle
@dataclass(frozen=True, slots=True)
class ParsedItem:
    """One parsed entry and the identities it could have; `entry.key` is set by `assign_keys`."""

    entry: Entry
    guid: str | None
    link: str | None
    fallback: str  # digest of title and date, for items with neither


@dataclass(slots=True)
class ParsedFeed:
    items: list[ParsedItem]
    title: str | None = None
    flag: str | None = None  # why feedparser found the document ill-formed, when it still yielded entries
    hint: float | None = None  # seconds between updates the feed itself suggests (ttl, sy:updatePeriod)
    cuts: list[str] = field(default_factory=list)  # what limits and cleaning removed, for the log
    rejected: list[Rejected] = field(default_factory=list)  # items that could not become entries


# ---------------------------------------------------------------- entry point


def parse_feed(body: bytes, headers: Mapping[str, str], ctx: FeedContext) -> ParsedFeed:
    """A fetched document → entries, or FeedError when nothing usable is in it (and nothing else:
    a parser crash on a hostile document is this feed's error, reported as a FeedError)."""
    try:
        return _parse(body, headers, ctx)
    except FeedError:
        raise
    except RecursionError:
        raise FeedError("cannot parse: nested too deeply") from None
    except Exception as e:
        raise FeedError(f"cannot parse: {e.__class__.__name__}: {xml_text(str(e))[:200]}") from None


def _parse(body: bytes, headers: Mapping[str, str], ctx: FeedContext) -> ParsedFeed:
    headers = {str(k).lower(): str(v) for k, v in headers.items()}
    if _looks_like_json(body, headers.get("content-type", "")):
        from .jsonfeed import parse_json_feed  # here: it builds its items with this module's helpers

        return parse_json_feed(body, ctx)
    headers = _charset_override(body, headers)
    # The base of relative links: the server's Content-Location (itself maybe relative), else the
    # URL. It is applied here, once per link, not handed to feedparser: feedparser re-resolves its
    # base at every element, which costs a fifth of its parsing time.
    doc_base = absolute_url(headers.pop("content-location", "") or "", ctx.url) or ctx.url
    d = feedparser.parse(body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False)
    # A feed served as text/html or without a type is common and harmless: not worth a flag.
    benign = isinstance(d.get("bozo_exception"), feedparser.NonXMLContentType)
    flag = _bozo_message(d) if d.get("bozo") and not benign else None
    if not d.entries:
        if not d.get("version"):
            raise FeedError("not an RSS, Atom or JSON feed" + (f" ({flag})" if flag else ""))
        if flag:
            raise FeedError(f"not a well-formed feed: {flag}")
    feed_title = _clean_title(d.feed.get("title_detail"), ctx.limits.author_chars) or None
    feed_authors = _authors(d.feed)
    parsed = ParsedFeed([], feed_title, flag, _hint_seconds(d.feed))
    for e in _capped(d.entries, ctx, parsed):
        _keep(parsed, ctx, e.get("link") or e.get("id"), lambda e=e: _item(e, feed_title, feed_authors, ctx, doc_base))
    return parsed


def _capped(entries: Sequence, ctx: FeedContext, parsed: ParsedFeed) -> Sequence:
    """The first `entries_per_fetch` items of the document (feeds list the newest first)."""
    limit = ctx.limits.entries_per_fetch
    if len(entries) > limit:
        parsed.cuts.append(f"{len(entries):,} items in the document, only the first {limit:,} kept (entries_per_fetch)")
        return entries[:limit]
    return entries


def _keep(parsed: ParsedFeed, ctx: FeedContext, where: object, make) -> None:
    """Build one item and clean its entry; a failure rejects that item alone, with the reason."""
    where = xml_text(str(where or ctx.url))[:300]
    try:
        item = make()
        done = clean(item.entry, ctx.limits, keep=ctx.categories)
    except Exception as e:  # one hostile item must not cost the feed its other items
        parsed.rejected.append(Rejected(ctx.source, where, f"{e.__class__.__name__}: {xml_text(str(e))[:200]}"))
        return
    parsed.cuts += [f"{done.entry.link or where}: {c}" for c in done.cuts]
    parsed.items.append(ParsedItem(done.entry, item.guid, done.entry.link, item.fallback))


def _guid(value: object, limits: Limits) -> str | None:
    """A GUID as an identity: XML-legal, and a digest when it is absurdly long (still stable)."""
    guid = xml_text(str(value or "")).strip()
    if len(guid) > limits.url_chars:
        guid = "sha1:" + hashlib.sha1(guid.encode("utf-8", "surrogatepass")).hexdigest()
    return guid or None


def _looks_like_json(body: bytes, content_type: str) -> bool:
    """By the first byte when there is one (servers mislabel feeds both ways), else by the type."""
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{") if head else "json" in content_type.lower()


def _charset_override(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """Swap a declared GB2312/GBK/Big5 charset for its superset codec (in the header, which
    feedparser lets win over the XML declaration)."""
    m = _CHARSET.search(headers.get("content-type", ""))
    declared = m.group(1) if m else None
    if declared is None:
        x = _XML_DECL_ENCODING.match(body[:200])
        declared = x.group(1).decode("ascii") if x else None
    wider = _SUPERSETS.get((declared or "").lower())
    if wider:
        headers["content-type"] = f"application/xml; charset={wider}"
    return headers


def _bozo_message(d) -> str:
    exc = d.get("bozo_exception")
    text = str(exc).strip() if exc is not None else ""
    return f"{exc.__class__.__name__}: {text}" if exc is not None and text else (text or "ill-formed")


def _hint_seconds(feed) -> float | None:
    """The update interval the feed announces: RSS `<ttl>` (minutes) or sy:updatePeriod/Frequency."""
    hints: list[float] = []
    try:
        ttl = float(str(feed.get("ttl", "")).strip() or "nan")
        if ttl > 0:
            hints.append(ttl * 60)
    except ValueError:
        pass
    period = _PERIODS.get(str(feed.get("sy_updateperiod", "")).strip().lower())
    if period:
        try:
            freq = max(1.0, float(str(feed.get("sy_updatefrequency", "1")).strip() or 1))
        except ValueError:
            freq = 1.0
        hints.append(period / freq)
    return max(hints) if hints else None


# ---------------------------------------------------------------- RSS / Atom entries


def _item(e, feed_title: str | None, feed_authors: tuple[str, ...], ctx: FeedContext, doc_base: str) -> ParsedItem:
    # Every key read here is canonical, so the entry and the dicts in it (details, links, tags,
    # authors, media) are read as plain dicts: FeedParserDict's alias lookup on each `get` cost
    # a tenth of building an item.
    e = {k: _plain(v) for k, v in dict.items(e)}
    base = _entry_base(e, doc_base)
    link = _entry_link(e, base)
    content, content_base, from_summary = _content(e, base)
    summary_html = e.get("summary", "") if not from_summary else ""
    title = _clean_title(e.get("title_detail"), ctx.limits.title_chars)
    authors = _authors(e) or feed_authors
    categories, dropped = _categories([t.get("label") or t.get("term") or "" for t in e.get("tags", [])], ctx)
    if ctx.rules:
        title, content, summary_html, categories = _rewritten(ctx, title, content, summary_html, link, authors,
                                                              categories)  # fmt: skip
    # dict.get: FeedParserDict would answer a missing updated_parsed with published_parsed.
    published = _date(dict.get(e, "published_parsed")) or _date(dict.get(e, "created_parsed"))
    enclosures = [(lk.get("href"), lk.get("type"), lk.get("length")) for lk in e.get("links", [])
                  if lk.get("rel") == "enclosure"]  # fmt: skip
    return _finished(
        ctx, feed_title, title=title, content=content, content_base=content_base, summary=summary_html, link=link,
        authors=authors, categories=categories, dropped=dropped, published=published,
        updated=_date(dict.get(e, "updated_parsed")), image=_image(e, base), enclosure=_enclosure(enclosures, base),
        guid=_guid(e.get("id"), ctx.limits), date_text=dict.get(e, "published") or dict.get(e, "updated") or "",
    )  # fmt: skip


def _finished(ctx: FeedContext, feed_title: str | None, *, title: str, content: str, content_base: str | None,
              summary: str, link: str | None, authors: tuple[str, ...], categories: tuple[str, ...], dropped,
              published: datetime | None, updated: datetime | None, image: str | None, enclosure,
              guid: str | None, date_text: str) -> ParsedItem:  # fmt: skip
    """An item of any format (RSS, Atom, JSON Feed) from its fields as read and rewritten: the
    body sanitized against `content_base`, the summary (`summary`, HTML or text, else the body's
    head) and a missing title made from it, and the dates by one rule for every format."""
    body = sanitize_html(content, content_base) if content else ""
    title = title or summarize(body, 80) or link or "(untitled)"
    if published is None:
        # An Atom entry often has only <updated>: that is the best publication date it gives.
        published, updated = updated, None
    entry = Entry(
        source=ctx.source,
        key="",
        title=title,
        content_html=body,
        summary=summarize(summary) if summary else summarize(body),
        link=link,
        published=published,
        updated=updated if updated and published and updated > published else None,
        authors=authors,
        categories=categories,
        outlet=feed_title,
        image=image,
        enclosure=enclosure,
    )
    if dropped:
        entry = replace(entry, dropped=tuple(dropped))
    return ParsedItem(entry, guid, link, _fallback(title, date_text))


def _plain(value):
    """A FeedParserDict (or a list of them) as plain dicts, one level deep."""
    if isinstance(value, dict):
        return dict(dict.items(value))
    if isinstance(value, list):
        return [dict(dict.items(v)) if isinstance(v, dict) else v for v in value]
    return value


def _rewritten(ctx: FeedContext, title: str, content: str, summary: str, link: str | None,
               authors: tuple[str, ...], categories: tuple[str, ...]) -> tuple[str, str, str, tuple]:  # fmt: skip
    """(title, content, summary, categories) after the source's rewriting rules (`rules.rewrite`),
    on the item as fetched: its content is not sanitized yet, so a `remove` selector still finds
    `div.ad` (sanitizing drops classes)."""
    from ..rules import rewrite

    raw = Entry(ctx.source, "", title, content, summary, link=link, authors=authors, categories=categories)
    done = rewrite(ctx.rules, raw)
    return done.title, done.content_html, done.summary, done.categories


def _entry_base(e, doc_base: str) -> str:
    """The entry's xml:base (as feedparser tracked it, maybe relative) against the document's."""
    for key in ("title_detail", "summary_detail"):
        base = (e.get(key) or {}).get("base")
        if base:
            return absolute_url(base, doc_base)
    return doc_base


def _entry_link(e, base: str) -> str | None:
    candidates = [lk.get("href") for lk in e.get("links", []) if lk.get("rel", "alternate") == "alternate"]
    candidates.append(e.get("link"))
    if e.get("guidislink"):
        candidates.append(e.get("id"))
    for c in candidates:
        if c:
            url = absolute_url(c, base)
            if is_url(url):
                return url
    return None


def _content(e, base: str) -> tuple[str, str, bool]:
    """Full content preferred over the summary: (html, its base URL, came from the summary)."""
    parts = list(e.get("content", []))
    parts.sort(key=lambda c: 0 if "html" in (c.get("type") or "") else 1)
    for c in parts:
        if (c.get("value") or "").strip():
            return _as_html(c), absolute_url(c.get("base") or "", base) or base, False
    detail = e.get("summary_detail")
    if detail and (detail.get("value") or "").strip():
        return _as_html(detail), absolute_url(detail.get("base") or "", base) or base, True
    return "", base, True


def _as_html(detail) -> str:
    value = detail.get("value") or ""
    if "html" in (detail.get("type") or "text/html"):
        return value
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in re.split(r"\n\s*\n", value) if p.strip())


def _clean_title(detail, limit: int) -> str:
    if not detail:
        return ""
    value = detail.get("value") or ""
    # Only the head can be kept (cleaning cuts a title at `limit`): do not spend time on the rest.
    # HTML rarely has more than 8 characters of markup per character of text.
    value = value[: limit * 8]
    if "html" in (detail.get("type") or ""):
        value = plain_text(value)
    return " ".join(value.split())


def _date(parsed) -> datetime | None:
    """feedparser's UTC struct_time → an aware datetime."""
    if not parsed:
        return None
    try:
        return datetime(*parsed[:6], tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def _authors(e) -> tuple[str, ...]:
    names = [a.get("name") or a.get("email") or "" for a in e.get("authors", []) if isinstance(a, Mapping)]
    if not any(names) and e.get("author"):
        names = [e.get("author")]
    return tuple(dict.fromkeys(" ".join(n.split()) for n in names if n and n.strip()))


def _categories(names: Sequence[str], ctx: FeedContext) -> tuple[tuple[str, ...], list[str]]:
    """(categories, dropped): the item's own categories the source's `feed_categories` keeps,
    then the source's; and the terms it dropped (`categorymap`)."""
    kept, dropped = sort_terms(names, ctx.feed_categories, ctx.known, ctx.aliases)
    return tuple(dict.fromkeys([*kept, *ctx.categories])), dropped


def _image(e, base: str) -> str | None:
    candidates = [t.get("url") for t in e.get("media_thumbnail", [])]
    candidates += [
        m.get("url")
        for m in e.get("media_content", [])
        if m.get("medium") == "image" or (m.get("type") or "").startswith("image/")
    ]
    candidates += [
        lk.get("href")
        for lk in e.get("links", [])
        if lk.get("rel") == "enclosure" and (lk.get("type") or "").startswith("image/")
    ]
    for c in candidates:
        if c:
            url = absolute_url(c, base)
            if is_url(url):
                return url
    return None


def _enclosure(candidates: Sequence[tuple[object, object, object]], base: str) -> Enclosure | None:
    """The first non-image enclosure (images become the entry's `image`): (url, type, length)."""
    for url, kind, length in candidates:
        kind = str(kind or "application/octet-stream").strip().lower()
        if not url or kind.startswith("image/"):
            continue
        url = absolute_url(str(url), base)
        if not is_url(url):
            continue
        try:
            size = int(str(length).strip()) if length not in (None, "") else None
        except ValueError:
            size = None
        return Enclosure(url, kind, size if size and size > 0 else None)
    return None


def _fallback(title: str, date: str) -> str:
    return hashlib.sha1(f"{title}\x00{date}".encode("utf-8", "surrogatepass")).hexdigest()[:20]
