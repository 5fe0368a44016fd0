"""Feed discovery: the feeds a page announces in its head."""

from __future__ import annotations

from aggregator.sources.discovery import FeedLink, choose, discover

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>新闻</title>
<link rel="stylesheet" href="/style.css">
<link rel="alternate" type="application/rss+xml" title="全部 RSS" href="/feed.xml">
<link rel="alternate" type="application/atom+xml" title=" Atom  feed " href="https://cdn.example.com/atom.xml">
<link rel="alternate" type="application/feed+json" href="feed.json">
<link rel="alternate" type="application/rss+xml" href="/feed.xml">
<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
<link rel="alternate" hreflang="en" href="/en/">
</head><body><a href="/other.xml" rel="alternate" type="application/rss+xml">not in the head</a></body></html>"""


def test_links_in_document_order_absolute_and_without_repeats():
    got = discover(PAGE.encode(), "http://news.example.cn/section/")
    assert got == [
        FeedLink("http://news.example.cn/feed.xml", "rss", "全部 RSS"),
        FeedLink("https://cdn.example.com/atom.xml", "atom", "Atom feed"),
        FeedLink("http://news.example.cn/section/feed.json", "json", None),
    ]


def test_choose_prefers_the_kind_asked_for_else_the_first():
    links = discover(PAGE, "http://news.example.cn/")
    assert choose(links).kind == "rss"
    assert choose(links, "atom").url == "https://cdn.example.com/atom.xml"
    assert choose(links, "json").kind == "json"
    assert choose([], "atom") is None


def test_base_element_and_pages_without_feeds():
    page = (
        '<html><head><base href="http://other.example/x/">'
        '<link rel="alternate" type="application/atom+xml" href="a.xml"></head></html>'
    )
    assert discover(page, "http://news.example/")[0].url == "http://other.example/x/a.xml"
    assert discover("<html><body>no feeds</body></html>", "http://x.example/") == []
    assert discover(b"", "http://x.example/") == []
