"""Article files → `Entry`.

Handles the dialects real sites produce: Jekyll, Hexo and Hugo front matter and Pelican's
`Key: value` header (`frontmatter.py`), UTF-8 with or without BOM and GB18030/GBK files, HTML
or Markdown bodies, the trailing `<http…>` line that carries the original URL, and site
boilerplate (back-links, stock-quote links). What a site's layout decides (where posts are,
their permalinks) comes in through `ArticleContext.site`.

Everything here is a pure function of bytes and settings except `read_article`, which opens
one file. Every regular expression is linear: possessive quantifiers or bounded repeats
where an ambiguous pattern could backtrack.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo

from ..cleaning import Limits, clean_entry
from ..model import Entry, FileStamp, Held, Rejected
from ..runtime import TimeLimitExceeded, time_limit
from ..text import absolute_url, is_url, sanitize_html, summarize
from .dates import DateError, date_from_filename, local_date, parse_date
from .frontmatter import FrontMatterError, html_head_metadata, split_front_matter
from .sites import DRAFT, HUGO, IMAGE_KEYS, JEKYLL, LINK_KEYS, PLAIN, Site, classify, not_rendered

log = logging.getLogger(__name__)

MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown"})
MAX_LIST_ITEMS = 1000  # categories or tags of one article: a flattened YAML list stops here


class ArticleError(ValueError):
    """This file cannot become an entry; the message says why."""


# ---------------------------------------------------------------- decoding

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def decode(data: bytes) -> str:
    """Bytes → text: BOMs honoured, UTF-8 tried first, then GB18030 (a superset of GBK and
    GB2312, the legacy encodings of Chinese sites), then a statistical guess."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as e:
                raise ArticleError(f"invalid {encoding} after its byte-order mark: {e.reason}") from None
    if b"\x00" in data[:8192]:
        raise ArticleError("binary data, not a text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ArticleError("unknown text encoding (not UTF-8, GB18030 or any detectable one)")
    return str(best)


# ---------------------------------------------------------------- field readers


def _text_field(meta: dict, *keys: str) -> str | None:
    for key in keys:
        value = _lookup(meta, key)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ArticleError(f"{key}: expected text, got {type(value).__name__}")
        return str(value).strip()
    return None


def _lookup(meta: dict, key: str) -> object:
    """`meta[key]`; a dotted key (`cover.image`) looks into nested tables."""
    if key in meta or "." not in key:
        return meta.get(key)
    value: object = meta
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _first_url(meta: dict, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` that holds text (or a list whose first item is text)."""
    for key in keys:
        value = _lookup(meta, key)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, dict):  # Hugo/Hexo `cover: {image: …}`
            value = value.get("image") or value.get("src") or value.get("url")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _list_field(meta: dict, *keys: str, spaces: bool = False) -> list[str]:
    """A string (`a, b`; with `spaces`, `a b` too, as Jekyll reads it) or a list (nested lists,
    as Hexo writes hierarchies, are flattened). At most MAX_LIST_ITEMS values are visited,
    whatever YAML anchors made of the list."""
    out: list[str] = []
    budget = MAX_LIST_ITEMS
    for key in keys:
        value = meta.get(key)
        if value is None:
            continue
        stack = [value]
        while stack and budget > 0:
            budget -= 1
            v = stack.pop()
            if isinstance(v, list):
                stack.extend(reversed(v[:MAX_LIST_ITEMS]))
            elif isinstance(v, str):
                out.extend(p.strip() for p in (v.replace(",", " ").split() if spaces else v.split(",")) if p.strip())
            elif isinstance(v, int | float) and not isinstance(v, bool):
                out.append(str(v))
            elif v is not None:
                raise ArticleError(f"{key}: expected text or a list of text, got {type(v).__name__}")
    return list(dict.fromkeys(out))


def _authors(meta: dict) -> tuple[str, ...]:
    value = meta.get("author", meta.get("authors"))
    if value is None:
        return ()
    items = value[:MAX_LIST_ITEMS] if isinstance(value, list) else [value]
    names = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("name")
        if isinstance(item, str) and item.strip():
            names.append(item.strip())
        elif item is not None:
            raise ArticleError(f"author: expected a name, got {type(item).__name__}")
    return tuple(names)


def _flag(meta: dict, key: str) -> bool | None:
    value = meta.get(key)
    if isinstance(value, str):
        return {"true": True, "yes": True, "false": False, "no": False}.get(value.strip().lower())
    return value if isinstance(value, bool) else None


# ---------------------------------------------------------------- body clean-up

# Possessive quantifiers: a line of 25 `[返回](x)` links followed by spaces cannot make these backtrack.
_NAV_LINE = re.compile(r"\s*+(?:\[返回[^\]]*+\]\([^)]*+\)\s*+[|｜·/]?+\s*+)++")
_URL_LINE = re.compile(r"\s*<(https?://[^<>\s]++)>\s*")
# A stock-quote link's text is a name or a code: a bounded repeat keeps an unclosed one linear.
_HOT_WORD = re.compile(r"<a\b[^>]{0,300}?\bclass\s*=\s*[\"']?trsHotWords\b[^>]{0,300}>([^<]{0,200})</a\s*>", re.I)
_OUTLET = re.compile(r"[（(]\s*文章来源\s*[：:]\s*([^）)<]{1,100})[）)]")


def clean_body(body: str) -> tuple[str, str | None]:
    """Drop navigation lines and take the trailing `<http…>` line as the original URL."""
    lines = [ln for ln in body.split("\n") if "返回" not in ln or not _NAV_LINE.fullmatch(ln)]
    link = None
    while lines and not lines[-1].strip():
        lines.pop()
    if lines:
        m = _URL_LINE.fullmatch(lines[-1])
        if m:
            link = m.group(1)
            lines.pop()
    body = "\n".join(lines).strip()
    return _HOT_WORD.sub(r"\1", body) if "trsHotWords" in body else body, link


def markdown_title(body: str) -> tuple[str, str] | None:
    """(title, rest) when the body starts with a `# heading` line (ATX closing #s dropped)."""
    text = body.lstrip("\n")
    nl = text.find("\n")
    line = text if nl < 0 else text[:nl]
    if not line.startswith(("# ", "#\t")):
        return None
    title = line[2:].strip().rstrip("#").strip()
    return (title, "" if nl < 0 else text[nl + 1 :]) if title else None


def html_title(body: str) -> str | None:
    """The text of the first `<h1>` (found with str.find: one pass, whatever the markup)."""
    lower = body[:200_000].lower()
    start = lower.find("<h1")
    while start >= 0 and lower[start + 3 : start + 4] not in (">", " ", "\t", "\n", "/"):
        start = lower.find("<h1", start + 3)
    if start < 0:
        return None
    open_end = lower.find(">", start, start + 500)
    close = lower.find("</h1>", open_end, open_end + 2000) if open_end >= 0 else -1
    return body[open_end + 1 : close] if close >= 0 else None


def render_body(body: str, suffix: str) -> str:
    """Markdown (GitHub flavour, raw HTML passed through) → HTML; bodies that already are HTML
    stay as they are. cmark-gfm is C and ~7× faster than the pure-Python renderers; "unsafe"
    only means raw HTML is kept, which `sanitize_html` cleans afterwards."""
    if suffix in MARKDOWN_EXTENSIONS or not _looks_like_html(body):
        import cmarkgfm
        from cmarkgfm.cmark import Options

        return cmarkgfm.github_flavored_markdown_to_html(body, options=Options.CMARK_OPT_UNSAFE)
    return body


def _looks_like_html(body: str) -> bool:
    head = body.lstrip()[:200].lower()
    return head.startswith("<") and not head.startswith(("<http://", "<https://"))


# ---------------------------------------------------------------- the whole article


@dataclass(frozen=True, slots=True)
class ArticleContext:
    """What an article needs to know about its source and the site."""

    source: str
    zone: ZoneInfo
    categories: tuple[str, ...]  # added to every entry of the source
    aliases: dict[str, str]
    base_url: str
    # Tracking parameters for dedup's features, computed beside the parse in worker
    # processes (in parallel, and without dedup reading the content back); None: dedup off.
    dedup_patterns: tuple[str, ...] | None = None
    site: Site = field(default_factory=lambda: Site(PLAIN))
    link_keys: tuple[str, ...] = LINK_KEYS[PLAIN]  # front-matter keys of the original URL, in order
    image_keys: tuple[str, ...] = IMAGE_KEYS[PLAIN]
    drafts: bool = False  # publish drafts (`draft: true`, `published: false`)
    future: bool = False  # publish posts dated in the future now
    now: datetime | None = None  # what "the future" is measured from; None: never held back by date
    follow_symlinks: bool = False
    limits: Limits | None = None  # cuts applied at the boundary (`cleaning`); None: the defaults
    parse_seconds: float = 20.0  # wall-clock limit of one article's parse (a crafted file must not hold the run)


def parse_article(data: bytes, stamp: FileStamp, ctx: ArticleContext) -> Entry | Held:
    """One article file's bytes → an `Entry` (or `Held`: a draft, a post not due yet), or
    ArticleError saying why not."""
    try:
        return _parse(data, stamp, ctx)
    except DateError as e:
        raise ArticleError(str(e)) from None


def _title(meta: dict, body: str, suffix: str) -> tuple[str, str]:
    """(the title, the body without it when it came from the body's first heading): the front
    matter's, else a Markdown heading, else an HTML `<h1>`. ArticleError when there is none."""
    title = _text_field(meta, "title")
    if title is None:
        found = markdown_title(body) if suffix != ".html" else None
        if found:
            title, body = found
        else:
            h1 = html_title(body)
            title = summarize(h1, 200) if h1 else None
    if not title:
        raise ArticleError("no title: none in the front matter and no heading in the body")
    return title, body


def _local_date(meta: dict, stamp: FileStamp, ctx: ArticleContext):
    """The publication date in the site's zone: the front matter's, else the file name's."""
    from_name = date_from_filename(stamp.path, ctx.zone)
    try:
        local = local_date(meta.get("date", meta.get("published", meta.get("pubDate"))), ctx.zone)
    except DateError:
        if from_name is None:
            raise
        local = None  # a Jekyll post's file name carries its date, as Jekyll itself falls back to
    return local if local is not None else from_name


def _parse(data: bytes, stamp: FileStamp, ctx: ArticleContext) -> Entry | Held:
    suffix = PurePosixPath(stamp.path).suffix.lower()
    text = decode(data)
    head = html_head_metadata(text) if ctx.site.header_metadata and suffix in (".html", ".htm") else None
    try:
        meta, body = head or split_front_matter(text, ctx.site.header_metadata)
    except FrontMatterError as e:
        raise ArticleError(str(e)) from None
    body, link_from_body = clean_body(body)

    title, body = _title(meta, body, suffix)
    site_zone = _zone(ctx.site.timezone) or ctx.zone
    local = _local_date(meta, stamp, ctx)
    published = local.astimezone(UTC) if local else None
    updated = parse_date(meta.get("updated", meta.get("lastmod", meta.get("modified"))), ctx.zone)

    held = _held(meta, stamp, published, ctx)
    if held is not None:
        return held

    link = _first_url(meta, ctx.link_keys) or link_from_body
    if link and not is_url(link):
        link = None
    if link is None and ctx.site.url is not None:
        link = _site_link(meta, stamp, title, local, site_zone, ctx)
    base = link or ctx.base_url
    html = sanitize_html(render_body(body, suffix), base)

    image = _first_url(meta, ctx.image_keys)
    image = absolute_url(image, base) if image else None
    summary = _text_field(meta, "summary", "description", "excerpt")
    outlet = _text_field(meta, "source", "outlet")
    if outlet is None:
        m = _OUTLET.search(body) if "文章来源" in body else None
        outlet = m.group(1).strip() if m else None

    jekyll = ctx.site.generator == JEKYLL
    names = _list_field(meta, "categories", "category", spaces=jekyll) + list(ctx.categories)
    categories = tuple(dict.fromkeys(ctx.aliases.get(n, n) for n in (" ".join(c.split()) for c in names)))
    return Entry(
        source=ctx.source,
        key=stamp.path,
        title=" ".join(title.split()),
        content_html=html,
        summary=summarize(summary) if summary else summarize(_OUTLET.sub("", html)),
        link=link,
        published=published,
        updated=updated if updated and (published is None or updated > published) else None,
        authors=_authors(meta),
        categories=categories,
        tags=tuple(_list_field(meta, "tags", "tag", "keywords", spaces=jekyll)),
        outlet=outlet,
        image=image if image and is_url(image) else None,
        stamp=stamp,
    )


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None


def _held(meta: dict, stamp: FileStamp, published: datetime | None, ctx: ArticleContext) -> Held | None:
    """Why this article is not published (yet), or None: drafts and, with a clock, future posts."""
    where = stamp.path
    if not ctx.drafts:
        if classify(ctx.site, stamp.path)[0] == DRAFT:
            return Held(ctx.source, where, "draft (in a drafts folder)")
        if _flag(meta, "draft") is True:
            return Held(ctx.source, where, "draft (draft: true)")
        if _flag(meta, "published") is False:
            return Held(ctx.source, where, "draft (published: false)")
    if ctx.site.generator == HUGO and not_rendered(meta):
        return Held(ctx.source, where, "never rendered (headless or build.render: never)")
    if meta.get("hidden") is True and ctx.site.header_metadata:
        return Held(ctx.source, where, "hidden (Status: hidden)")
    if ctx.now is not None and not ctx.future:
        # Hugo's publishDate says when a page goes out, whatever its date.
        try:
            due = parse_date(meta.get("publishDate", meta.get("publishdate")), ctx.zone) or published
        except DateError:
            due = published
        if due is not None and due > ctx.now:
            return Held(ctx.source, where, f"dated in the future ({due.isoformat()})", until=due)
    return None


def _site_link(meta: dict, stamp: FileStamp, title: str, local, site_zone: ZoneInfo, ctx: ArticleContext):
    """The post's own page on its site (see permalinks.py), or None."""
    from .permalinks import Post, UnknownPlaceholder, permalink

    if local is not None and not _has_offset(meta) and site_zone is not ctx.zone:
        local = local.replace(tzinfo=site_zone)
    own = _text_field(meta, "url" if ctx.site.generator == "hugo" else "permalink")
    post = Post(
        path=stamp.path,
        title=title,
        date=local,
        slug=_text_field(meta, "slug"),
        categories=tuple(_list_field(meta, "categories", "category", spaces=ctx.site.generator == JEKYLL)),
        own_permalink=own if own and not is_url(own) else None,
        lang=_text_field(meta, "lang"),
    )
    try:
        return permalink(ctx.site, post)
    except UnknownPlaceholder:
        return None  # the source warned once at the start of the scan


def _has_offset(meta: dict) -> bool:
    value = meta.get("date", meta.get("published", meta.get("pubDate")))
    return (isinstance(value, datetime) and value.tzinfo is not None) or (
        isinstance(value, str) and bool(re.search(r"(?:[+-]\d\d:?\d\d|Z|GMT|UTC)\s*$", value.strip()[:100]))
    )


def read_article(root: Path, stamp: FileStamp, ctx: ArticleContext, max_bytes: int) -> Entry | Held | Rejected:
    """Read and parse one file under `root`; a problem becomes a `Rejected` naming the path."""
    from .walk import read_regular_file

    where = str(root / stamp.path)
    try:
        if stamp.size > max_bytes:
            raise ArticleError(f"file is {stamp.size:,} bytes, over the {max_bytes:,}-byte limit")
        data = read_regular_file(root / stamp.path, max_bytes, ctx.follow_symlinks)
        with time_limit(ctx.parse_seconds):
            found = parse_article(data, stamp, ctx)
        if isinstance(found, Held):
            return found
        # Front matter can carry what XML cannot (control characters) or an attacker's sizes.
        cleaned = clean_entry(found, ctx.limits or Limits(), keep=ctx.categories)
        return replace(cleaned, where=where) if isinstance(cleaned, Rejected) else cleaned
    except (OSError, ArticleError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return Rejected(ctx.source, where, reason)
    except RecursionError:
        return Rejected(ctx.source, where, "nested too deeply to read")
    except TimeLimitExceeded as e:
        return Rejected(ctx.source, where, f"parsing {e}")
