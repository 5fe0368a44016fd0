"""Article files → `Entry`.

Handles the dialects the example site produces: Jekyll and Hexo front matter (YAML between
`---`, TOML between `+++`, Hexo's front matter without an opening fence), UTF-8 with or
without BOM and GB18030/GBK files, HTML or Markdown bodies, the trailing `<http…>` line
that carries the original URL, and site boilerplate (back-links, stock-quote links).

Everything here is a pure function of bytes and settings except `scan`, which walks a folder.
"""

from __future__ import annotations

import email.utils
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo

import yaml

from ..model import Entry, FileStamp, Rejected
from ..text import absolute_url, is_url, sanitize_html, summarize

EXTENSIONS = frozenset({".md", ".markdown", ".html", ".htm", ".txt"})
MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown"})


class ArticleError(ValueError):
    """This file cannot become an entry; the message says why."""


# ---------------------------------------------------------------- scanning


def scan(root: Path) -> Iterator[FileStamp]:
    """Every article file under `root`, recursively, in a stable order; hidden files skipped."""
    stack = [root]
    found: list[FileStamp] = []
    prefix = os.path.join(str(root), "")  # what every path found starts with
    while stack:
        folder = stack.pop()
        try:
            items = list(os.scandir(folder))
        except OSError:
            continue
        for item in items:
            if item.name.startswith((".", "_", "~")) or item.name.endswith("~"):
                continue
            if item.is_dir(follow_symlinks=True):
                stack.append(Path(item.path))
            elif os.path.splitext(item.name)[1].lower() in EXTENSIONS:
                try:
                    st = item.stat()
                except OSError:
                    continue
                # Cut off the prefix: Path.relative_to for every file cost more than the stat.
                rel = item.path[len(prefix) :] if item.path.startswith(prefix) else os.path.relpath(item.path, root)
                if os.sep != "/":
                    rel = rel.replace(os.sep, "/")
                found.append(FileStamp(rel, st.st_mtime_ns, st.st_size))
    found.sort(key=lambda s: s.path)
    yield from found


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


# ---------------------------------------------------------------- front matter

_FENCED = re.compile(r"\A(---|\+\+\+)[ \t]*\n(.*?)\n\1[ \t]*(?:\n|\Z)", re.S)
_HEXO_OPEN = re.compile(r"\A(.*?)\n---[ \t]*(?:\n|\Z)", re.S)


def _load_yaml(text: str) -> object:
    return yaml.load(text, Loader=yaml.CSafeLoader)


def split_front_matter(text: str) -> tuple[dict, str]:
    """Text → (metadata, body). No front matter at all gives an empty mapping."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    stripped = text.lstrip()
    m = _FENCED.match(stripped)
    if m:
        fence, block = m.group(1), m.group(2)
        try:
            meta = tomllib.loads(block) if fence == "+++" else _load_yaml(block)
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
            kind = "TOML" if fence == "+++" else "YAML"
            raise ArticleError(f"broken {kind} front matter: {_one_line(e)}") from None
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise ArticleError(f"front matter is a {type(meta).__name__}, not a mapping of keys")
        return meta, stripped[m.end() :]
    # Hexo accepts front matter with only the closing fence.
    m = _HEXO_OPEN.match(stripped)
    if m and re.match(r"^[A-Za-z_][\w-]*:", m.group(1)):
        try:
            meta = _load_yaml(m.group(1))
        except yaml.YAMLError:
            meta = None
        if isinstance(meta, dict) and "title" in meta:
            return meta, stripped[m.end() :]
    return {}, stripped


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


# ---------------------------------------------------------------- field readers


def parse_date(value: object, zone: ZoneInfo) -> datetime | None:
    """A front-matter date → UTC-aware datetime; naive values are in `zone`.

    Accepts what YAML already parsed (datetime, date), RFC 822 (`Fri, 02 Sep 2022 20:08:00 GMT`),
    ISO 8601 with or without offset, `2022-02-16 20:47:24 +0800`, and date-only values.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        dt = _parse_date_text(value.strip())
    else:
        raise ArticleError(f"date: expected a date, got {type(value).__name__} {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone)
    return dt.astimezone(UTC)


_RFC822 = re.compile(r"^(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{4}\s")


def _parse_date_text(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    if _RFC822.match(text):
        try:
            return email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            pass
    from dateutil import parser

    try:
        return parser.parse(text)
    except (ValueError, OverflowError):
        raise ArticleError(f"date: cannot understand {text!r}") from None


def _text_field(meta: dict, *keys: str) -> str | None:
    for key in keys:
        value = meta.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ArticleError(f"{key}: expected text, got {type(value).__name__}")
        return str(value).strip()
    return None


def _list_field(meta: dict, *keys: str) -> list[str]:
    """A string (`a, b`) or a list (nested lists, as Hexo writes hierarchies, are flattened)."""
    out: list[str] = []
    for key in keys:
        value = meta.get(key)
        if value is None:
            continue
        stack = [value]
        while stack:
            v = stack.pop(0)
            if isinstance(v, list):
                stack[:0] = v
            elif isinstance(v, str):
                out.extend(p.strip() for p in v.split(",") if p.strip())
            elif isinstance(v, int | float) and not isinstance(v, bool):
                out.append(str(v))
            elif v is not None:
                raise ArticleError(f"{key}: expected text or a list of text, got {type(v).__name__}")
    return list(dict.fromkeys(out))


def _authors(meta: dict) -> tuple[str, ...]:
    value = meta.get("author", meta.get("authors"))
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("name")
        if isinstance(item, str) and item.strip():
            names.append(item.strip())
        elif item is not None:
            raise ArticleError(f"author: expected a name, got {type(item).__name__}")
    return tuple(names)


# ---------------------------------------------------------------- body clean-up

_NAV_LINE = re.compile(r"^\s*(?:\[返回[^\]]*\]\([^)]*\)\s*[|｜·/]?\s*)+$")
_URL_LINE = re.compile(r"^\s*<(https?://[^<>\s]+)>\s*$")
_HOT_WORD = re.compile(r"<a\b[^>]*\bclass\s*=\s*[\"']?trsHotWords\b[^>]*>(.*?)</a\s*>", re.S | re.I)
_OUTLET = re.compile(r"[（(]\s*文章来源\s*[：:]\s*([^）)<]+?)\s*[）)]")
_MD_TITLE = re.compile(r"\A\s*#\s+(.+?)\s*#*\s*(?:\n|\Z)")
_HTML_TITLE = re.compile(r"<h1\b[^>]*>(.*?)</h1>", re.S | re.I)


def clean_body(body: str) -> tuple[str, str | None]:
    """Drop navigation lines and take the trailing `<http…>` line as the original URL."""
    lines = [ln for ln in body.split("\n") if not _NAV_LINE.match(ln)]
    link = None
    while lines and not lines[-1].strip():
        lines.pop()
    if lines:
        m = _URL_LINE.match(lines[-1])
        if m:
            link = m.group(1)
            lines.pop()
    body = "\n".join(lines).strip()
    return _HOT_WORD.sub(r"\1", body), link


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


def parse_article(data: bytes, stamp: FileStamp, ctx: ArticleContext) -> Entry:
    """One article file's bytes → an `Entry`, or ArticleError saying why not."""
    meta, body = split_front_matter(decode(data))
    body, link_from_body = clean_body(body)
    suffix = PurePosixPath(stamp.path).suffix.lower()

    title = _text_field(meta, "title")
    if title is None:
        m = _MD_TITLE.match(body) if suffix != ".html" else None
        if m:
            title, body = m.group(1), body[m.end() :]
        else:
            h1 = _HTML_TITLE.search(body)
            title = summarize(h1.group(1), 200) if h1 else None
    if not title:
        raise ArticleError("no title: none in the front matter and no heading in the body")

    link = _text_field(meta, "link", "url", "original", "source_url") or link_from_body
    if link and not is_url(link):
        link = None
    base = link or ctx.base_url
    html = sanitize_html(render_body(body, suffix), base)

    published = parse_date(meta.get("date", meta.get("published", meta.get("pubDate"))), ctx.zone)
    if published is None:
        published = _date_from_filename(stamp.path, ctx.zone)
    updated = parse_date(meta.get("updated", meta.get("lastmod", meta.get("modified"))), ctx.zone)

    image = _text_field(meta, "headimg", "thumbnail", "image", "cover")
    summary = _text_field(meta, "summary", "description", "excerpt")
    outlet = _text_field(meta, "source", "outlet")
    if outlet is None:
        m = _OUTLET.search(body)
        outlet = m.group(1).strip() if m else None

    names = _list_field(meta, "categories", "category") + list(ctx.categories)
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
        tags=tuple(_list_field(meta, "tags", "tag", "keywords")),
        outlet=outlet,
        image=absolute_url(image, base) if image else None,
        stamp=stamp,
    )


def read_article(root: Path, stamp: FileStamp, ctx: ArticleContext, max_bytes: int) -> Entry | Rejected:
    """Read and parse one file under `root`; a problem becomes a `Rejected` naming the path."""
    where = str(root / stamp.path)
    try:
        if stamp.size > max_bytes:
            raise ArticleError(f"file is {stamp.size:,} bytes, over the {max_bytes:,}-byte limit")
        return parse_article((root / stamp.path).read_bytes(), stamp, ctx)
    except (OSError, ArticleError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return Rejected(ctx.source, where, reason)


def _read_chunk(root: Path, stamps: list[FileStamp], ctx: ArticleContext, max_bytes: int) -> list[Entry | Rejected]:
    """A worker's share: parse, and compute dedup's features while the entry is at hand."""
    out = [read_article(root, s, ctx, max_bytes) for s in stamps]
    if ctx.dedup_patterns is None:
        return out
    from dataclasses import replace

    from ..dedup import features

    return [
        replace(e, features=features(e.link, e.content_html, ctx.dedup_patterns)) if isinstance(e, Entry) else e
        for e in out
    ]


PARALLEL_MIN = 400  # below this, starting worker processes costs more than it saves
_CHUNK = 200
# Chunks queued per worker: enough that they parse on while the caller stores a transaction's
# worth of entries (pipeline.INGEST_BATCH, ten chunks), few enough to keep memory flat.
IN_FLIGHT = 8


def read_articles(
    root: Path, stamps: list[FileStamp], ctx: ArticleContext, max_bytes: int
) -> Iterator[Entry | Rejected]:
    """`read_article` for many files, in order. Large batches (a cold start) are parsed in
    worker processes, one per core, with a bounded number of chunks in flight so memory
    stays flat however big the folder is."""
    from ..workers import cpu_workers, process_pool

    workers = cpu_workers()
    if len(stamps) < PARALLEL_MIN or workers < 2:
        for s in stamps:
            yield read_article(root, s, ctx, max_bytes)
        return
    from collections import deque

    chunks = iter([stamps[i : i + _CHUNK] for i in range(0, len(stamps), _CHUNK)])
    with process_pool(workers, [__name__]) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.submit(_read_chunk, root, chunk, ctx, max_bytes))
            if len(pending) >= workers * IN_FLIGHT:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


_FILENAME_DATE = re.compile(r"(?:^|/)(\d{4})-(\d{2})-(\d{2})-[^/]*$")


def _date_from_filename(path: str, zone: ZoneInfo) -> datetime | None:
    """Jekyll names posts `2022-02-16-title.md`."""
    m = _FILENAME_DATE.search(path)
    if not m:
        return None
    try:
        return datetime(*map(int, m.groups()), tzinfo=zone).astimezone(UTC)
    except ValueError:
        return None
