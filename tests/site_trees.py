"""Small site trees of each generator, built by the tests, and the entries each must produce.

Each tree has a config, posts, a draft, a post dated in the far future, a site page and a
build-output folder holding HTML copies of the posts (which must never be read). The entries
each tree gives are in tests/golden/sites/<tree>.json; run `python tests/site_trees.py` to
rewrite them after an intended change, then review the diff.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOLDEN = Path(__file__).resolve().parent / "golden" / "sites"
FUTURE = "2999-01-01"  # a post dated here is held back unless the source says future = true
BUILT = "<html><body><h1>BUILT COPY {0}</h1><p>BUILT COPY of {0}.</p></body></html>\n"


def fm(title: str, date: str | None = None, extra: str = "") -> str:
    return f'---\ntitle: "{title}"\n' + (f"date: {date}\n" if date else "") + extra + "---\n"


TREES: dict[str, dict[str, str]] = {
    "jekyll": {
        "_config.yml": 'title: J\nurl: "https://example.org"\nbaseurl: "/blog"\npermalink: pretty\n'
        "timezone: Asia/Shanghai\nexclude: [notes]\n",
        "_posts/2024-03-05-first-light.md": fm("First light", "2024-03-05 12:00:00 +0800", "categories: [Markets]\n")
        + "The first post, with *emphasis*.\n",
        "_posts/2024-03-06-second-wind.md": fm("Second wind", None, "categories: markets news\n")
        + "The date comes from the file name.\n",
        "_posts/2024-03-07-own-link.md": fm("Own link", "2024-03-07 08:00:00 +0800", "slug: ignored\n")
        + "Carries its original URL.\n\n<https://news.example.com/a/1.html>\n",
        "_posts/2024-03-08-not-yet.md": fm("Unpublished", "2024-03-08 09:00:00 +0800", "published: false\n") + "x\n",
        f"_posts/{FUTURE}-later.md": fm("Far future", f"{FUTURE} 09:00:00 +0800") + "Not yet.\n",
        "_drafts/half-done.md": fm("A draft", "2024-03-09 10:00:00 +0800") + "Draft.\n",
        "_posts/-202205262391921712.md": fm("", " +0800") + "Jekyll skips a post file named without a date.\n",
        "about.md": fm("About page") + "A page, not a post.\n",
        "notes/n.md": fm("Excluded by the site config") + "x\n",
        "_layouts/post.html": "<h1>{{ page.title }}</h1>{{ content }}\n",
        "_includes/head.html": "<h1>Include</h1>\n",
        "node_modules/pkg/README.md": "# Package readme\n",
        "vendor/bundle/gems/README.md": "# Gem readme\n",
        "_site/2024/03/05/first-light/index.html": BUILT.format("First light"),
        "_site/about/index.html": BUILT.format("About page"),
    },
    "hexo": {
        "_config.yml": "title: H\nurl: https://hexo.example.org/site\nroot: /site/\n"
        "permalink: :year/:month/:title/\nsource_dir: source\npublic_dir: public\n",
        "source/_posts/river-bank.md": fm("River bank", "2024-04-06 12:00:00", "categories: [Nature, Water]\n")
        + "River text.\n",
        "source/_posts/trips/stone-bridge.md": fm("Stone bridge", "2024-04-07 23:30:00", "tags: [stone]\n")
        + "Bridge text.\n",
        "source/_posts/hexo-open.md": 'title: "No opening fence"\ndate: 2024-04-08 08:00:00\n---\nHexo form.\n',
        "source/_posts/far.md": fm("Far future", f"{FUTURE} 12:00:00") + "Not yet.\n",
        "source/_drafts/rough.md": fm("A draft", "2024-04-08 12:00:00") + "Draft.\n",
        "source/about/index.md": fm("About page", "2024-04-01 12:00:00") + "About.\n",
        "scaffolds/post.md": fm("{{ title }}"),
        "themes/landscape/README.md": "# Theme readme\n",
        "public/2024/04/river-bank/index.html": BUILT.format("River bank"),
    },
    "hugo": {
        "hugo.toml": 'baseURL = "https://hugo.example.org/"\ntitle = "G"\n'
        '[permalinks]\n  posts = "/:year/:month/:slug/"\n',
        "content/_index.md": fm("Home section list") + "Home.\n",
        "content/posts/_index.md": fm("Posts section list") + "All posts.\n",
        "content/posts/green-field.md": fm("Green field", "2024-05-07T12:00:00+08:00", 'slug: "meadow"\n')
        + "Field text.\n",
        "content/posts/blue-lake.md": '+++\ntitle = "Blue lake"\ndate = 2024-05-08T12:00:00+08:00\n'
        'categories = ["water"]\n+++\nLake text.\n',
        "content/posts/bundle/index.md": fm("A page bundle", "2024-05-09T08:00:00Z") + "Bundled.\n",
        "content/about.md": fm("About", "2024-05-01T08:00:00Z") + "Hugo lists this page too.\n",
        "content/posts/unfinished.md": fm("A draft", "2024-05-09T12:00:00+08:00", "draft: true\n") + "Draft.\n",
        "content/posts/later.md": fm("Far future", f"{FUTURE}T12:00:00+08:00") + "Not yet.\n",
        "themes/ananke/layouts/single.html": "<h1>Theme</h1>\n",
        "public/posts/meadow/index.html": BUILT.format("Green field"),
        "resources/_gen/x.md": "# Generated\n",
    },
    "pelican": {
        "pelicanconf.py": "AUTHOR = 'P'\nSITEURL = 'https://pelican.example.org'\nPATH = 'content'\n"
        "ARTICLE_URL = 'posts/{date:%Y}/{slug}.html'\nTIMEZONE = 'Europe/Paris'\nimport os\n",
        "content/first-note.md": "Title: First note\nDate: 2024-06-08 10:20\nCategory: Notes\nTags: one, two\n"
        "Slug: first-note\nAuthors: Ann; Bob\nSummary: Short summary.\n\nThe body has no heading.\n",
        "content/second-note.html": '<html><head><title>Second note</title>'
        '<meta name="date" content="2024-06-09 09:00" /><meta name="category" content="Notes" /></head>'
        "<body><p>An HTML article.</p></body></html>\n",
        "content/draft-note.md": "Title: A draft\nDate: 2024-06-10 09:00\nStatus: draft\n\nDraft.\n",
        "content/third.rst": "Restructured\n############\n\n:date: 2024-06-10 10:00\n\nA reStructuredText article.\n",
        "content/pages/about.md": "Title: About page\n\nA page.\n",
        "output/first-note.html": BUILT.format("First note"),
    },
    "plain": {
        "a.md": fm("Plain A", "2024-01-10 10:00:00 +0800", "categories: [plaincat]\n") + "A.\n",
        "_notes/underscored.md": fm("In an underscored folder", "2024-02-05 08:00:00 +0800") + "Kept.\n",
        ".hidden/secret.md": fm("Hidden") + "Hidden.\n",
        "~scratch.md": fm("Scratch") + "Scratch.\n",
        "node_modules/pkg/README.md": "# Package readme\n",
        "_site/index.md": fm("Build output") + "x\n",
    },
}


def build(root: Path, name: str) -> Path:
    """Write the tree `name` under `root` and return its folder."""
    folder = root / name
    for rel, text in TREES[name].items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return folder


def entries_of(root: Path, name: str, **options: object) -> list[dict]:
    """Ingest the tree `name` (built under `root`) into a fresh SQLite store, as the pipeline
    does, and list what it stored: title, link, date, categories, sorted by title."""
    from aggregator.config import Settings, SourceSettings
    from aggregator.pipeline import ingest_files
    from aggregator.store import Store

    folder = build(root, name)
    source = SourceSettings(name=name, path=folder, **options)
    settings = Settings(sources=[source])
    store = Store(f"sqlite:///{root / (name + '.sqlite3')}")
    try:
        ingest_files(store, settings, source)
        rows = store.listing(None, None)
        cats = store.entry_categories([r.id for r in rows])
        out = [
            {
                "key": r.key,
                "title": r.title,
                "link": r.link,
                "date": r.published.isoformat() if r.published else None,
                "categories": sorted(c.name for c in cats.get(r.id, [])),
            }
            for r in rows
        ]
    finally:
        store.close()
    return sorted(out, key=lambda e: e["key"])


if __name__ == "__main__":
    import tempfile

    GOLDEN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for tree in TREES:
            path = GOLDEN / f"{tree}.json"
            got = entries_of(Path(tmp), tree)
            path.write_text(json.dumps(got, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            print("wrote", path.relative_to(Path(__file__).resolve().parent.parent))
