"""Republishing rules, feed categories and full text end to end: the real CLI in a subprocess,
feeds and article pages served over HTTP on 127.0.0.1, a real SQLite store."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from conftest import run_cli
from lxml import etree

PAGES = Path(__file__).resolve().parent / "data" / "pages"
RSS_T, HTML_T = "application/rss+xml", "text/html; charset=utf-8"
ATOM = "{http://www.w3.org/2005/Atom}"


def rss(title: str, items: list[dict]) -> str:
    out = []
    for i, it in enumerate(items):
        cats = "".join(f"<category>{html.escape(c)}</category>" for c in it.get("cats", ()))
        body = f"<content:encoded><![CDATA[{it['content']}]]></content:encoded>" if it.get("content") else ""
        out.append(
            f"<item><title>{html.escape(it['title'])}</title><link>{html.escape(it['link'])}</link>"
            f"<guid>{title}-{i}</guid><pubDate>Mon, 02 Sep 2024 {8 + i:02d}:00:00 +0000</pubDate>{cats}"
            f"<description>{html.escape(it.get('desc', it['title'] + ' in a few words.'))}</description>{body}</item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        f"<channel><title>{title}</title><link>http://w.example/</link><description>d</description>"
        + "".join(out)
        + "</channel></rss>"
    )


def config(tmp: Path, body: str) -> Path:
    (tmp / "db").mkdir(exist_ok=True)
    cfg = tmp / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db/agg.sqlite3"\n'
        '[output]\ndir = "out"\nbase_url = "http://feeds.example.org/"\ntitle = "T"\nlanguage = "en"\n'
        f"[fetch]\ntimeout = 5\nallow_private = true\n\n{body}",
        encoding="utf-8",
    )
    return cfg


def source(name: str, url: str, cats=("World",), extra: str = "") -> str:
    return f'[[sources]]\nname = "{name}"\nurl = "{url}"\ncategories = {json.dumps(list(cats))}\n{extra}\n\n'


def entries(path: Path) -> dict[str, dict]:
    """title → {content, summary, links} of an Atom feed; {} when there is none."""
    if not path.is_file():
        return {}
    out = {}
    for e in etree.parse(str(path)).getroot().iter(f"{ATOM}entry"):
        content, summary = e.find(f"{ATOM}content"), e.find(f"{ATOM}summary")
        out[e.findtext(f"{ATOM}title")] = {
            "content": content.text if content is not None else "",
            "summary": summary.text if summary is not None else "",
            "links": [x.get("href") for x in e.findall(f"{ATOM}link") if x.get("rel", "alternate") == "alternate"],
        }
    return out


def requests_to(server, path: str) -> int:
    return sum(1 for req, _ in server.log if req.path == path)


# ---------------------------------------------------------------- rules


WIRE = [
    {"title": "Harbour cranes return", "link": "/news/harbour?utm_source=x&id=7"},
    {"title": "Sponsored: buy now", "link": "/promo/1"},
    {"title": "[Wire] Council approves bridge", "link": "/news/bridge",
     "content": '<p>BODY-MARKER text.</p><div class="ad">AD-MARKER</div><p class="share">SHARE-MARKER</p>'
                "<p>TAIL-MARKER text.</p>"},
]  # fmt: skip
THIRD = [{"title": "Keep this one", "link": "/third/1"}, {"title": "Drop this one", "link": "/third/2"},
         {"title": "Keep that lighthouse", "link": "/third/3"}]  # fmt: skip
BLOCK = '[[rules]]\nwhen = { title = "(?i)sponsored" }\naction = "block"\n\n'
REWRITES = """
[[rules]]
sources = ["wire"]
action = "remove"
selector = "div.ad, p.share"

[[rules]]
sources = ["wire"]
action = "replace"
field = "title"
pattern = "^\\\\[Wire\\\\] "
replacement = ""

[[rules]]
when = { title = "Harbour", url = "id=7" }
action = "add_category"
category = "Picked"

[[rules]]
sources = ["third"]
when = { title = "^Keep" }
action = "keep"

[[rules]]
sources = ["third"]
when = { title = "lighthouse" }
action = "set_category"
category = "Lights"
"""


def serve_feeds(server, **feeds: list[dict]) -> dict[str, str]:
    urls = {}
    for name, items in feeds.items():
        absolute = [{**it, "link": server.url_for(it["link"])} for it in items]
        server.expect_request(f"/{name}.xml").respond_with_data(rss(name, absolute), content_type=RSS_T)
        urls[name] = server.url_for(f"/{name}.xml")
    return urls


def test_every_rule_kind_and_a_removed_block_brings_entries_back_without_a_refetch(tmp_path, server):
    urls = serve_feeds(server, wire=WIRE, third=THIRD)
    sources = source("wire", urls["wire"]) + source("third", urls["third"], ["Kept"])
    cfg = config(tmp_path, sources + BLOCK + REWRITES)
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    world = entries(out / "world" / "atom.xml")
    assert set(world) == {"Harbour cranes return", "Council approves bridge"}  # blocked, title rewritten
    everything = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"Sponsored" not in everything and b"AD-MARKER" not in everything and b"SHARE-MARKER" not in everything
    bridge = world["Council approves bridge"]["content"]
    assert "BODY-MARKER" in bridge and "TAIL-MARKER" in bridge
    assert set(entries(out / "picked" / "atom.xml")) == {"Harbour cranes return"}
    assert set(entries(out / "kept" / "atom.xml")) == {"Keep this one"}  # the lighthouse moved to Lights only
    assert set(entries(out / "lights" / "atom.xml")) == {"Keep that lighthouse"}
    assert "Drop this one" not in entries(out / "all" / "atom.xml")
    assert world["Harbour cranes return"]["links"] == [server.url_for("/news/harbour") + "?id=7"]

    shown = run_cli(cfg, "rules", "test", server.url_for("/promo/1"))
    assert shown.returncode == 0 and "rules[0] (block): fires" in shown.stdout
    assert "result: blocked by rules[0] (block)" in shown.stdout
    kept = run_cli(cfg, "rules", "test", server.url_for("/third/2"))
    assert "result: not kept by rules[4] (keep)" in kept.stdout
    assert run_cli(cfg, "rules", "test", "http://nowhere.example/").returncode == 1

    fetched = requests_to(server, "/wire.xml")
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(BLOCK, ""), encoding="utf-8")
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    assert "Sponsored: buy now" in entries(out / "world" / "atom.xml")
    assert requests_to(server, "/wire.xml") == fetched  # judged again from the store, not refetched
    after = run_cli(cfg, "rules", "test", server.url_for("/promo/1"))
    assert "result: shown" in after.stdout


def test_a_blocked_entry_leaves_its_cluster_both_ways(tmp_path, server):
    text = "<p>" + "Ferries carried more. " * 40 + "</p>"
    story = [{"title": "Ferry record", "link": "/news/ferry", "content": text}]
    urls = serve_feeds(server, wire=story, mirror=story)
    sources = source("wire", urls["wire"]) + source("mirror", urls["mirror"])
    head = '[dedup]\nsource_priority = ["wire", "mirror"]\n\n'
    block_mirror = '[[rules]]\nsources = ["mirror"]\naction = "block"\n\n'
    cfg = config(tmp_path, head + sources + block_mirror)
    all_feed = tmp_path / "out" / "all" / "atom.xml"

    assert run_cli(cfg, "update").returncode == 0
    [(title, item)] = entries(all_feed).items()
    assert title == "Ferry record" and "Also reported by" not in item["content"]  # not by a hidden entry

    cfg.write_text(cfg.read_text(encoding="utf-8").replace(block_mirror, ""), encoding="utf-8")
    assert run_cli(cfg, "update").returncode == 0
    [item] = entries(all_feed).values()
    assert "Also reported by" in item["content"] and "mirror" in item["content"]

    block_wire = '[[rules]]\nsources = ["wire"]\naction = "block"\n\n'
    cfg.write_text(cfg.read_text(encoding="utf-8") + block_wire, encoding="utf-8")
    assert run_cli(cfg, "update").returncode == 0
    [item] = entries(all_feed).values()  # the mirror's copy takes the place of the hidden one
    assert "Also reported by" not in item["content"]
    assert len(entries(tmp_path / "out" / "world" / "atom.xml")) == 1


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        ('when = { title = "(zq7" }\naction = "block"', "rules[0].when.title"),
        ('action = "explode"', "explode"),
        ('when = { colour = "red" }\naction = "block"', "rules[0].when.colour"),
        ('sources = ["nope"]\naction = "block"', "rules[0].sources"),
        ('action = "remove"\nselector = "div[["', "rules[0].selector"),
        ('action = "add_category"', "rules[0].category"),
    ],
)
def test_a_bad_rule_exits_2_naming_it(tmp_path, rule, named):
    cfg = config(tmp_path, source("wire", "http://127.0.0.1:9/f.xml") + f"[[rules]]\n{rule}\n")
    r = run_cli(cfg, "update")
    assert r.returncode == 2 and named in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("extra", "named"),
    [('full_text = "div[["', "sources[0].full_text"), ('feed_categories = "all"', "sources[0].feed_categories")],
)
def test_bad_source_options_exit_2_naming_them(tmp_path, extra, named):
    cfg = config(tmp_path, source("wire", "http://127.0.0.1:9/f.xml", extra=extra))
    r = run_cli(cfg, "update")
    assert r.returncode == 2 and named in r.stderr, r.stderr


# ---------------------------------------------------------------- feed categories


def test_feed_categories_map_keep_and_ignore_and_the_dropped_terms_listed(tmp_path, server):
    mapped = [
        {"title": "Match report", "link": "/m/1", "cats": ["sport", "随机标签"]},
        {"title": "Budget day", "link": "/m/2", "cats": ["economy", "随机标签", "misc"]},
        {"title": "Cup final", "link": "/m/3", "cats": ["体育"]},
    ]
    urls = serve_feeds(server, mapped=mapped, kept=[{"title": "Concert", "link": "/k/1", "cats": ["music"]}],
                       ignored=[{"title": "Rain", "link": "/i/1", "cats": ["weather"]}])  # fmt: skip
    body = (
        '[categories]\n"体育" = "Sport"\n"sport" = "Sport"\n[categories.Economy]\ntitle = "Economy"\n\n'
        + source("mapped", urls["mapped"], ["Mapped"])
        + source("kept", urls["kept"], ["Kept"], 'feed_categories = "keep"')
        + source("ignored", urls["ignored"], ["Ignored"], 'feed_categories = "ignore"')
    )
    cfg = config(tmp_path, body)
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    folders = {p.name for p in out.iterdir() if (p / "atom.xml").is_file()}
    assert folders == {"all", "mapped", "kept", "ignored", "sport", "economy", "music"}
    assert set(entries(out / "sport" / "atom.xml")) == {"Match report", "Cup final"}  # a mapping table
    assert set(entries(out / "economy" / "atom.xml")) == {"Budget day"}  # named in [categories], any case

    listed = run_cli(cfg, "categories")
    assert listed.returncode == 0, listed.stderr
    lines = {ln.split()[0]: ln.split()[1:] for ln in listed.stdout.splitlines() if ln.strip()}
    assert lines["随机标签"][:2] == ["2", "mapped"] and lines["misc"][:2] == ["1", "mapped"]
    assert "weather" not in listed.stdout and "music/atom.xml" in listed.stdout


# ---------------------------------------------------------------- full text


def test_full_text_fetches_each_page_once_and_keeps_the_teaser_when_it_cannot(tmp_path, server):
    for path, name in {"/a/en.html": "bridge-en.html", "/a/zh.html": "port-zh.html"}.items():
        server.expect_request(path).respond_with_data((PAGES / name).read_bytes(), content_type=HTML_T)
    # A page of its own for the selector (the same article twice would be one story to dedup).
    chosen = "<p>The lighthouse keepers' union met on Friday to discuss the new rota for the winter.</p>" * 3
    server.expect_request("/s/en.html").respond_with_data(
        f'<html><body><nav>Daily Ledger</nav><div class="article-body">{chosen}</div>'
        "<div class='comments'>Reader comment</div></body></html>", content_type=HTML_T)  # fmt: skip
    server.expect_request("/a/gone.html").respond_with_data("gone", status=404)
    teasers = [
        {"title": "Bridge approved", "link": "/a/en.html", "desc": "TEASER-EN One line."},
        {"title": "港口吞吐量创新高", "link": "/a/zh.html", "desc": "TEASER-ZH 一句话。"},
        {"title": "Gone story", "link": "/a/gone.html", "desc": "TEASER-404 The page is gone."},
    ]
    urls = serve_feeds(server, teasers=teasers, picked=[{"title": "By selector", "link": "/s/en.html"}])
    cfg = config(tmp_path, source("teasers", urls["teasers"], ["Teasers"], "full_text = true")
                 + source("picked", urls["picked"], ["Picked"], 'full_text = "div.article-body"'))  # fmt: skip
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    got = entries(tmp_path / "out" / "teasers" / "atom.xml")
    en, zh, gone = got["Bridge approved"], got["港口吞吐量创新高"], got["Gone story"]
    assert "eleven to four" in en["content"] and "SITE-FOOTER-MARKER" not in en["content"]
    assert "Reader comment" not in en["content"] and "TEASER-EN" in en["summary"]
    assert "二百万标准箱" in zh["content"] and "SITE-FOOTER-MARKER" not in zh["content"]
    assert "TEASER-404" in gone["content"] and "TEASER-404" in gone["summary"]
    assert "full text " + server.url_for("/a/gone.html") + ": HTTP 404" in r.stderr
    picked = entries(tmp_path / "out" / "picked" / "atom.xml")["By selector"]["content"]
    assert "lighthouse keepers" in picked and "Daily Ledger" not in picked and "Reader comment" not in picked

    feed = (tmp_path / "out" / "teasers" / "atom.xml").read_bytes()
    r = run_cli(cfg, "fetch")  # every feed again, now: its pages come from the cache
    assert r.returncode == 0, r.stderr
    assert run_cli(cfg, "build").returncode == 0
    for path in ("/a/en.html", "/a/zh.html", "/a/gone.html", "/s/en.html"):
        assert requests_to(server, path) == 1, path
    assert requests_to(server, "/teasers.xml") == 2
    assert (tmp_path / "out" / "teasers" / "atom.xml").read_bytes() == feed


# ---------------------------------------------------------------- article folders


def test_rules_apply_to_article_folders_too(site):
    cfg = site / "config.toml"
    cfg.write_text(
        cfg.read_text(encoding="utf-8")
        + '\n[[rules]]\nwhen = { title = "服贸会" }\naction = "replace"\nfield = "title"\npattern = "服贸会"\n'
        'replacement = "SERVICES-FAIR"\n\n[[rules]]\nsources = ["local"]\nwhen = { title = "SERVICES-FAIR" }\n'
        'action = "add_category"\ncategory = "Fair"\n\n'
        '[[rules]]\nwhen = { title = "卫生健康与工业" }\naction = "block"\n',
        encoding="utf-8",
    )
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    fair = entries(site / "out" / "fair" / "atom.xml")
    assert fair and all("SERVICES-FAIR" in t for t in fair)  # rewritten where the file was read
    everything = b"".join(p.read_bytes() for p in (site / "out").rglob("*.xml"))
    assert "卫生健康与工业".encode() not in everything  # blocked like a feed entry
