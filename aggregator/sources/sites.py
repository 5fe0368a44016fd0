"""Which static-site generator a folder belongs to, and what that means for reading it.

A `[[sources]] path` may be the root of a Jekyll, Hexo, Hugo or Pelican site. Each generator
keeps its posts in one place (`_posts/`, `source/_posts/`, `content/`), its drafts in another,
and fills the rest of the tree with things that must never become entries: the built copy of
every post (`_site/`, `public/`, `output/`), layouts, themes, vendored packages. `detect` reads
the site's own config file for where those are and for the site's URL and permalink pattern;
`classify` is the pure rule that sorts one relative path into post, draft, page or skip.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

JEKYLL, HEXO, HUGO, PELICAN, PLAIN = "jekyll", "hexo", "hugo", "pelican", "plain"

# Folders of tooling and build output: never read, whatever the layout.
TOOLING = frozenset({"node_modules", ".jekyll-cache", ".sass-cache", ".git", ".hg", ".svn", "__pycache__"})
# Jekyll's own folder names mean the same anywhere; the other generators' are folders of the root.
JEKYLL_SKIP = frozenset({"_site", "_layouts", "_includes", "_data", "_sass", "vendor", "_plugins"})
HEXO_SKIP = ("public", "themes", "scaffolds", ".deploy_git")
HUGO_SKIP = ("public", "resources", "themes")
# In a plain folder these are skipped when present: they are what a generator leaves beside posts.
PLAIN_SKIP = frozenset({"_site", "_layouts", "_includes", "_sass", "_data", "vendor", "themes", "scaffolds"}) | TOOLING
# Generic names that hold a generator's build output only when they look like one (an index.html).
PLAIN_BUILT = frozenset({"public", "output", "resources"})

CONFIG_LIMIT = 1_000_000  # bytes of a site config file read; a real one is a few KB

# Front-matter keys that carry the article's original URL, and an image, by generator. Hugo
# and Pelican use `url` for the page's own path on the site, so it is no original there.
_LINK_COMMON = ("link", "original", "original_url", "source_url", "canonical_url", "canonicalURL", "canonical")
LINK_KEYS = {
    JEKYLL: (*_LINK_COMMON, "url", "external_url"),
    HEXO: (*_LINK_COMMON, "url"),
    HUGO: (*_LINK_COMMON, "externalURL", "external_url"),
    PELICAN: (*_LINK_COMMON, "external_url"),
    PLAIN: (*_LINK_COMMON, "url"),
}
_IMAGE_COMMON = ("headimg", "thumbnail", "image", "cover", "cover.image", "featured_image", "banner", "og_image")
IMAGE_KEYS = {
    JEKYLL: (*_IMAGE_COMMON, "header.image", "header.teaser", "header.overlay_image"),
    HEXO: (*_IMAGE_COMMON, "photos", "top_img"),
    HUGO: (*_IMAGE_COMMON, "featuredImage", "images"),
    PELICAN: (*_IMAGE_COMMON, "featured_image"),
    PLAIN: _IMAGE_COMMON,
}

_JEKYLL_POST_NAME = re.compile(r"\d{2,4}-\d{1,2}-\d{1,2}-[^/]*\.[^./]+\Z")

# What a file is, as `classify` sees it.
POST, DRAFT, PAGE, SKIP = "post", "draft", "page", "skip"


@dataclass(frozen=True, slots=True)
class Site:
    """A site's layout and the parts of its config that decide what is a post and its URL."""

    generator: str
    posts: tuple[str, ...] = ()  # folders (relative, POSIX) whose article files are posts; () = anywhere
    drafts: tuple[str, ...] = ()  # folders of drafts
    pages: tuple[str, ...] = ()  # folders under `posts` that hold pages, not posts (Pelican)
    skip_dirs: frozenset[str] = PLAIN_SKIP  # folder names never entered (anywhere in the tree)
    skip_paths: tuple[str, ...] = ()  # relative folders never entered
    url: str | None = None  # the site's public URL with its base path, no trailing slash
    permalink: str | None = None  # the generator's pattern for a post's path
    permalinks: dict[str, str] = field(default_factory=dict)  # Hugo: section → pattern
    url_prefixes: dict[str, str] = field(default_factory=dict)  # Hugo: content folder → its language's URL prefix
    post_name: str | None = None  # Hexo `new_post_name`: how a post's file name is made from its title
    timezone: str | None = None  # zone of naive dates in permalinks (the site's own setting)
    config_file: str | None = None  # the file the layout was recognized by

    @property
    def header_metadata(self) -> bool:
        """Pelican articles carry `Key: value` lines instead of front matter."""
        return self.generator == PELICAN


def detect(root: Path) -> Site:
    """The layout of the tree at `root` (PLAIN when no generator's marks are found). A config
    file that cannot be read leaves the layout recognized, with the defaults of its generator."""
    if (root / "pelicanconf.py").is_file():
        return _pelican(root)
    for name in ("hugo.toml", "hugo.yaml", "hugo.yml", "hugo.json"):
        if (root / name).is_file():
            return _hugo(root, root / name)
    jekyll_config = next((root / n for n in ("_config.yml", "_config.yaml") if (root / n).is_file()), None)
    if jekyll_config is not None:
        conf = _read_mapping(jekyll_config)
        source_dir = _str(conf.get("source_dir")) or "source"
        if (root / source_dir / "_posts").is_dir() or "source_dir" in conf or (root / "scaffolds").is_dir():
            return _hexo(root, jekyll_config, conf, source_dir)
        return _jekyll(root, jekyll_config, conf)
    for name in ("config.toml", "config.yaml", "config.yml", "config.json"):
        if (root / name).is_file() and (root / "content").is_dir():
            return _hugo(root, root / name)
    default = root / "config" / "_default"
    for name in ("hugo.toml", "config.toml", "hugo.yaml", "config.yaml"):
        if (default / name).is_file() and (root / "content").is_dir():
            return _hugo(root, default / name)
    return Site(PLAIN)


def classify(site: Site, rel: str) -> tuple[str, str]:
    """(kind, rule) of the article file at `rel` (relative to the site root, POSIX).

    kind is POST, DRAFT, PAGE or SKIP; rule names why, for `aggregator sources` to count."""
    folders, name, stem = split_rel(rel)
    if site.generator == PLAIN:
        return POST, "article file"
    if site.generator == JEKYLL:
        if "_posts" in folders:
            # Jekyll reads only files named like posts; it skips the others, and so do we.
            if not _JEKYLL_POST_NAME.match(name):
                return SKIP, "in _posts/ but not named YYYY-MM-DD-title"
            return POST, "_posts/"
        if "_drafts" in folders:
            return DRAFT, "_drafts/"
        return PAGE, "site page (not in _posts/)"
    if site.generator == HEXO:
        if _under(rel, site.drafts):
            return DRAFT, "source/_drafts/"
        if _under(rel, site.posts):
            return POST, "source/_posts/"
        return PAGE, "site page (not in source/_posts/)"
    if site.generator == HUGO:
        if not _under(rel, site.posts):
            return SKIP, "outside content/"
        if stem == "_index":
            return PAGE, "section list (_index)"
        return POST, "content/"
    # Pelican
    if not _under(rel, site.posts):
        return SKIP, "outside the content folder"
    if _under(rel, site.pages):
        return PAGE, "site page (pages/)"
    if name.endswith((".rst", ".rest")):
        return SKIP, "reStructuredText (no reader)"
    return POST, "article"


def split_rel(rel: str) -> tuple[list[str], str, str]:
    """(folders, name, stem) of a path as the scan makes them (POSIX, relative, no empty or `.`
    parts): what `PurePosixPath` gives, without building one per file, which was a sixth of a
    20,000-file scan that found nothing new."""
    *folders, name = rel.split("/")
    dot = name.rfind(".")
    return folders, name, name[:dot] if 0 < dot < len(name) - 1 else name


def _under(rel: str, folders: tuple[str, ...]) -> bool:
    return any(not f or rel.startswith(f + "/") for f in folders)


def describe(site: Site) -> str:
    """One line for `aggregator sources`."""
    if site.generator == PLAIN:
        return "plain folder"
    where = ", ".join(f"{p}/" for p in site.posts) if site.posts and site.posts != ("",) else "the root"
    return f"{site.generator.capitalize()} site ({site.config_file}; posts from {where})"


# ---------------------------------------------------------------- per generator


def _jekyll(root: Path, config: Path, conf: dict) -> Site:
    exclude = tuple(str(x).strip("/") for x in conf.get("exclude") or () if isinstance(x, str))
    dest = _str(conf.get("destination"))
    return Site(
        JEKYLL,
        posts=("_posts",),
        drafts=("_drafts",),
        skip_dirs=JEKYLL_SKIP | TOOLING,
        skip_paths=("assets", *([dest.strip("/")] if dest else []), *(x for x in exclude if x and "*" not in x)),
        url=_join_url(_str(conf.get("url")), _str(conf.get("baseurl"))),
        permalink=_jekyll_posts_permalink(conf) or _str(conf.get("permalink")) or "date",
        timezone=_str(conf.get("timezone")),
        config_file=config.name,
    )


def _jekyll_posts_permalink(conf: dict) -> str | None:
    """`collections: posts: permalink:` overrides the site's `permalink` for posts."""
    collections = conf.get("collections")
    posts = collections.get("posts") if isinstance(collections, dict) else None
    return _str(posts.get("permalink")) if isinstance(posts, dict) else None


def _hexo(root: Path, config: Path, conf: dict, source_dir: str) -> Site:
    public = (_str(conf.get("public_dir")) or "public").strip("/")
    source_dir = source_dir.strip("/")
    return Site(
        HEXO,
        posts=(f"{source_dir}/_posts",),
        drafts=(f"{source_dir}/_drafts",),
        skip_dirs=TOOLING,
        skip_paths=(*HEXO_SKIP, public),
        url=_join_url(_str(conf.get("url")), None),
        permalink=_str(conf.get("permalink")) or ":year/:month/:day/:title/",
        post_name=_str(conf.get("new_post_name")),
        timezone=_str(conf.get("timezone")),
        config_file=config.name,
    )


def _hugo(root: Path, config: Path) -> Site:
    conf = {str(k).lower(): v for k, v in _read_mapping(config).items()}
    publish = (_str(conf.get("publishdir")) or "public").strip("/")
    raw = conf.get("permalinks") if isinstance(conf.get("permalinks"), dict) else {}
    # Newer Hugo nests the patterns by page kind: [permalinks.page]; the old form is flat.
    flat = raw.get("page") if isinstance(raw.get("page"), dict) else raw
    permalinks = {str(k): v for k, v in flat.items() if isinstance(v, str)}
    roots = _hugo_content_roots(conf)
    return Site(
        HUGO,
        posts=tuple(roots),
        skip_dirs=TOOLING,
        skip_paths=(*HUGO_SKIP, publish),
        url=_join_url(_str(conf.get("baseurl")), None),
        permalinks=permalinks,
        url_prefixes=roots,
        timezone=_str(conf.get("timezone")),
        config_file=str(config.relative_to(root)),
    )


def _hugo_content_roots(conf: dict) -> dict[str, str]:
    """Content folder → the URL prefix of its language: `contentDir`, each language's own
    `contentDir`, or module mounts onto `content`. The default language has no prefix unless
    `defaultContentLanguageInSubdir`."""
    default = _str(conf.get("defaultcontentlanguage")) or "en"
    in_subdir = conf.get("defaultcontentlanguageinsubdir") is True

    def prefix(lang: str | None) -> str:
        return "" if not lang or (lang == default and not in_subdir) else f"{lang}/"

    roots: dict[str, str] = {}
    languages = conf.get("languages")
    if isinstance(languages, dict):
        for lang, options in languages.items():
            folder = _str(options.get("contentDir") or options.get("contentdir")) if isinstance(options, dict) else None
            if folder:
                roots[folder.strip("/")] = prefix(str(lang))
    module = conf.get("module")
    mounts = module.get("mounts") if isinstance(module, dict) else None
    for mount in mounts if isinstance(mounts, list) else ():
        if not isinstance(mount, dict) or _str(mount.get("target")) != "content" or not _str(mount.get("source")):
            continue
        lang = _str(mount.get("lang"))
        matrix = (mount.get("sites") or {}).get("matrix") if isinstance(mount.get("sites"), dict) else None
        if lang is None and isinstance(matrix, dict) and _str_list(matrix.get("languages")):
            lang = _str_list(matrix.get("languages"))[0]
        roots[str(mount["source"]).strip("/")] = prefix(lang)
    if not roots:
        roots[(_str(conf.get("contentdir")) or "content").strip("/")] = ""
    return roots


def hugo_headless(folder: Path) -> bool:
    """Does the bundle at `folder` say its pages are never rendered (`headless: true`, or
    `build`/`cascade.build` with `render: never`)? Read from its `_index.md` or `index.md`."""
    from .frontmatter import FrontMatterError, split_front_matter

    for name in ("_index.md", "index.md"):
        try:
            with open(folder / name, "rb") as f:
                text = f.read(65536).decode("utf-8", "replace")
        except OSError:
            continue
        try:
            meta, _ = split_front_matter(text)
        except (FrontMatterError, RecursionError):
            return False
        cascade = meta.get("cascade")
        cascade = cascade[0] if isinstance(cascade, list) and cascade else cascade
        if not_rendered(meta) or (isinstance(cascade, dict) and not_rendered(cascade)):
            return True
    return False


def not_rendered(meta: dict) -> bool:
    """Hugo front matter that keeps a page out of the site: `headless: true` or `build.render: never`."""
    if meta.get("headless") is True:
        return True
    build = meta.get("build", meta.get("_build"))
    return isinstance(build, dict) and build.get("render") in ("never", False, "false")


def _pelican(root: Path) -> Site:
    conf = _read_python_settings(root / "pelicanconf.py")
    content = (_str(conf.get("PATH")) or "content").strip("/").removeprefix("./")
    articles = _str_list(conf.get("ARTICLE_PATHS")) or [""]
    pages = _str_list(conf.get("PAGE_PATHS")) or ["pages"]
    output = (_str(conf.get("OUTPUT_PATH")) or "output").strip("/")
    prefix = f"{content}/" if content and content != "." else ""
    return Site(
        PELICAN,
        posts=tuple((prefix + a.strip("/")).strip("/") for a in articles),
        pages=tuple((prefix + p.strip("/")).strip("/") for p in pages),
        skip_dirs=TOOLING,
        skip_paths=(output, "theme", "themes", "plugins", "pelican-plugins"),
        url=_join_url(_str(conf.get("SITEURL")), None),
        permalink=_str(conf.get("ARTICLE_URL")) or "{slug}.html",
        timezone=_str(conf.get("TIMEZONE")),
        config_file="pelicanconf.py",
    )


# ---------------------------------------------------------------- reading config files


def _read_mapping(path: Path) -> dict:
    """A YAML, TOML or JSON config file → its mapping ({} when it cannot be read)."""
    from .frontmatter import FrontMatterError, load_yaml

    try:
        with open(path, "rb") as f:
            data = f.read(CONFIG_LIMIT).decode("utf-8", "replace")
        if path.suffix == ".toml":
            value = tomllib.loads(data)
        elif path.suffix == ".json":
            value = json.loads(data)
        else:
            value = load_yaml(data)
    except (OSError, ValueError, RecursionError, FrontMatterError) as e:
        log.warning("%s: cannot read the site config (%s); using the generator's defaults", path, e)
        return {}
    return value if isinstance(value, dict) else {}


def _read_python_settings(path: Path) -> dict:
    """Pelican's settings file is Python; it is never run. Its plain `NAME = literal` lines are read."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(CONFIG_LIMIT))
    except (OSError, SyntaxError, ValueError, RecursionError) as e:
        log.warning("%s: cannot read the site config (%s); using Pelican's defaults", path, e)
        return {}
    out: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                continue
    return out


def _str(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _str_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def _join_url(url: str | None, base_path: str | None) -> str | None:
    """Site URL plus a base path → `https://host/base` (no trailing slash); None unless absolute http(s)."""
    if not url or not url.startswith(("http://", "https://")):
        return None
    base = (base_path or "").strip("/")
    return url.rstrip("/") + (f"/{base}" if base else "")
