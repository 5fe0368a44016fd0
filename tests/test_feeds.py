"""Feed documents → entries: every RSS/Atom version, JSON Feed, encodings, links, identity policy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.model import Enclosure, Entry
from aggregator.sources.feeds import (
    FeedContext,
    FeedError,
    ParsedItem,
    assign_keys,
    choose_identity,
    item_key,
    parse_feed,
)
from aggregator.sources.jsonfeed import parse_json_feed

DATA = Path(__file__).parent / "data" / "feeds"
ROOT = Path(__file__).resolve().parent.parent


def parse(name: str, url: str = "http://host.test/feeds/x.xml", headers: dict | None = None, **ctx):
    return parse_feed((DATA / name).read_bytes(), headers or {}, FeedContext("s", url, **ctx))


# ---------------------------------------------------------------- golden files
# Each sample in tests/data/feeds/ beside the normalized result it must produce, in golden/.
# `python tests/test_feeds.py` rewrites them after an intended change: review the diff, the
# golden files are the specification.

GOLDEN = DATA / "golden"
SAMPLES = sorted(p.name for p in DATA.iterdir() if p.is_file() and not p.name.startswith("bomb"))


def normalized_feed(name: str) -> dict:
    ctype = "application/feed+json" if name.endswith(".json") else "application/xml"
    f = parse(
        name, f"http://feeds.test/{name}", {"Content-Type": ctype}, categories=("remote",), aliases={"finance": "金融"}
    )
    return {
        "title": f.title,
        "flag": f.flag,
        "hint": f.hint,
        "items": [
            {
                "key": item_key(i, "guid"),
                "link_key": item_key(i, "link"),
                "title": e.title,
                "link": e.link,
                "published": e.published.isoformat() if e.published else None,
                "updated": e.updated.isoformat() if e.updated else None,
                "authors": list(e.authors),
                "categories": list(e.categories),
                "outlet": e.outlet,
                "image": e.image,
                "enclosure": [e.enclosure.url, e.enclosure.type, e.enclosure.length] if e.enclosure else None,
                "summary": e.summary,
                "content_html": e.content_html,
            }
            for i in f.items
            for e in [i.entry]
        ],
    }


def test_every_sample_has_a_golden_file():
    assert sorted(p.name[: -len(".golden.json")] for p in GOLDEN.glob("*.golden.json")) == SAMPLES


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_matches_golden(name: str):
    expected = json.loads((GOLDEN / f"{name}.golden.json").read_text(encoding="utf-8"))
    assert normalized_feed(name) == expected


def test_rss_091_latin1_entities():
    f = parse("rss091.xml")
    assert f.title == "Netscape-era news"
    [a, b] = f.items
    assert a.entry.title == "Café opens in town"
    assert a.entry.content_html == "The café serves <b>coffee</b>."
    assert a.guid is None and a.link == "http://old.example.com/news/cafe.html"
    assert a.entry.published is None  # no date: the store uses first-seen time
    assert b.entry.summary == "Plain description."


def test_rss_092_untitled_item_and_image_enclosure():
    f = parse("rss092.xml", categories=("音乐",), aliases={"Music": "音乐"})
    first = f.items[0].entry
    assert first.title == "An item with no title, only a description and a link."
    assert first.image == "http://ninetytwo.example.com/cover.jpg"
    assert first.categories == ("音乐",)  # alias applied, then merged with the source's


def test_rss_10_rdf_prefers_full_content_and_sanitizes():
    f = parse("rss10.rdf", url="http://rdf.example.com/index.rdf")
    a = f.items[0].entry
    assert f.hint == 12 * 3600  # sy:updatePeriod daily, frequency 2
    assert "<script" not in a.content_html and "Full content of A" in a.content_html
    assert 'href="http://rdf.example.com/more"' in a.content_html
    assert a.summary == "Short summary of A"
    assert a.published == datetime(2022, 9, 5, 1, 30, tzinfo=UTC)
    assert a.authors == ("Zhang San",)
    assert a.categories == ("Economy",)
    assert f.items[0].guid == "http://rdf.example.com/a"


def test_rss_20_dates_authors_thumbnail_ttl():
    f = parse("rss20.xml", url="https://two.example.com/feed.xml", categories=("markets",), aliases={"finance": "金融"})
    assert f.hint == 7200
    one, two = (i.entry for i in f.items)
    assert one.title == "Markets rally & close higher"
    assert one.published == datetime(2022, 9, 5, 1, 0, tzinfo=UTC)  # +0800 honoured
    assert one.authors == ("Li Si",)
    assert one.categories == ("Markets", "金融", "markets")
    assert one.image == "https://two.example.com/img/rally.jpg"
    assert 'src="https://two.example.com/img/chart.png"' in one.content_html and "onerror" not in one.content_html
    assert one.outlet == "RSS 2.0 channel"
    assert f.items[0].guid == "two-1"
    assert two.published == datetime(2022, 9, 4, 18, 0, tzinfo=UTC)


def test_atom_03():
    f = parse("atom03.xml")
    e = f.items[0].entry
    assert e.title == "Atom 0.3 entry"
    assert e.content_html == "<p>Escaped <em>HTML</em> content</p>"
    assert e.published == datetime(2022, 9, 5, 6, 0, tzinfo=UTC)
    assert e.updated == datetime(2022, 9, 5, 12, 0, tzinfo=UTC)
    assert e.authors == ("Old Atom",)  # the feed's author when the entry names none
    assert f.items[0].guid == "tag:zero3.example.com,2022:1"


def test_atom_10_xml_base_and_text_content():
    f = parse("atom10.xml", url="https://atom.example.com/blog/feed.atom")
    assert f.title == "Atom 1.0 feed"  # type="html" title as plain text
    one, two = (i.entry for i in f.items)
    assert one.link == "https://atom.example.com/blog/posts/one"  # against the feed's xml:base
    assert 'href="https://atom.example.com/other/rel/link"' in one.content_html  # the content's own xml:base
    assert one.image == "https://atom.example.com/images/one.png"
    assert one.authors == ("Wang Wu", "Zhao Liu")
    assert one.categories == ("Technology",)
    assert one.updated == datetime(2022, 9, 5, 2, 0, tzinfo=UTC)
    assert one.summary == "The summary"
    # Only <updated>: that is its publication date; text content is escaped, paragraphs kept.
    assert two.published == datetime(2022, 9, 3, 10, 0, tzinfo=UTC) and two.updated is None
    assert two.content_html == "<p>Line one &lt;not a tag&gt;</p><p>Second paragraph</p>"


def test_gb2312_declared_gbk_written():
    f = parse("gb2312.xml")
    e = f.items[0].entry
    assert e.title == "央行发布最新货币政策报告"
    assert "朱镕基" in e.content_html  # 镕 is GBK, outside GB2312: decoded with the superset
    assert e.categories == ("财经",)
    assert f.flag is None


def test_gb_charset_in_http_header():
    body = (DATA / "gb2312.xml").read_bytes().replace(b'encoding="gb2312"', b"")
    f = parse_feed(body, {"Content-Type": "text/xml; charset=GB2312"}, FeedContext("s", "http://h.test/"))
    assert f.items[0].entry.title == "央行发布最新货币政策报告"


def test_relative_links_resolve_against_feed_url():
    f = parse("relative.xml", url="http://host.test/feeds/relative.xml")
    e = f.items[0].entry
    assert e.link == "http://host.test/posts/rel-1"
    assert 'href="http://host.test/about"' in e.content_html
    assert 'src="http://host.test/feeds/img/a.png"' in e.content_html


def test_relative_content_location_header_is_the_base():
    f = parse("relative.xml", url="http://host.test/feeds/relative.xml", headers={"Content-Location": "/v2/feed.xml"})
    assert 'src="http://host.test/v2/img/a.png"' in f.items[0].entry.content_html


def test_items_without_guid_get_link_then_hash_identity():
    f = parse("noguid.xml")
    keys = [item_key(i, "guid") for i in f.items]
    assert keys[:2] == ["link:http://noguid.example.com/1", "link:http://noguid.example.com/2"]
    assert keys[2].startswith("hash:")
    again = parse("noguid.xml")
    assert [item_key(i, "guid") for i in again.items] == keys  # stable across fetches


def test_malformed_xml_is_ingested_with_a_flag():
    f = parse("malformed.xml")
    assert [i.guid for i in f.items] == ["bad-1", "bad-2"]
    assert f.flag and "not well-formed" in f.flag


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html><body><p>Not a feed</p></body></html>", "not an RSS, Atom or JSON feed"),
        (b"<rss version='2.0'><channel><title>x & y</title>", "not a well-formed feed"),
        (b"", "not an RSS, Atom or JSON feed"),
    ],
)
def test_documents_without_entries_are_errors(body: bytes, reason: str):
    with pytest.raises(FeedError, match=reason):
        parse_feed(body, {"Content-Type": "text/html"}, FeedContext("s", "http://h.test/"))


def test_mislabelled_documents_are_parsed_by_their_content():
    rss = parse("rss20.xml", headers={"Content-Type": "application/json"})
    assert rss.items[0].guid == "two-1"
    js = parse("jsonfeed.json", headers={"Content-Type": "text/xml"})
    assert js.items[0].entry.title == "JSON item one"


def test_empty_but_valid_feed_is_not_an_error():
    body = b'<rss version="2.0"><channel><title>Quiet</title><link>http://q.test/</link></channel></rss>'
    assert parse_feed(body, {}, FeedContext("s", "http://q.test/")).items == []


def test_json_feed():
    f = parse(
        "jsonfeed.json", url="https://json.example.com/feed.json", headers={"Content-Type": "application/feed+json"}
    )
    one, two = f.items
    e = one.entry
    assert (one.guid, e.title, e.link) == ("1", "JSON item one", "https://json.example.com/posts/1")
    assert e.content_html.startswith('<p>Hello <a href="https://json.example.com/x"') and "script" not in e.content_html
    assert e.summary == "The first item"
    assert e.image == "https://json.example.com/img/1.png"
    assert e.published == datetime(2022, 9, 5, 1, tzinfo=UTC) and e.updated == datetime(2022, 9, 6, 1, tzinfo=UTC)
    assert e.categories == ("json", "feeds") and e.authors == ("Item Author",)
    assert two.guid == "2" and two.entry.link == "https://elsewhere.example.com/story"
    assert two.entry.content_html == "<p>Plain text</p><p>second paragraph</p>"
    assert two.entry.authors == ("Feed Author",)
    assert two.entry.enclosure == Enclosure("https://json.example.com/files/report.pdf", "application/pdf", 2048)
    assert e.enclosure is None


def test_podcast_enclosures():
    f = parse("podcast.xml", url="https://pod.example.com/feed.xml")
    one, two = (i.entry for i in f.items)
    assert one.enclosure == Enclosure("https://pod.example.com/audio/ep1.mp3", "audio/mpeg", 12345678)
    assert one.image == "https://pod.example.com/art/ep1.jpg"
    assert two.enclosure == Enclosure("https://pod.example.com/audio/ep2.mp3", "audio/mpeg", None)
    assert one.version() != replace(one, enclosure=None).version()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"version": "1", "items": []}', "not a JSON Feed"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": 3}', "no 'items' list"),
    ],
)
def test_bad_json_feeds(body: bytes, reason: str):
    with pytest.raises(FeedError, match=reason):
        parse_json_feed(body, FeedContext("s", "http://h.test/"))


@pytest.mark.parametrize("name", ["bomb.xml", "bomb_oneline.xml"])
def test_entity_bomb_does_not_exhaust_memory(name: str):
    """A billion-laughs document (10^10 bytes if expanded) is parsed in a process capped at
    1 GiB of address space: expansion would die with MemoryError, a safe parser finishes."""
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from aggregator.sources.feeds import FeedContext, FeedError, parse_feed
        # The high-water mark survives exec: a child forked from a big test process starts high.
        print("base_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        data = open({str(DATA / name)!r}, "rb").read()
        try:
            f = parse_feed(data, {{}}, FeedContext("s", "http://bomb.test/"))
            size = sum(len(i.entry.content_html) + len(i.entry.title) for i in f.items)
            print("entries", len(f.items), "chars", size)
        except FeedError as e:
            print("error", e)
        print("rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    assert int(lines["rss_mb"]) - int(lines["base_mb"]) < 200
    if "entries" in lines:
        assert int(lines["entries"].split()[2]) < 10_000  # nothing was expanded


# ---------------------------------------------------------------- identity policy


def item(guid: str | None, link: str | None, title: str = "t") -> ParsedItem:
    return ParsedItem(Entry(source="s", key="", title=title, content_html="", summary=""), guid, link, f"h-{title}")


def test_guid_identity_by_default():
    items = [item("a", "http://x/1"), item("b", "http://x/2")]
    d = choose_identity(items, "guid", None, {})
    assert (d.mode, d.reason) == ("guid", None)
    assert [e.key for e in assign_keys(items, d.mode)] == ["guid:a", "guid:b"]


def test_missing_guids_switch_to_links():
    items = [item(None, "http://x/1"), item(None, "http://x/2"), item("c", "http://x/3")]
    d = choose_identity(items, "guid", None, {})
    assert d.mode == "link" and "2 of 3 items have no GUID" in d.reason


def test_repeated_guid_switches_to_links():
    items = [item("same", "http://x/1"), item("same", "http://x/2")]
    d = choose_identity(items, "guid", None, {})
    assert d.mode == "link" and "repeated" in d.reason


def test_changing_guids_switch_to_links():
    stored = {"http://x/1": "guid:old-1", "http://x/2": "guid:old-2", "http://x/3": "guid:c"}
    items = [item("new-1", "http://x/1"), item("new-2", "http://x/2"), item("c", "http://x/3")]
    d = choose_identity(items, "guid", None, stored)
    assert d.mode == "link" and "2 of 3" in d.reason
    # One changed guid among many is an edit, not a pattern.
    stored["http://x/2"] = "guid:new-2"
    assert choose_identity(items, "guid", None, stored).mode == "guid"


def test_link_identity_is_sticky_and_keys_dedupe():
    items = [item("a", "http://x/1"), item("b", "http://x/1"), item("c", None, "no link")]
    d = choose_identity(items, "link", "earlier reason", {})
    assert (d.mode, d.reason) == ("link", "earlier reason")
    keys = [e.key for e in assign_keys(items, "link")]
    assert keys == ["link:http://x/1", "guid:c"]  # the repeated link keeps its first item
    assert choose_identity([item("a", None)], "guid", None, {}).mode == "guid"  # nothing to compare


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for sample in SAMPLES:
        out = GOLDEN / f"{sample}.golden.json"
        out.write_text(json.dumps(normalized_feed(sample), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print("wrote", out)


def test_xml_base_still_resolves_links():
    doc = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://a.test/dir/">
    <title>t</title><entry xml:base="sub/"><title>x</title><id>i1</id><link href="p.html"/>
    <updated>2024-01-01T00:00:00Z</updated><content type="html">&lt;img src="i.png"&gt;</content></entry></feed>"""
    (item,) = parse_feed(doc, {"Content-Type": "application/atom+xml"}, FeedContext("s", "http://feed.test/f")).items
    assert item.entry.link == "http://a.test/dir/sub/p.html"
    assert 'src="http://a.test/dir/sub/i.png"' in item.entry.content_html
