"""Full text for teaser feeds: the article of a saved page, without the site around it."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.sources.fulltext import ExtractionError, extract_article

PAGES = Path(__file__).resolve().parent / "data" / "pages"


def test_chinese_article_without_navigation_footer_or_script():
    html = extract_article((PAGES / "port-zh.html").read_bytes(), "http://news.example.cn/2024/port.html")
    assert "二百万标准箱" in html and "智能闸口系统" in html
    assert "SITE-FOOTER-MARKER" not in html and "trackVisit" not in html and "关于我们" not in html
    assert 'href="http://news.example.cn/news/2.html"' in html  # made absolute against the page


def test_english_article_by_extractor_and_by_selector():
    page = (PAGES / "bridge-en.html").read_bytes()
    for selector in (None, "div.article-body"):
        html = extract_article(page, "https://ledger.example.com/bridge", selector)
        assert "eleven to four" in html and "ferry service" in html
        assert "SITE-FOOTER-MARKER" not in html and "Subscribe" not in html


@pytest.mark.parametrize("page", [b"", b"<html><body><p>Too short.</p></body></html>", b"\x00\xff binary"])
def test_no_article_is_an_error_with_a_reason(page: bytes):
    with pytest.raises(ExtractionError):
        extract_article(page, "http://x.example/")


def test_a_selector_that_matches_nothing_is_named():
    with pytest.raises(ExtractionError, match=r"div\.none"):
        extract_article((PAGES / "bridge-en.html").read_bytes(), "http://x.example/", "div.none")
