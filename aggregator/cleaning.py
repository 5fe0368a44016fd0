"""Clean text at the boundary: every `Entry` a source produces passes `clean_entry` before it is stored.

Two kinds of damage are undone here, once, so nothing downstream has to care:

- characters XML 1.0 cannot carry (C0 controls other than tab, CR and LF; U+FFFE, U+FFFF; lone
  surrogates, which also cannot be encoded as UTF-8, so the database refuses them). One of these
  in a stored title made every later build fail ("All strings must be XML compatible");
- sizes a hostile or broken feed chooses (thousands of categories, a megabyte title, a URL of
  100 KB): cut to the configured `Limits`, each cut reported.

Links, images and enclosures keep only http(s) URLs: a `javascript:` or `data:` image would be
published in `<img src>` and media:thumbnail.

Pure: `clean` returns the entry and what was cut; `clean_entry` also logs the cuts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

from .model import Enclosure, Entry, Rejected
from .text import is_url, sanitize_html

log = logging.getLogger(__name__)

# One character class, so removal is a single linear scan (no backtracking is possible).
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one entry (or one fetch) may make us store. `[limits]` in the config, per-source overrides."""

    title_chars: int = 1000
    author_chars: int = 200
    authors_per_entry: int = 20
    url_chars: int = 2048
    summary_chars: int = 4000
    content_bytes: int = 2_000_000
    categories_per_entry: int = 20  # also the cap on tags
    category_chars: int = 64
    new_categories_per_day: int = 100  # categories a source may create in 24 h (pipeline enforces it)
    entries_per_fetch: int = 1000  # items of one feed document kept (feeds.parse_feed enforces it)


@dataclass(frozen=True, slots=True)
class Cleaned:
    entry: Entry
    cuts: tuple[str, ...] = ()  # what was removed or shortened, for the operator


# ---------------------------------------------------------------- strings


def xml_text(value: str) -> str:
    """`value` without the characters XML 1.0 cannot carry (see the module docstring)."""
    return _ILLEGAL.sub("", value) if _ILLEGAL.search(value) else value


def has_illegal(value: str) -> bool:
    return _ILLEGAL.search(value) is not None


def cut(value: str, limit: int) -> str:
    """At most `limit` characters, an ellipsis marking a cut (so a cut value is stable when cut again)."""
    if len(value) <= limit:
        return value
    return value[: max(0, limit - 1)].rstrip() + ELLIPSIS if limit > 1 else value[:limit]


def safe_url(value: str | None, limit: int) -> str | None:
    """An http(s) URL of at most `limit` characters, else None."""
    if not value:
        return None
    value = xml_text(value).strip()
    return value if len(value) <= limit and is_url(value) else None


# ---------------------------------------------------------------- entries


@dataclass(slots=True)
class _Notes:
    source: str
    cuts: list[str] = field(default_factory=list)
    illegal: set[str] = field(default_factory=set)

    def text(self, name: str, value: str) -> str:
        clean = xml_text(value)
        if clean is not value:
            self.illegal.add(name)
        return clean


def _dropped(terms: Sequence[str], limits: Limits, n: _Notes) -> tuple[str, ...]:
    """The feed terms map mode dropped, only remembered for `aggregator categories`: bounded
    like categories, and a cut reported like theirs (a flood of terms is worth a warning)."""
    names = tuple(dict.fromkeys(xml_text(d)[: limits.category_chars] for d in terms))
    if len(names) > limits.categories_per_entry:
        n.cuts.append(f"{len(names):,} unpublished feed category names cut to {limits.categories_per_entry} "
                      "(limit per entry)")  # fmt: skip
    return names[: limits.categories_per_entry]


def clean(entry: Entry, limits: Limits, keep: Collection[str] = ()) -> Cleaned:
    """The entry with XML-legal text within `limits`; `keep`: category names never cut (the
    source's configured ones). Raises ValueError when the entry cannot be stored at all."""
    if _SURROGATE.search(entry.key) or _SURROGATE.search(entry.source):
        # The key is the entry's identity: silently changing it would merge or split entries.
        raise ValueError("its key is not valid Unicode (lone surrogate)")
    n = _Notes(entry.source)
    title = n.text("title", entry.title)
    if len(title) > limits.title_chars:
        n.cuts.append(f"title cut from {len(title):,} to {limits.title_chars:,} characters")
        title = cut(title, limits.title_chars)
    summary = n.text("summary", entry.summary)
    if len(summary) > limits.summary_chars:
        n.cuts.append(f"summary cut from {len(summary):,} to {limits.summary_chars:,} characters")
        summary = cut(summary, limits.summary_chars)
    content = _content(n.text("content", entry.content_html), limits.content_bytes, n)
    authors = _names(entry.authors, "author", limits.author_chars, limits.authors_per_entry, (), n)
    categories = _names(entry.categories, "category", limits.category_chars, limits.categories_per_entry, keep, n)
    tags = _names(entry.tags, "tag", limits.category_chars, limits.categories_per_entry, (), n)
    outlet = n.text("outlet", entry.outlet) if entry.outlet else entry.outlet
    if outlet and len(outlet) > limits.author_chars:
        n.cuts.append(f"outlet cut from {len(outlet):,} to {limits.author_chars:,} characters")
        outlet = cut(outlet, limits.author_chars)
    link = _url(entry.link, "link", limits.url_chars, n)
    image = _url(entry.image, "image", limits.url_chars, n)
    enclosure = entry.enclosure
    if enclosure is not None:
        url = _url(enclosure.url, "enclosure", limits.url_chars, n)
        kind = n.text("enclosure type", enclosure.type)[:200] or "application/octet-stream"
        enclosure = Enclosure(url, kind, enclosure.length) if url else None
    if n.illegal:
        n.cuts.insert(0, "removed characters XML cannot carry from " + ", ".join(sorted(n.illegal)))
    new = Entry(
        source=entry.source,
        key=entry.key,
        title=title,
        content_html=content,
        summary=summary,
        link=link,
        published=entry.published,
        updated=entry.updated,
        authors=authors,
        categories=categories,
        tags=tags,
        outlet=outlet or None,
        image=image,
        enclosure=enclosure,
        stamp=entry.stamp,
        features=entry.features,
        dropped=_dropped(entry.dropped, limits, n),
    )
    if new == entry and new.dropped == entry.dropped:  # `dropped` is left out of ==
        return Cleaned(entry)
    # Features computed beside the parse describe the text before cleaning: dedup recomputes them.
    return Cleaned(replace(new, features=None), tuple(n.cuts))


def clean_entry(entry: Entry, limits: Limits, keep: Collection[str] = ()) -> Entry | Rejected:
    """`clean`, for the sources: the cleaned entry (every cut logged as a warning naming the
    source and the entry), or a Rejected naming the source and the reason when it cannot be
    stored. Never raises: one bad entry must not fail the fetch or ingest of the others."""
    where = entry.link if isinstance(entry.link, str) and entry.link else entry.key
    try:
        done = clean(entry, limits, keep)
    except Exception as e:  # any failure is this entry's, not the run's
        return Rejected(entry.source, _printable(where), f"{e.__class__.__name__}: {e}" if str(e) else repr(e))
    for note in done.cuts:
        log.warning("source=%s %s: %s", entry.source, _printable(where), note)
    return done.entry


def _printable(value: str) -> str:
    return xml_text(value)[:300]


def _names(
    values: tuple[str, ...], what: str, chars: int, count: int, keep: Collection[str], n: _Notes
) -> tuple[str, ...]:
    """Names cleaned, empty and over-long ones dropped, duplicates merged, at most `count` of
    them besides the ones in `keep` (which stay whatever the limits)."""
    out: list[str] = []
    too_long = 0
    for v in values:
        v = n.text(what, v).strip() if isinstance(v, str) else ""
        if not v:
            continue
        if len(v) > chars and v not in keep:
            too_long += 1
            continue
        out.append(v)
    out = list(dict.fromkeys(out))
    if too_long:
        n.cuts.append(f"{too_long} {what} name(s) longer than {chars} characters dropped")
    others = [v for v in out if v not in keep]
    if len(others) > count:
        allowed = set(others[:count])
        n.cuts.append(f"{len(others):,} {what} names cut to {count} (limit per entry)")
        out = [v for v in out if v in keep or v in allowed]
    return tuple(out)


def _url(value: str | None, what: str, limit: int, n: _Notes) -> str | None:
    if value is None:
        return None
    url = safe_url(value, limit)
    if url is None:
        shown = xml_text(value)[:40]
        why = f"longer than {limit:,} characters" if len(value) > limit else "not an http(s) URL"
        n.cuts.append(f"{what} URL dropped ({why}): {shown!r}")
    elif has_illegal(value):
        n.illegal.add(what)
    return url


def _content(html: str, limit: int, n: _Notes) -> str:
    size = len(html) if len(html) * 4 <= limit else len(html.encode("utf-8"))
    if size <= limit:
        return html
    # Cut well below the limit and let the sanitizer close what the cut left open.
    short = sanitize_html(html.encode("utf-8")[: limit * 9 // 10].decode("utf-8", "ignore"))
    if len(short.encode("utf-8")) > limit:
        short = ""
    n.cuts.append(f"content cut from {size:,} to {len(short.encode('utf-8')):,} bytes (limit {limit:,})")
    return short


def cap_new_categories(entries: Sequence[Entry], known: Collection[str], budget: int) -> tuple[list[Entry], list[str]]:
    """Entries whose categories not in `known` (the stored ones, the source's configured ones)
    are at most `budget` distinct new names, the first met kept: (entries, names dropped).
    Every new category is a feed written on each build, so a source may only add so many a day."""
    admitted: set[str] = set()
    dropped: dict[str, None] = {}
    out: list[Entry] = []
    for e in entries:
        kept = []
        for c in e.categories:
            if c in known or c in admitted:
                kept.append(c)
            elif len(admitted) < budget:
                admitted.add(c)
                kept.append(c)
            else:
                dropped[c] = None
        out.append(e if len(kept) == len(e.categories) else replace(e, categories=tuple(kept)))
    return out, list(dropped)
