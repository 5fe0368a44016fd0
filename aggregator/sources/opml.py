"""OPML subscription lists: read (outline folders → categories), write, and expand into sources.

A `[[sources]]` entry may be `opml = "file.opml"`: every feed outline in the file becomes a
remote source. `aggregator sources import-opml` appends the feeds of an OPML file to the config
as `[[sources]]` entries; `export-opml` writes every remote source back out, folder = first
category, so an export imported again gives the same subscriptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ConfigError, Settings, SourceSettings
from ..text import is_url

if TYPE_CHECKING:
    from lxml import etree


class OpmlError(ValueError):
    """The document is not usable OPML; the message says why."""


@dataclass(frozen=True, slots=True)
class Subscription:
    title: str
    url: str
    categories: tuple[str, ...] = ()
    html_url: str | None = None


def _parser() -> etree.XMLParser:
    from lxml import etree

    # No DTD loading, no entity expansion, no network: an OPML file is data, not a program.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=False)


def read_opml(data: bytes) -> list[Subscription]:
    """Every outline with an `xmlUrl`, in document order; enclosing outlines without one are folders."""
    if b"<!ENTITY" in data:
        # libxml2 expands internal entities even in attributes; OPML never needs them, so an
        # entity declaration is refused outright rather than trusted to amplification limits.
        raise OpmlError("entity declarations are not allowed in an OPML file")
    # lxml is imported here, not with the module: a fetch of sources configured one by one
    # must not pay for it.
    from lxml import etree

    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        raise OpmlError(f"not well-formed XML: {e}") from None
    if etree.QName(root).localname.lower() != "opml":
        raise OpmlError(f"root element is <{etree.QName(root).localname}>, not <opml>")
    body = next((c for c in root if isinstance(c.tag, str) and etree.QName(c).localname == "body"), None)
    if body is None:
        raise OpmlError("no <body> element")
    out: list[Subscription] = []

    def walk(node, folders: tuple[str, ...]) -> None:
        for o in node:
            if not isinstance(o.tag, str) or etree.QName(o).localname != "outline":
                continue
            text = " ".join((o.get("title") or o.get("text") or "").split())
            url = (o.get("xmlUrl") or o.get("xmlurl") or "").strip()
            if url:
                cats = [folders[-1]] if folders else []
                for c in (o.get("category") or "").split(","):
                    c = c.strip().strip("/").rsplit("/", 1)[-1].strip()
                    if c:
                        cats.append(c)
                html = (o.get("htmlUrl") or "").strip() or None
                out.append(Subscription(text or url, url, tuple(dict.fromkeys(cats)), html))
            else:
                walk(o, (*folders, text) if text else folders)

    walk(body, ())
    return out


def write_opml(subs: Sequence[Subscription], title: str, now: datetime | None = None) -> bytes:
    """OPML 2.0: one folder per first category, feeds without a category at the top level."""
    from lxml import etree

    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = title
    etree.SubElement(head, "dateCreated").text = format_datetime(now or datetime.now(UTC).replace(microsecond=0))
    body = etree.SubElement(root, "body")
    folders: dict[str, etree._Element] = {}
    for s in subs:
        parent = body
        if s.categories:
            folder = s.categories[0]
            if folder not in folders:
                folders[folder] = etree.SubElement(body, "outline", text=folder, title=folder)
            parent = folders[folder]
        attrs = {"type": "rss", "text": s.title, "title": s.title, "xmlUrl": s.url}
        if s.html_url:
            attrs["htmlUrl"] = s.html_url
        if len(s.categories) > 1:
            attrs["category"] = ",".join(s.categories[1:])
        etree.SubElement(parent, "outline", attrs)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)


def read_opml_file(path: Path) -> list[Subscription]:
    try:
        return read_opml(path.read_bytes())
    except OSError as e:
        raise OpmlError(e.strerror or str(e)) from None


def remote_sources(settings: Settings) -> list[SourceSettings]:
    """Every remote source of the config: `url` entries, and one per feed of each `opml` file
    (named by the outline's title, made unique; categories = the outline's folder plus the
    entry's own). Raises ConfigError naming the key when an OPML file is unusable."""
    taken = {s.name for s in settings.sources}
    out: list[SourceSettings] = []
    for i, s in enumerate(settings.sources):
        if s.url is not None:
            out.append(s)
        elif s.opml is not None:
            try:
                subs = read_opml_file(s.opml)
            except OpmlError as e:
                raise ConfigError(f"{settings.config_path}: sources[{i}].opml: {s.opml}: {e}") from None
            seen_urls: set[str] = set()
            for sub in subs:
                if sub.url in seen_urls or not is_url(sub.url):
                    continue
                seen_urls.add(sub.url)
                name = _unique(sub.title, taken)
                taken.add(name)
                cats = list(dict.fromkeys([*sub.categories, *s.categories]))
                out.append(
                    SourceSettings(
                        name=name,
                        url=sub.url,
                        categories=cats,
                        enabled=s.enabled,
                        every=s.every,
                        timeout=s.timeout,
                        user_agent=s.user_agent,
                        timezone=s.timezone,
                        allow_private=s.allow_private,
                        feed_categories=s.feed_categories,
                        full_text=s.full_text,
                        limits=s.limits,
                        # the OPML entry's HTTP options apply to each of its feeds
                        **{k: getattr(s, k) for k in HTTP_OPTIONS if k in s.model_fields_set},
                    )
                )
    return out


HTTP_OPTIONS = ("headers", "cookies", "auth", "auth_env", "proxy", "verify_tls", "prefer")


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"


def private_warnings(subs: Iterable[Subscription], allowed: bool = False) -> list[str]:
    """One warning per subscription whose URL names a private address or this machine: it will
    not be fetched unless allowed (`allow_private`), and an OPML file from elsewhere should not
    be able to point the fetcher inside the network unnoticed. Names are not resolved here."""
    from .netpolicy import url_reason

    out = []
    for sub in subs:
        why = url_reason(sub.url)
        if why is not None and is_url(sub.url):
            tail = "allowed by [fetch] allow_private" if allowed else "refused unless allow_private = true"
            out.append(f"{sub.url}: {why}, not a public address ({tail})")
    return out


def subscriptions(sources: Iterable[SourceSettings]) -> list[Subscription]:
    return [Subscription(s.name, s.url, tuple(s.categories)) for s in sources if s.url]


def toml_blocks(subs: Iterable[Subscription], settings: Settings) -> tuple[str, int, int]:
    """`[[sources]]` entries for the feeds not yet subscribed: (TOML text, added, skipped)."""
    known = {s.url for s in remote_sources(settings)}
    taken = {s.name for s in settings.sources} | {s.name for s in remote_sources(settings)}
    parts: list[str] = []
    skipped = 0
    for sub in subs:
        if sub.url in known or not is_url(sub.url):
            skipped += 1
            continue
        known.add(sub.url)
        name = _unique(sub.title, taken)
        taken.add(name)
        # JSON string syntax is valid TOML basic-string syntax.
        lines = ["[[sources]]", f"name = {json.dumps(name, ensure_ascii=False)}", f"url = {json.dumps(sub.url)}"]
        if sub.categories:
            lines.append(f"categories = {json.dumps(list(sub.categories), ensure_ascii=False)}")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts), len(parts), skipped
