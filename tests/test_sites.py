"""Site roots as sources: Jekyll (`_posts`, `_site`), Hexo (`source/_posts`, `public`), Hugo
(`content`, `baseURL`), Pelican (`pelicanconf.py`, `output`) and plain folders: what each layout
takes and skips, drafts and future posts, patterns, permalinks, versions of one page, and a
file system full of traps."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import run_cli
from site_trees import GOLDEN, TREES, build, entries_of

from aggregator.config import Settings, SourceSettings
from aggregator.pipeline import ingest_files, scan_source
from aggregator.sources.frontmatter import FrontMatterError, load_yaml, split_front_matter
from aggregator.sources.permalinks import Post, UnknownPlaceholder, permalink, unknown_placeholder
from aggregator.sources.sites import HEXO, HUGO, JEKYLL, PELICAN, PLAIN, Site, detect
from aggregator.sources.walk import FileReadError, read_regular_file, scan
from aggregator.store import Store

# ---------------------------------------------------------------- golden: each tree, its entries


@pytest.mark.parametrize("tree", sorted(TREES))
def test_tree_gives_its_golden_entries(tmp_path: Path, tree: str):
    expected = json.loads((GOLDEN / f"{tree}.json").read_text(encoding="utf-8"))
    assert entries_of(tmp_path, tree) == expected


def test_layouts_are_recognized(tmp_path: Path):
    got = {name: detect(build(tmp_path, name)).generator for name in TREES}
    assert got == {"jekyll": JEKYLL, "hexo": HEXO, "hugo": HUGO, "pelican": PELICAN, "plain": PLAIN}


def test_build_output_layouts_and_tooling_are_never_read(tmp_path: Path):
    for name in TREES:
        found = scan_source(SourceSettings(name=name, path=build(tmp_path, name)), explain=True)
        taken = [p for p, what, _ in found.decisions if what == "taken"]
        assert taken and not any(
            p.startswith(("_site/", "public/", "output/", "node_modules/", "themes/", "vendor/", "_layouts/"))
            for p in taken
        ), (name, taken)
        skipped = {p for p, what, _ in found.decisions if what == "skipped"}
        build_dir = {"jekyll": "_site/", "hexo": "public/", "hugo": "public/", "pelican": "output/", "plain": "_site/"}
        assert build_dir[name] in skipped, (name, skipped)


def test_pelican_rst_is_skipped_with_its_reason(tmp_path: Path):
    found = scan_source(SourceSettings(name="p", path=build(tmp_path, "pelican")), explain=True)
    assert ("content/third.rst", "skipped", "reStructuredText (no reader)") in found.decisions
    assert ("content/pages/about.md", "skipped", "site page (pages/)") in found.decisions


# ---------------------------------------------------------------- drafts and the future


def titles(entries: list[dict]) -> set[str]:
    return {e["title"] for e in entries}


@pytest.mark.parametrize("tree", ["jekyll", "hexo", "hugo", "pelican"])
def test_drafts_are_published_only_when_the_source_says_so(tmp_path: Path, tree: str):
    assert "A draft" not in titles(entries_of(tmp_path / "a", tree))
    with_drafts = titles(entries_of(tmp_path / "b", tree, drafts=True))
    assert "A draft" in with_drafts and "Far future" not in with_drafts
    if tree == "jekyll":
        assert "Unpublished" in with_drafts  # published: false is a draft too


@pytest.mark.parametrize("tree", ["jekyll", "hexo", "hugo"])
def test_future_posts_are_held_back_unless_future_is_set(tmp_path: Path, tree: str):
    assert "Far future" not in titles(entries_of(tmp_path / "a", tree))
    assert "Far future" in titles(entries_of(tmp_path / "b", tree, future=True))


def test_a_future_post_comes_in_when_its_time_comes(tmp_path: Path):
    folder = tmp_path / "posts"
    folder.mkdir()
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    (folder / "soon.md").write_text('---\ntitle: Soon\ndate: "2030-01-01T13:00:00Z"\n---\nSoon.\n', encoding="utf-8")
    (folder / "now.md").write_text('---\ntitle: Now\ndate: "2030-01-01T11:00:00Z"\n---\nNow.\n', encoding="utf-8")
    source = SourceSettings(name="s", path=folder)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        first = ingest_files(store, Settings(sources=[source]), source, now=now)
        assert (first.new, first.held, first.next_release) == (1, 1, datetime(2030, 1, 1, 13, tzinfo=UTC))
        assert [r.title for r in store.listing(None, None)] == ["Now"]
        later = ingest_files(store, Settings(sources=[source]), source, now=now + timedelta(hours=2))
        assert (later.new, later.unchanged, later.held, later.next_release) == (1, 1, 0, None)
        assert sorted(r.title for r in store.listing(None, None)) == ["Now", "Soon"]
        # A published post that becomes a draft is withdrawn.
        (folder / "now.md").write_text("---\ntitle: Now\ndraft: true\n---\nNow.\n", encoding="utf-8")
        third = ingest_files(store, Settings(sources=[source]), source, now=now + timedelta(hours=3))
        assert (third.withdrawn, third.held) == (1, 1)
        assert [r.title for r in store.listing(None, None)] == ["Soon"]
    finally:
        store.close()


# ---------------------------------------------------------------- include / exclude


def test_include_and_exclude_patterns_apply_after_the_layout(tmp_path: Path):
    kept = titles(entries_of(tmp_path / "a", "jekyll", exclude=["**/*-second-wind.md"]))
    assert kept == {"First light", "Own link"}
    kept = titles(entries_of(tmp_path / "b", "hugo", include=["content/posts/**"], exclude=["**/bundle/"]))
    assert kept == {"Green field", "Blue lake"}
    kept = titles(entries_of(tmp_path / "c", "plain", include=["/*.md"]))  # the root only
    assert kept == {"Plain A"}


def test_bad_patterns_and_folder_options_on_feeds_are_config_errors(tmp_path: Path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[sources]]\nname = "f"\nurl = "http://example.org/f.xml"\ndrafts = true\n', encoding="utf-8")
    r = run_cli(cfg, "update")
    assert r.returncode == 2 and "sources[0]" in r.stderr and "drafts" in r.stderr


# ---------------------------------------------------------------- permalinks

SHANGHAI = datetime(2024, 3, 5, 1, 30, tzinfo=ZoneInfo("Asia/Shanghai"))


@pytest.mark.parametrize(
    ("pattern", "want"),
    [
        ("date", "/blog/news/2024/03/05/hello-world.html"),
        ("pretty", "/blog/news/2024/03/05/hello-world/"),
        ("none", "/blog/news/hello-world.html"),
        ("ordinal", "/blog/news/2024/065/hello-world.html"),
        ("/:year/:i_month/:i_day/:slug:output_ext", "/blog/2024/3/5/hello-world.html"),
        ("/:categories/:title/", "/blog/news/hello-world/"),
    ],
)
def test_jekyll_permalinks_use_the_post_s_own_local_date(pattern: str, want: str):
    site = Site(JEKYLL, posts=("_posts",), url="https://e.org/blog", permalink=pattern)
    post = Post("_posts/2024-03-05-hello-world.md", "Hello, World", SHANGHAI, categories=("News",))
    assert permalink(site, post) == "https://e.org" + want


def test_hexo_hugo_and_pelican_permalinks():
    hexo = Site(HEXO, posts=("source/_posts",), url="https://h.org", permalink=":year/:month/:day/:title/")
    assert permalink(hexo, Post("source/_posts/a/b.md", "B", SHANGHAI)) == "https://h.org/2024/03/05/a/b/"
    assert permalink(hexo, Post("source/_posts/b.md", "B", SHANGHAI, own_permalink="x/y/")) == "https://h.org/x/y/"
    hugo = Site(HUGO, posts=("content",), url="https://g.org", permalinks={"posts": "/:section/:year/:title/"})
    assert permalink(hugo, Post("content/posts/x.md", "Big News", SHANGHAI)) == "https://g.org/posts/2024/big-news/"
    assert permalink(hugo, Post("content/notes/Y.md", "T", SHANGHAI)) == "https://g.org/notes/y/"
    assert permalink(hugo, Post("content/notes/y.md", "T", SHANGHAI, own_permalink="/z/")) == "https://g.org/z/"
    pelican = Site(PELICAN, url="https://p.org", permalink="{date:%Y}/{category}/{slug}.html")
    got = permalink(pelican, Post("content/a.md", "Café au lait", SHANGHAI, categories=("Food",)))
    assert got == "https://p.org/2024/food/caf%C3%A9-au-lait.html"


def test_unknown_placeholders_are_named_and_fall_back_with_one_warning(tmp_path: Path, caplog):
    site = Site(JEKYLL, posts=("_posts",), url="https://e.org", permalink="/:year/:nonsense/")
    with pytest.raises(UnknownPlaceholder, match=":nonsense"):
        permalink(site, Post("_posts/2024-01-01-a.md", "A", SHANGHAI))
    assert unknown_placeholder(site) == ":nonsense"
    folder = build(tmp_path, "jekyll")
    (folder / "_config.yml").write_text('url: "https://e.org"\npermalink: /:year/:nonsense/\n', encoding="utf-8")
    with caplog.at_level("WARNING"):
        got = {e["title"]: e["link"] for e in entries_of(tmp_path / "again", "jekyll")}
    assert got["First light"] is not None  # the tree was rebuilt with its own config
    source = SourceSettings(name="j", path=folder)
    store = Store(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        with caplog.at_level("WARNING"):
            ingest_files(store, Settings(sources=[source]), source)
        links = {r.title: r.link for r in store.listing(None, None)}
    finally:
        store.close()
    assert links["First light"] is None and links["Own link"] == "https://news.example.com/a/1.html"
    assert sum(":nonsense" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------- the file system


def test_traps_in_the_tree_are_reported_and_the_run_goes_on(tmp_path: Path):
    """A symlink loop, a link out of the root, a FIFO, a link to /dev/zero, a name that is not
    UTF-8: the real CLI reports them and publishes the rest, exit 0."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "good.md").write_text("---\ntitle: Good file\n---\nGood.\n", encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "out.md").write_text("---\ntitle: OUTSIDE\n---\nx\n", encoding="utf-8")
    os.symlink(".", root / "loop")
    os.symlink(tmp_path / "elsewhere", root / "outside")
    os.symlink("/dev/zero", root / "zero.md")
    os.mkfifo(root / "fifo.md")
    with open(os.fsencode(root) + b"/bad-\xff-name.md", "wb") as f:
        f.write(b"---\ntitle: Odd name\n---\nx\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db.sqlite3"\n[output]\ndir = "out"\n'
        '[[sources]]\nname = "s"\npath = "site"\n',
        encoding="utf-8",
    )
    r = run_cli(cfg, "update", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "bad-\\xff-name.md" in r.stderr and "not valid UTF-8" in r.stderr
    assert "fifo.md" in r.stderr and "FIFO" in r.stderr
    feed = (tmp_path / "out" / "all" / "atom.xml").read_text(encoding="utf-8")
    assert feed.count("Good file") == 1 and "OUTSIDE" not in feed
    # Following links is allowed per source: the loop is entered once, /dev/zero is refused.
    cfg.write_text(cfg.read_text(encoding="utf-8") + "follow_symlinks = true\n", encoding="utf-8")
    r = run_cli(cfg, "update", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "zero.md" in r.stderr and "not a regular file (a device)" in r.stderr
    feed = (tmp_path / "out" / "all" / "atom.xml").read_text(encoding="utf-8")
    assert feed.count("Good file") == 1 and "OUTSIDE" in feed


def test_a_file_that_grows_or_goes_away_after_the_scan(tmp_path: Path):
    (tmp_path / "a.md").write_text("---\ntitle: A\n---\n" + "x" * 10, encoding="utf-8")
    stamps = scan(tmp_path).files
    with open(tmp_path / "a.md", "a", encoding="utf-8") as f:
        f.write("y" * 1000)
    with pytest.raises(FileReadError, match="over the 100-byte limit"):
        read_regular_file(tmp_path / "a.md", 100)
    (tmp_path / "a.md").unlink()
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "a.md", 100)
    assert [s.path for s in stamps] == ["a.md"]


def test_a_fifo_swapped_in_after_the_scan_is_not_read(tmp_path: Path):
    os.mkfifo(tmp_path / "x.md")
    with pytest.raises(FileReadError, match="FIFO"):
        read_regular_file(tmp_path / "x.md", 100)  # non-blocking open: returns at once


# ---------------------------------------------------------------- front matter that attacks


def test_yaml_alias_bombs_are_refused_quickly():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    started = time.monotonic()
    with pytest.raises(FrontMatterError, match="aliases"):
        load_yaml(bomb)
    assert time.monotonic() - started < 5


def test_deeply_nested_toml_front_matter_is_an_error_not_a_crash():
    deep = "+++\na = " + "[" * 100_000 + "]" * 100_000 + "\n+++\nbody\n"
    with pytest.raises(FrontMatterError, match=r"too deeply|broken TOML"):
        split_front_matter(deep)


@pytest.mark.parametrize(
    "body",
    [
        "[返回](x)  " * 25 + "!",  # a navigation line that almost matches
        "# x" + " " * 5000 + "y",  # a heading followed by spaces
        '<a class="trsHotWords">' * 5000,  # stock links never closed
        "（文章来源：" + "a " * 20000,  # an outlet never closed
        "<h1>" * 20000,
    ],
)
def test_body_clean_up_is_linear_on_crafted_input(body: str):
    from golden_entries import CONTEXT

    from aggregator.model import FileStamp
    from aggregator.sources.articles import _OUTLET, clean_body, html_title, markdown_title, parse_article

    started = time.monotonic()
    clean_body(body * 4)
    markdown_title(body * 4)
    _OUTLET.search(body * 4)
    html_title(body * 4)
    data = ("---\ntitle: T\n---\n" + body).encode()
    parse_article(data, FileStamp("a.md", 0, len(data)), CONTEXT)
    assert time.monotonic() - started < 5


def test_pelican_headers_and_hexo_open_form():
    meta, body = split_front_matter("Title: A note\nDate: 2024-06-08 10:20\nTags: a, b\n  c\n\nBody\n", True)
    assert meta == {"title": "A note", "date": "2024-06-08 10:20", "tags": "a, b c"} and body == "Body\n"
    # Without the layout, a `Title:` first line still reads as a header; other prose does not.
    assert split_front_matter("Title: T\n\nBody")[0] == {"title": "T"}
    assert split_front_matter("Note: this is prose\n\nBody")[0] == {}
    meta, body = split_front_matter("title: Hexo\ndate: 2024-01-01\n---\nBody")
    assert meta["title"] == "Hexo" and body == "Body"


# ---------------------------------------------------------------- versions of one page, end to end


def test_versions_of_one_page_show_the_latest_whatever_names_and_mtimes(tmp_path: Path):
    folder = tmp_path / "site"
    folder.mkdir()
    page = "http://news.example.com/2024/page.html"
    old, new = folder / "b-first.md", folder / "a-edited.md"
    old.write_text(f'---\ntitle: "Old version"\ndate: 2024-01-10\n---\nThe text.\n\n<{page}>\n', encoding="utf-8")
    new.write_text(f'---\ntitle: "New version"\ndate: 2024-02-20\n---\nThe text, edited.\n\n<{page}>\n', "utf-8")
    os.utime(old, (time.time(), time.time()))
    os.utime(new, (1_000_000, 1_000_000))
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db.sqlite3"\n[output]\ndir = "out"\n[[sources]]\nname = "s"\npath = "site"\n',
        encoding="utf-8",
    )
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    feed = (tmp_path / "out" / "all" / "atom.xml").read_text(encoding="utf-8")
    assert "New version" in feed and "Old version" not in feed


def test_sources_and_scan_dry_run_name_the_layout(tmp_path: Path):
    build(tmp_path, "hugo")
    build(tmp_path, "jekyll")
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db.sqlite3"\n[output]\ndir = "out"\n'
        '[[sources]]\nname = "g"\npath = "hugo"\n[[sources]]\nname = "j"\npath = "jekyll"\n',
        encoding="utf-8",
    )
    r = run_cli(cfg, "sources")
    assert r.returncode == 0, r.stderr
    assert "Hugo site" in r.stdout and "Jekyll site" in r.stdout and "_site/" in r.stdout
    r = run_cli(cfg, "scan", "--dry-run", "j")
    assert r.returncode == 0, r.stderr
    lines = [" ".join(x.split()) for x in r.stdout.splitlines()]
    assert "taken _posts/2024-03-05-first-light.md (_posts/)" in lines
    assert "skipped about.md (site page (not in _posts/))" in lines
    # skipped: the draft, a post file without a date in its name, about.md, notes/ (the site
    # config's exclude), and five tooling folders
    assert "skipped _posts/-202205262391921712.md (in _posts/ but not named YYYY-MM-DD-title)" in lines
    assert lines[-1] == "5 taken, 9 skipped"
    r = run_cli(cfg, "scan", "j")
    assert r.returncode == 0 and "j: 5 files: 3 new" in r.stdout and "2 held back" in r.stdout
