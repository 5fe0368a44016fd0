"""Splitting an article's text into its metadata and its body.

Dialects: YAML between `---` lines (Jekyll, Hexo, Hugo), TOML between `+++` lines (Hugo),
Hexo's YAML with only the closing `---`, and Pelican's `Key: value` header ended by a blank
line. Everything here is linear in the size of the text: the fences are found line by line,
not by a regular expression that could backtrack, and YAML aliases (which let a few hundred
bytes describe millions of list items) are refused past a handful.
"""

from __future__ import annotations

import re

import yaml

MAX_ALIASES = 16  # real front matter has none; an alias bomb needs many
MAX_META_LINES = 200  # a Pelican header longer than this is a body that happens to start like one


class FrontMatterError(ValueError):
    """The metadata block is there but cannot be read; the message says why."""


def load_yaml(text: str) -> object:
    """YAML → Python objects with the C safe loader, refusing alias bombs."""
    if "*" in text:
        aliases = 0
        try:
            for token in yaml.scan(text, Loader=yaml.CSafeLoader):
                if isinstance(token, yaml.AliasToken):
                    aliases += 1
                    if aliases > MAX_ALIASES:
                        raise FrontMatterError(f"more than {MAX_ALIASES} YAML aliases (refused: an alias bomb?)")
        except yaml.YAMLError as e:
            raise FrontMatterError(f"broken YAML front matter: {_one_line(e)}") from None
    try:
        return yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as e:
        raise FrontMatterError(f"broken YAML front matter: {_one_line(e)}") from None
    except RecursionError:
        raise FrontMatterError("YAML front matter nested too deeply") from None


def _load_toml(text: str) -> dict:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FrontMatterError(f"broken TOML front matter: {_one_line(e)}") from None
    except RecursionError:
        raise FrontMatterError("TOML front matter nested too deeply") from None


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


def _closing(text: str, fence: str, start: int) -> tuple[int, int] | None:
    """(start, end) of the first line from `start` on that is `fence` plus blanks, end past its newline."""
    pos = start
    while pos <= len(text):
        nl = text.find("\n", pos)
        line_end = len(text) if nl < 0 else nl
        if text.startswith(fence, pos) and not text[pos + len(fence) : line_end].strip(" \t"):
            return pos, (line_end if nl < 0 else nl + 1)
        if nl < 0:
            return None
        pos = nl + 1
    return None


_KEY = re.compile(r"[A-Za-z_][\w-]*:")
_PELICAN_LINE = re.compile(r"([A-Za-z][\w-]*)[ \t]*:[ \t]*+(.*)")


def split_front_matter(text: str, header_metadata: bool = False) -> tuple[dict, str]:
    """Text → (metadata, body). No metadata at all gives an empty mapping.

    `header_metadata`: read a Pelican `Key: value` header (also recognized anywhere when it
    starts with `Title:`)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    stripped = text.lstrip()
    first_end = stripped.find("\n")
    first = (stripped if first_end < 0 else stripped[:first_end]).rstrip(" \t")
    if first in ("---", "+++"):
        found = _closing(stripped, first, first_end + 1) if first_end >= 0 else None
        if found is not None:
            block = stripped[first_end + 1 : found[0]].rstrip("\n")
            meta = _load_toml(block) if first == "+++" else load_yaml(block)
            if meta is None:
                meta = {}
            if not isinstance(meta, dict):
                raise FrontMatterError(f"front matter is a {type(meta).__name__}, not a mapping of keys")
            return meta, stripped[found[1] :]
    # Hexo accepts front matter with only the closing fence.
    if _KEY.match(stripped):
        found = _closing(stripped, "---", 0)
        if found is not None and found[0] > 0:
            try:
                meta = load_yaml(stripped[: found[0]])
            except FrontMatterError:
                meta = None
            if isinstance(meta, dict) and "title" in meta:
                return meta, stripped[found[1] :]
        if header_metadata or first.lower().startswith("title:"):
            header = _pelican_header(stripped)
            if header is not None:
                return header
    return {}, stripped


def _pelican_header(text: str) -> tuple[dict, str] | None:
    """Pelican's Markdown metadata: `Key: value` lines (indented lines continue the value), then
    a blank line. Keys are case-insensitive; None when the block is not such a header."""
    meta: dict[str, str] = {}
    last = None
    pos = 0
    for _ in range(MAX_META_LINES):
        nl = text.find("\n", pos)
        line = text[pos:] if nl < 0 else text[pos:nl]
        pos = len(text) if nl < 0 else nl + 1
        if not line.strip():
            break
        if line[:1] in (" ", "\t") and last is not None:
            meta[last] += " " + line.strip()
            continue
        m = _PELICAN_LINE.fullmatch(line.rstrip())
        if m is None:
            return None
        last = m.group(1).lower()
        meta[last] = m.group(2).strip()
        if nl < 0:
            break
    else:
        return None
    if "title" not in meta:
        return None
    return _pelican_values(meta), text[pos:]


def _pelican_values(meta: dict[str, str]) -> dict:
    """Pelican's names → the ones the article reader knows; lists are comma-separated."""
    out: dict = dict(meta)
    if "category" in meta:
        out["categories"] = [meta["category"]] if meta["category"] else []
        del out["category"]
    if "authors" in meta or "author" in meta:
        raw = meta.get("authors") or meta.get("author") or ""
        sep = ";" if ";" in raw else ","
        out["author"] = [a.strip() for a in raw.split(sep) if a.strip()]
        out.pop("authors", None)
    if "modified" in meta:
        out["updated"] = meta["modified"]
    if meta.get("status", "").lower() == "draft":
        out["draft"] = True
    elif meta.get("status", "").lower() == "hidden":
        out["hidden"] = True
    return out


def html_head_metadata(text: str) -> tuple[dict, str] | None:
    """Pelican's HTML articles: `<title>` and `<meta name=… content=…>` in the head are the
    metadata, the `<body>` is the article. None when the text has no head to read."""
    if "<head" not in text[:5000].lower():
        return None
    import lxml.html
    from lxml import etree

    try:
        doc = lxml.html.document_fromstring(text)
    except (etree.ParserError, ValueError):
        return None
    meta: dict[str, str] = {}
    title = doc.findtext(".//head/title")
    if title and title.strip():
        meta["title"] = " ".join(title.split())
    for tag in doc.iterfind(".//head/meta"):
        name, content = tag.get("name"), tag.get("content")
        if name and content is not None and name.lower() not in meta:
            meta[name.lower()] = content.strip()
    body = doc.find("body")
    inner = "" if body is None else (body.text or "") + "".join(
        etree.tostring(child, encoding="unicode", method="html") for child in body
    )
    return (_pelican_values(meta), inner) if "title" in meta else None
