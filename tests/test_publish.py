"""Publishing in-process: feed rendering rules, archives, article pages, per-category options, WebSub."""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import feedparser
import pytest
from lxml import etree
from sqlalchemy import select
from sqlalchemy import update as update_rows

from aggregator.config import Tuning, load_config
from aggregator.pipeline import update
from aggregator.publish import FeedPlan, build, feed_plans, keep
from aggregator.publish.archive import Page, plan_pages
from aggregator.publish.formats import FeedEnclosure, FeedInfo, FeedItem, render_atom, render_json, render_rss
from aggregator.publish.websub import ping, ping_one
from aggregator.store import Store
from aggregator.store.schema import ENTRIES

A = "{http://www.w3.org/2005/Atom}"
DC = "{http://purl.org/dc/elements/1.1/}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
FH = "{http://purl.org/syndication/history/1.0}"


# ---------------------------------------------------------------- rule checks of our own (RFC 4287, RSS 2.0 profile)


def atom_problems(data: bytes, *, hub: str | None = None) -> list[str]:
    """What RFC 4287 (and the completeness this project promises) requires but the document lacks."""
    root = etree.fromstring(data)
    p: list[str] = []
    if root.tag != A + "feed":
        return [f"root is {root.tag}"]
    for name in ("id", "title", "updated"):
        if root.find(A + name) is None or not (root.findtext(A + name) or "").strip():
            p.append(f"feed lacks {name}")
    rels = {link.get("rel"): link for link in root.findall(A + "link")}
    if "self" not in rels or rels["self"].get("type") != "application/atom+xml":
        p.append("feed lacks rel=self of type application/atom+xml")
    if "alternate" not in rels or rels["alternate"].get("type") != "text/html":
        p.append("feed lacks rel=alternate text/html")
    if hub and (rels.get("hub") is None or rels["hub"].get("href") != hub):
        p.append("feed lacks rel=hub")
    feed_author = root.find(A + "author") is not None
    entries = root.findall(A + "entry")
    ids = [e.findtext(A + "id") for e in entries]
    if len(set(ids)) != len(ids):
        p.append("duplicate entry ids")
    newest = max((datetime.fromisoformat(e.findtext(A + "updated")) for e in entries), default=None)
    if newest and datetime.fromisoformat(root.findtext(A + "updated")) != newest:
        p.append("feed updated is not the newest entry's")
    for e in entries:
        where = e.findtext(A + "id")
        for name in ("id", "title", "updated", "published", "summary"):
            if not (e.findtext(A + name) or "").strip():
                p.append(f"{where} lacks {name}")
        if not feed_author and e.find(f"{A}author/{A}name") is None:
            p.append(f"{where} lacks author")
        content = e.find(A + "content")
        if content is not None and content.get("type") != "html":
            p.append(f"{where} content type is not html")
        alternates = [link for link in e.findall(A + "link") if link.get("rel", "alternate") == "alternate"]
        if content is None and not alternates:
            p.append(f"{where} has neither content nor alternate link")
        if len(alternates) > 1:
            p.append(f"{where} has {len(alternates)} alternate links")
        for c in e.findall(A + "category"):
            if not c.get("term") or not c.get("label"):
                p.append(f"{where} category without term or label")
        for enc in (link for link in e.findall(A + "link") if link.get("rel") == "enclosure"):
            if not enc.get("type") or not (enc.get("length") or "").isdigit():
                p.append(f"{where} enclosure without type or length")
    return p


def rss_problems(data: bytes, *, hub: str | None = None) -> list[str]:
    """What RSS 2.0 and the RSS Advisory Board profile require but the document lacks."""
    root = etree.fromstring(data)
    if root.tag != "rss" or root.get("version") != "2.0":
        return ["not RSS 2.0"]
    ch = root.find("channel")
    p: list[str] = []
    for name in ("title", "link", "description", "lastBuildDate", "ttl", "language"):
        if not (ch.findtext(name) or "").strip():
            p.append(f"channel lacks {name}")
    rels = {link.get("rel"): link for link in ch.findall(A + "link")}
    if "self" not in rels or rels["self"].get("type") != "application/rss+xml":
        p.append("channel lacks atom:link rel=self")
    if hub and "hub" not in rels:
        p.append("channel lacks atom:link rel=hub")
    dates = [ch.findtext("lastBuildDate")] + [i.findtext("pubDate") for i in ch.findall("item")]
    for d in filter(None, dates):
        parsed = email.utils.parsedate_tz(d)
        if parsed is None or parsed[9] is None or not d.split()[3].isdigit() or len(d.split()[3]) != 4:
            p.append(f"bad RFC 822 date {d!r}")
    for item in ch.findall("item"):
        title = item.findtext("title")
        guid = item.find("guid")
        if guid is None or guid.get("isPermaLink") != "false":
            p.append(f"{title}: guid without isPermaLink=false")
        for name in ("title", "link", "description", "pubDate"):
            if not (item.findtext(name) or "").strip():
                p.append(f"{title}: lacks {name}")
        if item.find(DC + "creator") is None:
            p.append(f"{title}: lacks dc:creator")
        if item.find("author") is not None and "@" not in item.findtext("author"):
            p.append(f"{title}: author without e-mail")
        kids = [c.tag for c in item]
        if CONTENT + "encoded" in kids and kids.index("description") > kids.index(CONTENT + "encoded"):
            p.append(f"{title}: description after content:encoded")
        enclosures = item.findall("enclosure")
        if len(enclosures) > 1:
            p.append(f"{title}: more than one enclosure")
        for enc in enclosures:
            if not enc.get("url") or not enc.get("type") or not (enc.get("length") or "").isdigit():
                p.append(f"{title}: enclosure without url, type or length")
    return p


def assert_valid(path: Path, hub: str | None = None) -> feedparser.FeedParserDict:
    data = path.read_bytes()
    parsed = feedparser.parse(data)
    assert parsed.bozo == 0, (path, parsed.get("bozo_exception"))
    problems = atom_problems(data, hub=hub) if path.name == "atom.xml" else rss_problems(data, hub=hub)
    assert problems == [], (path, problems)
    return parsed


# ---------------------------------------------------------------- rendering (pure)

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
FILES = (("atom", "atom.xml"), ("rss", "rss.xml"), ("json", "feed.json"))


def info(**kw) -> FeedInfo:
    items = (
        FeedItem(
            id="urn:uuid:00000000-0000-0000-0000-000000000001",
            title="First <story>",
            link="https://example.org/1",
            published=T0,
            updated=T0 + timedelta(hours=2),
            authors=("Desk",),
            categories=(("jinrong", "金融"),),
            summary="Short text",
            content_html="<p>Body &amp; more</p>",
            image="https://example.org/1.jpg",
            enclosure=FeedEnclosure("https://example.org/1.mp3", 12345, "audio/mpeg"),
            also=(("Other outlet", "https://other.example/1"),),
        ),
        FeedItem(
            id="urn:uuid:00000000-0000-0000-0000-000000000002",
            title="Second",
            link="https://feeds.example.org/a/2.html",
            published=T0 - timedelta(days=1),
            updated=T0 - timedelta(days=1),
            authors=("A", "B"),
            categories=(),
            summary="",
            content_html=None,
        ),
    )
    base = {
        "id": "tag:feeds.example.org,2024:feeds/jinrong",
        "title": "金融 | Test",
        "description": "Finance",
        "home_url": "https://feeds.example.org/index.html#jinrong",
        "base_url": "https://feeds.example.org/",
        "self_urls": {f: f"https://feeds.example.org/jinrong/{n}" for f, n in FILES},
        "language": "zh-CN",
        "author": "Test",
        "category_scheme": "https://feeds.example.org/",
        "items": items,
        "ttl_minutes": 30,
        "icon": "https://feeds.example.org/icon.png",
        "logo": "https://feeds.example.org/logo.png",
        "stylesheet": "../static/feed.xsl",
        "links": {"prev-archive": {f: f"https://feeds.example.org/jinrong/archive/1/{n}" for f, n in FILES}},
        "hub": "https://hub.example.org/",
    }
    return FeedInfo(**(base | kw))


def test_atom_is_complete_and_parses(tmp_path: Path):
    data = render_atom(info())
    assert atom_problems(data, hub="https://hub.example.org/") == []
    d = feedparser.parse(data)
    assert d.bozo == 0
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<?xml-stylesheet type="text/xsl" href="../st')
    rels = {link.rel: link.href for link in d.feed.links}
    assert rels["hub"] == "https://hub.example.org/"
    assert rels["prev-archive"].endswith("/jinrong/archive/1/atom.xml")
    assert d.feed.icon == "https://feeds.example.org/icon.png" and d.feed.logo == "https://feeds.example.org/logo.png"
    assert d.feed.updated == (T0 + timedelta(hours=2)).isoformat()
    first = d.entries[0]
    assert first.title == "First <story>"
    assert first.content[0].type == "text/html" and "Also reported by" in first.content[0].value
    assert first.tags[0].label == "金融" and first.tags[0].term == "jinrong"
    assert [(link.rel, link.get("length")) for link in first.links] == [("alternate", None), ("enclosure", "12345")]
    assert d.entries[1].summary == "Second"  # no content, no summary: the title stands in
    root = etree.fromstring(data)
    assert root.find(A + "entry").find("{http://search.yahoo.com/mrss/}thumbnail").get("url").endswith("1.jpg")


def test_rss_is_complete_and_parses():
    data = render_rss(info())
    assert rss_problems(data, hub="https://hub.example.org/") == []
    d = feedparser.parse(data)
    assert d.bozo == 0
    ch = etree.fromstring(data).find("channel")
    assert ch.findtext("ttl") == "30"
    assert ch.findtext("lastBuildDate") == "Wed, 01 May 2024 10:00:00 +0000"
    assert ch.find("image").findtext("url") == "https://feeds.example.org/logo.png"
    first = ch.find("item")
    enclosure = {"url": "https://example.org/1.mp3", "length": "12345", "type": "audio/mpeg"}
    assert first.find("enclosure").attrib == enclosure
    assert first.findtext(CONTENT + "encoded").startswith("<p>Body &amp; more</p>")
    assert [c.findtext(".") for c in ch.findall("item")[1].findall(DC + "creator")] == ["A", "B"]
    assert ch.findall("item")[1].find(CONTENT + "encoded") is None


def test_archive_document_is_marked():
    page = info(links={"current": {"atom": "https://x.org/c/atom.xml", "rss": "https://x.org/c/rss.xml"}}, archive=True)
    for data in (render_atom(page), render_rss(page)):
        root = etree.fromstring(data)
        assert len(root.findall(f".//{FH}archive")) == 1
        assert feedparser.parse(data).bozo == 0
    d = feedparser.parse(render_atom(page))
    assert {link.rel for link in d.feed.links} >= {"current", "self", "alternate"}


def test_json_feed_1_1():
    doc = json.loads(render_json(info()))
    assert doc["version"] == "https://jsonfeed.org/version/1.1"
    assert doc["feed_url"].endswith("/feed.json") and doc["next_url"].endswith("/archive/1/feed.json")
    assert doc["hubs"] == [{"type": "WebSub", "url": "https://hub.example.org/"}]
    assert doc["icon"].endswith("icon.png") and doc["favicon"].endswith("icon.png")
    assert json.loads(render_json(info(icon=None)))["icon"].endswith("logo.png")
    first, second = doc["items"]
    assert isinstance(first["id"], str) and first["content_html"].startswith("<p>Body")
    assert first["attachments"] == [
        {"url": "https://example.org/1.mp3", "mime_type": "audio/mpeg", "size_in_bytes": 12345}
    ]
    assert second["content_text"] == "Second" and "content_html" not in second
    assert first["date_modified"] == "2024-05-01T10:00:00+00:00"


def test_empty_feed_has_a_fixed_updated_date():
    a = render_atom(info(items=(), links={}, hub=None, stylesheet=None))
    assert b"<updated>2000-01-01T00:00:00+00:00</updated>" in a
    assert render_atom(info(items=(), links={}, hub=None, stylesheet=None)) == a
    assert b"xml-stylesheet" not in a and feedparser.parse(a).bozo == 0


# ---------------------------------------------------------------- pure decisions


def test_plan_pages_appends_and_freezes():
    assert plan_pages([], [], 3) == []
    pages = plan_pages([], [1, 2, 3, 4], 3)
    assert pages == [Page(1, (1, 2, 3), True), Page(2, (4,), False)]
    assert [p.dirname for p in pages] == ["1", "2-1"]
    grown = plan_pages([[1, 2, 3], [4]], [5, 6, 7], 3)
    assert grown[0] == pages[0], "a full page never changes"
    assert grown == [Page(1, (1, 2, 3), True), Page(2, (4, 5, 6), True), Page(3, (7,), False)]
    # A page that was full stays full when the page size grows later.
    assert plan_pages([[1, 2], [3]], [], 5) == [Page(1, (1, 2), True), Page(2, (3,), False)]


def test_keyword_filter():
    plan = FeedPlan("s", "n", 1, "t", "d", None, None, 5, ("atom",), False, include=("Bank",), exclude=("Rumour",))
    assert keep(plan, "Central BANK cuts rates", "", [])
    assert keep(plan, "Rates", "the bank said", [])
    assert keep(plan, "Rates", "", ["bank"])
    assert not keep(plan, "Rates", "nothing", [])
    assert not keep(plan, "Bank rumour mill", "", [])
    assert keep(FeedPlan("s", "n", 1, "t", "d", None, None, 5, ("atom",), False), "anything", "", [])


# ---------------------------------------------------------------- building a real site in-process


def notes_site(tmp_path: Path, n: int, extra_config: str = "", max_items: int = 3) -> Path:
    arts = tmp_path / "articles"
    arts.mkdir(exist_ok=True)
    for i in range(n):
        (arts / f"n{i:02d}.md").write_text(
            f"---\ntitle: 'Note {i}'\ndate: 2022-03-01 09:{i:02d}:00 +0800\ncategories: notes\nauthor: Desk\n---\n"
            f"Body {i} about {'banks' if i % 2 else 'bonds'}.\n",
            encoding="utf-8",
        )
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db/agg.sqlite3"\n'
        f'[output]\ndir = "out"\nbase_url = "http://feeds.example.org/"\ntitle = "T"\nmax_items = {max_items}\n'
        f'formats = ["atom", "rss", "json"]\nicon = "http://feeds.example.org/icon.png"\n{extra_config}\n'
        '[[sources]]\nname = "local"\npath = "articles"\n',
        encoding="utf-8",
    )
    return cfg


def run(cfg: Path, force: bool = False, tuning: Tuning | None = None):
    settings = load_config(cfg)
    if tuning is not None:
        settings = settings.model_copy(update={"tuning": tuning})
    store = Store(settings.database.url)
    try:
        report = update(store, settings)
        if force:
            return build(store, settings, force=True), settings
        return report.build, settings
    finally:
        store.close()


def walk_archives(out: Path, slug: str, fmt: str = "atom.xml") -> tuple[list[str], list[str]]:
    """Follow prev-archive from the current feed: every title reachable, and the pages visited."""
    titles: list[str] = []
    visited: list[str] = []
    url = None
    doc = feedparser.parse((out / slug / fmt).read_bytes())
    while True:
        titles += [e.title for e in doc.entries]
        url = {link.rel: link.href for link in doc.feed.get("links", [])}.get("prev-archive")
        if not url:
            return titles, visited
        path = out / url.removeprefix("http://feeds.example.org/")
        visited.append(path.parent.name)
        doc = feedparser.parse(path.read_bytes())
        assert doc.bozo == 0
        assert doc.feed.get("links") and any(link.rel == "current" for link in doc.feed.links)


def digests(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_archives_keep_every_entry_reachable_and_full_pages_frozen(tmp_path: Path):
    cfg = notes_site(tmp_path, 8)
    run(cfg)
    out = tmp_path / "out"
    titles, visited = walk_archives(out, "notes")
    assert sorted(titles) == sorted(f"Note {i}" for i in range(8))
    assert visited == ["2-2", "1"]
    assert len(feedparser.parse((out / "notes" / "atom.xml").read_bytes()).entries) == 3
    for fmt in ("atom.xml", "rss.xml"):
        assert_valid(out / "notes" / "archive" / "1" / fmt)
        assert_valid(out / "notes" / "archive" / "2-2" / fmt)
        assert walk_archives(out, "notes", fmt)[1] == ["2-2", "1"]
    assert json.loads((out / "notes/feed.json").read_text())["next_url"].endswith("/notes/archive/2-2/feed.json")
    frozen = (out / "notes/archive/1/atom.xml").read_bytes()
    assert b"next-archive" in frozen and b"<fh:archive/>" in frozen

    # Five newer notes: the open page fills up (its URL changes), a third fills, a fourth opens;
    # page 1 keeps its bytes.
    notes_site(tmp_path, 13)
    first_page = digests(out / "notes/archive/1")
    run(cfg)
    assert digests(out / "notes/archive/1") == first_page
    titles, visited = walk_archives(out, "notes")
    assert visited == ["4-1", "3", "2", "1"]
    assert sorted(titles) == sorted(f"Note {i}" for i in range(13))
    assert not (out / "notes/archive/2-2").exists(), "superseded open pages are removed"

    # Even a forced rebuild leaves full pages alone, and an unchanged build writes nothing.
    before = digests(out)
    report, _ = run(cfg, force=True)
    assert digests(out) == before
    assert report.rebuilt == report.feeds and report.written == 0


def test_article_pages_options_and_filters(tmp_path: Path):
    cfg = notes_site(
        tmp_path,
        6,
        '[categories]\nNotes = "notes"\n[categories.notes]\ntitle = "Field notes"\ndescription = "Jottings"\n'
        'max_items = 10\nformats = ["atom", "rss"]\nsummary_only = true\ninclude = ["bank"]\nexclude = ["Note 5"]\n'
        'icon = "http://feeds.example.org/notes.png"\n',
    )
    run(cfg)
    out = tmp_path / "out"
    notes = assert_valid(out / "notes" / "atom.xml")
    assert notes.feed.title == "Field notes" and notes.feed.subtitle == "Jottings"
    assert notes.feed.icon == "http://feeds.example.org/notes.png"
    assert [e.title for e in notes.entries] == ["Note 3", "Note 1"], "include banks, exclude Note 5"
    assert all("content" not in e for e in notes.entries), "summary only"
    assert not (out / "notes" / "feed.json").exists(), "per-category formats"
    assert_valid(out / "notes" / "rss.xml")
    everything = assert_valid(out / "all" / "atom.xml")
    assert everything.entries[0].content[0].value.startswith("<p>Body 5")
    assert everything.feed.icon == "http://feeds.example.org/icon.png"

    # Entries without an original URL get a readable page at their permalink.
    link = everything.entries[0].link
    assert link.startswith("http://feeds.example.org/a/") and link.endswith(".html")
    page = out / link.removeprefix("http://feeds.example.org/")
    html = page.read_text(encoding="utf-8")
    assert "<h1>Note 5</h1>" in html and "Body 5 about banks." in html and 'href="../index.html#notes"' in html
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="notes"' in index and "6 篇" in index and "Note 5" in index  # [output] language is zh-CN
    assert '<p class="description">Jottings</p>' in index
    assert (out / "static" / "feed.xsl").read_bytes().startswith(b'<?xml version="1.0"')

    # Withdrawing the file removes its page; the next build touches nothing else.
    (tmp_path / "articles" / "n05.md").unlink()
    run(cfg)
    assert not page.exists()
    before = digests(out)
    report, _ = run(cfg)
    assert report.written == 0 and digests(out) == before


def test_also_reported_by_from_dedup_clusters(tmp_path: Path):
    cfg = notes_site(tmp_path, 2, "[dedup]\nenabled = false\n")
    (tmp_path / "articles" / "dup.md").write_text(
        "---\ntitle: 'Note 1 elsewhere'\ndate: 2022-03-01 08:00:00 +0800\ncategories: notes\n---\nSame.\n"
        "\n<https://other.example/story>\n",
        encoding="utf-8",
    )
    run(cfg)
    settings = load_config(cfg)
    store = Store(settings.database.url)
    try:
        with store.engine.begin() as c:
            rows = {r.title: r for r in c.execute(select(ENTRIES))}
            dup = update_rows(ENTRIES).where(ENTRIES.c.id == rows["Note 1 elsewhere"].id)
            c.execute(dup.values(canonical_id=rows["Note 1"].id))
        build(store, settings)
    finally:
        store.close()
    d = feedparser.parse((tmp_path / "out" / "notes" / "atom.xml").read_bytes())
    assert [e.title for e in d.entries] == ["Note 1", "Note 0"]
    # In the site's language (zh-CN by default).
    assert '其他报道来源： <a href="https://other.example/story">local</a>' in d.entries[0].content[0].value


def test_feed_plans_fall_back_to_output_settings(tmp_path: Path):
    settings = load_config(notes_site(tmp_path, 0, '[categories]\n"Fin" = "金融"\n'))
    assert settings.category_aliases == {"Fin": "金融"}
    assert settings.canonical_category("Fin") == "金融"
    assert settings.category_options("Fin").title is None

    class C:
        id, name, slug = 7, "金融", "jinrong"

    all_plan, fin = feed_plans(settings, [C()])
    assert all_plan.slug == "all" and all_plan.title == "T" and all_plan.logo == "http://feeds.example.org/icon.png"
    assert (fin.title, fin.max_items, fin.formats, fin.summary_only) == ("金融 | T", 3, ("atom", "rss", "json"), False)


# ---------------------------------------------------------------- WebSub


class Hub:
    """A stub WebSub hub on 127.0.0.1 that records every publish ping."""

    def __init__(self, status: int = 204):
        self.pings: list[dict[str, list[str]]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                hub.pings.append(parse_qs(self.rfile.read(length).decode()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def urls(self) -> list[str]:
        return sorted(u for p in self.pings for u in p["hub.url"])


@pytest.fixture
def hub():
    h = Hub()
    yield h
    h.close()


def test_ping_one_and_failures(hub: Hub, caplog):
    assert ping_one(hub.url, "http://x.org/a/atom.xml", 5)
    assert hub.pings == [{"hub.mode": ["publish"], "hub.url": ["http://x.org/a/atom.xml"]}]
    refusing = Hub(status=500)
    try:
        assert not ping_one(refusing.url, "http://x.org/a/atom.xml", 5)
    finally:
        refusing.close()
    assert not ping_one("http://127.0.0.1:9/", "http://x.org/a/atom.xml", 2)
    assert "unreachable" in caplog.text and "HTTP 500" in caplog.text
    assert ping(hub.url, []) == 0


def test_build_pings_the_hub_only_for_changed_feeds(tmp_path: Path, hub: Hub):
    cfg = notes_site(tmp_path, 2, f'[websub]\nhub = "{hub.url}"\n')
    report, _ = run(cfg)
    assert report.pinged == len(hub.urls) == 6
    assert hub.urls == sorted(f"http://feeds.example.org/{s}/{f}" for s in ("all", "notes")
                              for f in ("atom.xml", "rss.xml", "feed.json"))  # fmt: skip
    assert_valid(tmp_path / "out" / "notes" / "atom.xml", hub=hub.url)
    assert_valid(tmp_path / "out" / "notes" / "rss.xml", hub=hub.url)
    hub.pings.clear()
    run(cfg)
    assert hub.pings == [], "nothing changed, nothing pinged"


def test_unreachable_hub_never_fails_the_build(tmp_path: Path):
    cfg = notes_site(tmp_path, 1, '[websub]\nhub = "http://127.0.0.1:9/"\ntimeout = "2s"\n')
    report, _ = run(cfg)
    assert report.pinged == 0 and report.changed
    assert (tmp_path / "out" / "notes" / "atom.xml").exists()


def test_worker_processes_and_a_tiny_cache_render_the_same_bytes(tmp_path: Path, monkeypatch):
    """A big build renders in worker processes, each with a bounded cache of items and elements;
    neither may change a byte of what is written (nor which files are)."""

    cfg = notes_site(tmp_path, 40, max_items=4)
    (tmp_path / "articles" / "page.md").write_text("---\ntitle: No link\ndate: 2022-03-02\n---\nHosted here.\n")
    _, settings = run(cfg)  # in this process, with the default cache
    reference = {k: v[0] for k, v in digests(tmp_path / "out").items()}
    assert sum("/archive/" in k for k in reference) > 20 and any(k.startswith("a/") for k in reference)

    for parallel_min, cache in ((0, 3), (10**9, 1)):
        other = tmp_path / f"out-{parallel_min}-{cache}"
        tuning = Tuning(render_parallel_min=parallel_min, render_cache_entries=cache)
        store = Store(settings.database.url)
        try:
            report = build(
                store,
                settings.model_copy(
                    update={"output": settings.output.model_copy(update={"dir": other}), "tuning": tuning}
                ),
                force=True,
            )
        finally:
            store.close()
        assert {k: v[0] for k, v in digests(other).items()} == reference
        assert report.written == len(reference)


def test_render_jobs_are_ordered_oldest_first_and_split_into_even_runs():
    from aggregator.publish.render import FeedJob, order, split

    plan = FeedPlan("all", "All", None, "T", "", None, None, 3, ("atom",), False)
    jobs = [FeedJob(plan, ids) for ids in [(1, 2), (9, 10, 11), (5,), (3, 4)]]
    position = {i: i for i in range(12)}  # id == rank: 0 is the newest
    assert [j.ids for j in order(jobs, position)] == [(9, 10, 11), (5,), (3, 4), (1, 2)]
    # An entry missing from the `all` listing (filtered out there) sorts as the oldest.
    assert order([FeedJob(plan, (1,)), FeedJob(plan, (99,))], position)[0].ids == (99,)

    runs = split([FeedJob(plan, tuple(range(n))) for n in (5, 5, 5, 5, 1, 9)], 2)
    assert [[j.size for j in r] for r in runs] == [[5, 5, 5], [5, 1, 9]]
    assert split([], 4) == [] and len(split(jobs, 10)) == len(jobs)


def test_pages_rendered_during_dedup_match_a_build_after_it(tmp_path: Path, monkeypatch):
    """`update` hands article pages to the render workers before dedup runs. Dedup then hides
    one entry that has a page (an exact copy) and lends its category to the one it keeps:
    the hidden page must go, unrecorded, and the kept one show both categories, exactly as a
    build that starts after dedup writes them."""
    import os

    from aggregator.publish import pages, render

    if (os.cpu_count() or 1) < 2:
        pytest.skip("render workers need two cores")
    workers = Tuning(render_parallel_min=0, pages_per_task=2, early_hold=0)  # every page task handed over early
    calls: list[int] = []
    real = render.Work.pages

    def spy(self, todo, hold=None):
        real(self, todo, hold)
        calls.append(hold is not None and self.parallel)
        for f in self._futures:  # rendered before dedup runs, not just handed over
            f.result()

    monkeypatch.setattr(render.Work, "pages", spy)
    cfg = notes_site(tmp_path, 5)
    body = "The harbour's third terminal opens in March; cranes, rail links and berths are ready. " * 3
    for name, hour, category in (("a.md", 9, "ports"), ("b.md", 10, "finance")):
        (tmp_path / "articles" / name).write_text(
            f"---\ntitle: Harbour terminal opens\ndate: 2022-03-02 {hour}:00:00 +0800\ncategories: {category}\n---\n"
            f"{body}\n",
            encoding="utf-8",
        )
    _, settings = run(cfg, tuning=workers)
    assert calls[0] is True, "pages were handed to workers before dedup"
    store = Store(settings.database.url)
    try:
        rows = {r.key: r for r in store.listing(None, None)}
        recorded = set(store.page_signatures())
        with store.engine.connect() as c:
            hidden = c.execute(select(ENTRIES).where(ENTRIES.c.key == "b.md")).one()
        assert "b.md" not in rows and hidden.canonical_id == rows["a.md"].id
        out = tmp_path / "out"
        assert not pages.page_path(out, hidden.uid).exists() and hidden.uid not in recorded
        kept = pages.page_path(out, rows["a.md"].uid).read_text(encoding="utf-8")
        assert "finance" in kept and "ports" in kept and rows["a.md"].uid in recorded

        other = tmp_path / "out-after"
        in_process = Tuning(render_parallel_min=10**9)
        build(store, settings.model_copy(update={"output": settings.output.model_copy(update={"dir": other}),
                                                 "tuning": in_process}))  # fmt: skip
    finally:
        store.close()
    assert digests(other).keys() == digests(out).keys()
    assert {k: v[0] for k, v in digests(other).items()} == {k: v[0] for k, v in digests(out).items()}
    report, _ = run(cfg)
    assert report.written == 0


def test_a_page_queued_again_is_not_rendered_from_its_older_task(tmp_path: Path, monkeypatch):
    """A page handed over before dedup and due again after it (its categories changed) must be
    rendered from the newer task only: it leaves the older task if that one has not started."""
    import os

    from aggregator.publish import render

    if (os.cpu_count() or 1) < 2:
        pytest.skip("render workers need two cores")
    _, settings = run(notes_site(tmp_path, 2))
    settings = settings.model_copy(update={"tuning": Tuning(render_parallel_min=0)})
    store = Store(settings.database.url)
    try:
        with render.Work(store, settings, {}) as work:
            work.pages([("u1", 1, "old"), ("u2", 2, "s2")], hold=10**6)  # queued, none handed over
            assert work.parallel
            work.pages([("u1", 1, "new")], hold=10**6)
            queued = work.queued()
    finally:
        store.close()
    assert queued == [("u2", 2, "s2"), ("u1", 1, "new")]
