"""A post's address on its own site, by the rules of the generator that built it.

When an article has no original URL but its site's config gives the site's URL and permalink
pattern, the entry links to the post's page there, as the generator computes it: Jekyll
(`url` + `baseurl` + `permalink`, its named styles and `:placeholders`), Hexo (`url` +
`permalink`), Hugo (`baseURL` + `[permalinks]` per section) and Pelican (`SITEURL` +
`ARTICLE_URL`). Dates are the post's own local date, as written. A pattern with a
placeholder not known here gives None and says which, so the caller can warn once.

Pure functions: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from urllib.parse import quote

from .sites import HEXO, HUGO, JEKYLL, PELICAN, Site


@dataclass(frozen=True, slots=True)
class Post:
    """What a permalink can be made of."""

    path: str  # relative to the site root, POSIX
    title: str
    date: datetime | None  # aware, in the post's own offset (or the site's zone when written without one)
    slug: str | None = None  # front matter `slug`
    categories: tuple[str, ...] = ()  # as written in the front matter
    own_permalink: str | None = None  # front matter `permalink` (Jekyll, Hexo) or `url` (Hugo)
    lang: str | None = None


class UnknownPlaceholder(ValueError):
    """The pattern uses a placeholder this module does not know."""


def permalink(site: Site, post: Post) -> str | None:
    """The post's absolute URL on its site; None when the site has no URL or the post no date a
    dated pattern needs. Raises UnknownPlaceholder naming the placeholder."""
    if site.url is None:
        return None
    if site.generator == JEKYLL:
        path = _jekyll(site, post)
    elif site.generator == HEXO:
        path = _hexo(site, post)
    elif site.generator == HUGO:
        path = _hugo(site, post)
    elif site.generator == PELICAN:
        path = _pelican(site, post)
    else:
        return None
    if path is None:
        return None
    path = re.sub(r"/{2,}", "/", "/" + path.lstrip("/"))
    return site.url + quote(path, safe="/:@!$&'()*+,;=-._~%")


# ---------------------------------------------------------------- slugs


def _slugify(text: str, lower: bool = True) -> str:
    """Letters and digits (any script) kept, every other run of characters one '-'."""
    text = unicodedata.normalize("NFKC", text)
    out = re.sub(r"[^\w]+|_+", "-", text).strip("-")
    return out.lower() if lower else out


_JEKYLL_NAME = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}-(.+)$")


def _stem(path: str) -> str:
    return PurePosixPath(path).stem


def _date_parts(d: datetime) -> dict[str, str]:
    return {
        "year": f"{d.year:04d}",
        "month": f"{d.month:02d}",
        "i_month": str(d.month),
        "day": f"{d.day:02d}",
        "i_day": str(d.day),
        "short_year": f"{d.year % 100:02d}",
        "hour": f"{d.hour:02d}",
        "minute": f"{d.minute:02d}",
        "second": f"{d.second:02d}",
        "y_day": f"{d.timetuple().tm_yday:03d}",
        "short_month": d.strftime("%b"),
        "long_month": d.strftime("%B"),
        "short_day": d.strftime("%a"),
        "long_day": d.strftime("%A"),
        "week": f"{d.isocalendar()[1]:02d}",
        "w_year": str(d.isocalendar()[0]),
        "w_day": str(d.isocalendar()[2]),
    }


_PLACEHOLDER = re.compile(r":([a-z_]+)")


def _fill(pattern: str, values: dict[str, str], dated: frozenset[str]) -> str | None:
    """Replace `:name` placeholders (longest names first, as the generators do)."""
    names = _PLACEHOLDER.findall(pattern)
    for name in names:
        if name not in values and name not in dated:
            # `:output_ext` style names inside longer ones (":title:output_ext") are split by the regex.
            raise UnknownPlaceholder(f":{name}")
    if any(n in dated for n in names) and "year" not in values:
        return None
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], pattern)


_DATED = frozenset(_date_parts(datetime(2000, 1, 1)))

# ---------------------------------------------------------------- Jekyll

JEKYLL_STYLES = {
    "date": "/:categories/:year/:month/:day/:title:output_ext",
    "pretty": "/:categories/:year/:month/:day/:title/",
    "ordinal": "/:categories/:year/:y_day/:title:output_ext",
    "weekdate": "/:categories/:year/W:week/:short_day/:title:output_ext",
    "none": "/:categories/:title:output_ext",
}


def _jekyll(site: Site, post: Post) -> str | None:
    pattern = post.own_permalink or site.permalink or "date"
    pattern = JEKYLL_STYLES.get(pattern, pattern)
    m = _JEKYLL_NAME.match(_stem(post.path))
    from_name = m.group(1) if m else _stem(post.path)
    title = post.slug or from_name
    values = {
        "title": _slugify(title, lower=False),
        "slug": _slugify(post.slug or from_name),
        "name": _slugify(from_name),
        "categories": "/".join(c.lower() for c in post.categories),
        "output_ext": ".html",
        "path": post.path,
        "basename": _stem(post.path),
        "collection": "posts",
    }
    if post.date:
        values.update(_date_parts(post.date))
    return _fill(pattern, values, _DATED)


# ---------------------------------------------------------------- Hexo


def _hexo(site: Site, post: Post) -> str | None:
    if post.own_permalink:
        return post.own_permalink
    posts_dir = site.posts[0] if site.posts else ""
    rel = post.path[len(posts_dir) + 1 :] if post.path.startswith(posts_dir + "/") else post.path
    title = _hexo_title(rel, site.post_name) or str(PurePosixPath(rel).with_suffix(""))
    values = {
        "title": title,
        "name": _stem(rel),
        "post_title": _slugify(post.title),
        "category": "/".join(_slugify(c, lower=False) for c in post.categories) or "uncategorized",
    }
    if post.date:
        values.update(_date_parts(post.date))
    return _fill(site.permalink or ":year/:month/:day/:title/", values, _DATED)


_HEXO_NAME_PARTS = {"year": r"\d{4}", "month": r"\d{2}", "i_month": r"\d{1,2}", "day": r"\d{2}", "i_day": r"\d{1,2}"}


def _hexo_title(rel: str, post_name: str | None) -> str | None:
    """`:title` as Hexo reads it back from a file named by `new_post_name` (`:year-:month-:day-:title.md`
    gives `hexo-3-released` for `2019-06-19-hexo-3-released.md`)."""
    if not post_name or ":title" not in post_name:
        return None
    pattern = ""
    for piece in re.split(r"(:[a-z_]+)", post_name):
        if piece.startswith(":"):
            name = piece[1:]
            pattern += "(?P<title>.+)" if name == "title" else f"(?:{_HEXO_NAME_PARTS.get(name, '[^/]+?')})"
        else:
            pattern += re.escape(piece)
    m = re.fullmatch(pattern, rel)
    return m.group("title") if m else None


# ---------------------------------------------------------------- Hugo


def _hugo(site: Site, post: Post) -> str | None:
    roots = [r for r in site.posts if post.path.startswith(r + "/")]
    content = max(roots, key=len) if roots else ""
    lang = site.url_prefixes.get(content, "")
    rel = PurePosixPath(post.path[len(content) + 1 :] if content else post.path)
    if post.own_permalink:  # front matter `url`: the page's whole path
        return post.own_permalink
    path = _hugo_path(site, post, rel)
    return lang + path.lstrip("/") if path is not None else None


def _hugo_path(site: Site, post: Post, rel: PurePosixPath) -> str | None:
    folders = list(rel.parts[:-1])
    # A page bundle (`posts/x/index.md`) is named by its folder.
    bundle = rel.stem == "index" and bool(folders)
    filename = folders.pop() if bundle else rel.stem
    section = folders[0] if folders else ""
    slug = post.slug or _slugify(post.title)
    pattern = site.permalinks.get(section)
    if pattern is None:
        path = "/".join([*folders, post.slug or filename]) + "/"
        return path.lower()
    values = {
        "section": section,
        "sections": "/".join(folders),
        "title": _slugify(post.title),
        "slug": slug,
        "filename": filename,
        "slugorfilename": post.slug or filename,
        "contentbasename": filename,
        "slugorcontentbasename": post.slug or filename,
    }
    if post.date:
        d = post.date
        values.update(
            year=f"{d.year:04d}",
            month=f"{d.month:02d}",
            monthname=d.strftime("%B"),
            day=f"{d.day:02d}",
            weekday=str(d.isoweekday() % 7),
            weekdayname=d.strftime("%A"),
            yearday=str(d.timetuple().tm_yday),
        )
    dated = frozenset({"year", "month", "monthname", "day", "weekday", "weekdayname", "yearday"})
    path = _fill(pattern, values, dated)
    return path.lower() if path is not None else None


# ---------------------------------------------------------------- Pelican

_FIELD = re.compile(r"\{(\w+)(?::([^{}]*))?\}")


def _pelican(site: Site, post: Post) -> str | None:
    slug = post.slug or _slugify(post.title)
    values = {
        "slug": slug,
        "category": _slugify(post.categories[0]) if post.categories else "misc",
        "lang": post.lang or "en",
    }

    def one(m: re.Match) -> str:
        name, spec = m.group(1), m.group(2)
        if name == "date":
            if post.date is None:
                raise _NoDate
            return post.date.strftime(spec) if spec else post.date.isoformat()
        if name not in values:
            raise UnknownPlaceholder("{" + name + "}")
        return values[name]

    try:
        return _FIELD.sub(one, site.permalink or "{slug}.html")
    except _NoDate:
        return None


class _NoDate(Exception):
    pass


def unknown_placeholder(site: Site) -> str | None:
    """The first placeholder of the site's permalink pattern(s) this module cannot fill, or None."""
    from dataclasses import replace

    sample = datetime(2024, 1, 2, 3, 4, 5).astimezone()
    sections = list(site.permalinks) or [""]
    for section in sections:
        path = f"{site.posts[0]}/{section}/x.md" if site.posts and site.posts[0] else f"{section}/x.md"
        try:
            permalink(replace(site, url=site.url or "http://x"), Post(path, "x", sample, categories=("c",)))
        except UnknownPlaceholder as e:
            return str(e)
    return None
