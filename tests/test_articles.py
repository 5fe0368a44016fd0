"""Article files → entries: golden files, the two seeds, every dialect, every kind of bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from golden_entries import CONTEXT, EXAMPLES, GOLDEN, normalized

from aggregator.model import FileStamp, Rejected
from aggregator.sources.articles import (
    ArticleContext,
    ArticleError,
    clean_body,
    decode,
    parse_article,
    parse_date,
    read_article,
    split_front_matter,
)
from aggregator.sources.reading import read_articles
from aggregator.sources.walk import scan

SHANGHAI = ZoneInfo("Asia/Shanghai")
SEEDS = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"


def parse(text: str | bytes, name: str = "a.md", ctx: ArticleContext = CONTEXT):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return parse_article(data, FileStamp(name, 0, len(data)), ctx)


# ---------------------------------------------------------------- golden files


def example_files() -> list[str]:
    return [s.path for s in scan(EXAMPLES).files]


def test_every_example_has_a_golden_file():
    assert len(example_files()) >= 12
    assert sorted(p.name.removesuffix(".json") for p in GOLDEN.glob("*.json")) == sorted(example_files())


@pytest.mark.parametrize("path", example_files())
def test_example_matches_golden(path: str):
    expected = json.loads((GOLDEN / (path + ".json")).read_text(encoding="utf-8"))
    got = normalized(path)
    for field in expected:
        assert got[field] == expected[field], f"{path}: field {field!r} differs"


# ---------------------------------------------------------------- the seeds, exactly


def test_seed_000_jekyll_html_body():
    e = parse((EXAMPLES / "000_712fa19a513a8731.txt").read_bytes(), "000.txt")
    assert e.title == "新合作、新技术、新场景 服贸会“剧透”中医药未来"
    assert e.published == datetime(2022, 2, 16, 12, 47, 24, tzinfo=UTC)
    assert e.categories == ("beijingshangbao",)
    assert e.tags == ("北京商报新闻",)
    assert e.link == "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202202162278892871"
    assert e.outlet == "北京商报"
    assert "返回" not in e.content_html and "withounder" not in e.content_html
    assert "NewsShare" not in e.content_html
    assert "5G远程超声机械臂亮相" in e.content_html
    assert e.content_html.startswith("<p>2月16日")
    assert "文章来源" not in e.summary


def test_seed_001_hexo_list_categories():
    e = parse((EXAMPLES / "001_57b60a071cc8b6e8.txt").read_bytes(), "001.txt")
    assert e.title == "首届卫生健康与工业科技创新服务大会在京举办"
    assert e.published == datetime(2022, 9, 2, 20, 8, tzinfo=UTC)
    assert e.categories == ("金融", "证券时报网", "要闻")
    assert e.authors == ("证券时报网",)
    assert e.image == "https://picsum.photos/400/300?random=9986"
    assert e.link is None
    assert "trsHotWords" not in e.content_html and "stockcode" not in e.content_html
    assert "卫生健康科技创新产业发展联盟" in e.content_html
    assert 'style="' not in e.content_html


@pytest.mark.skipif(not SEEDS.exists(), reason="shared seeds not beside the checkout")
def test_examples_carry_the_seeds_unchanged():
    for seed in SEEDS.glob("*.txt"):
        assert (EXAMPLES / seed.name).read_bytes() == seed.read_bytes()


# ---------------------------------------------------------------- dialects


def test_toml_front_matter():
    e = parse('+++\ntitle = "T"\ndate = 2023-01-02T03:04:05Z\ncategories = ["a", "b"]\n+++\nbody\n')
    assert (e.title, e.published, e.categories) == ("T", datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC), ("a", "b"))


def test_blank_lines_bom_and_crlf_before_front_matter():
    e = parse(b"\xef\xbb\xbf\r\n\r\n---\r\ntitle: X\r\ndate: 2022-01-01\r\n---\r\nline\r\n")
    assert e.title == "X"
    assert e.published == datetime(2021, 12, 31, 16, tzinfo=UTC)
    assert "\r" not in e.content_html


def test_hexo_without_opening_fence():
    meta, body = split_front_matter("title: Hi\ndate: 2022-01-01\n---\nBody text\n")
    assert meta["title"] == "Hi" and body.strip() == "Body text"


def test_text_without_front_matter_is_body():
    meta, body = split_front_matter("Just: a sentence with a colon\n\nand more\n")
    assert meta == {} and body.startswith("Just:")


def test_title_from_markdown_heading():
    e = parse("# Heading title\n\nSome text.\n")
    assert e.title == "Heading title"
    assert "<h1>" not in e.content_html


def test_title_from_html_h1():
    e = parse("<h1>Only <b>HTML</b></h1><p>x</p>", "a.html")
    assert e.title == "Only HTML"


def test_gbk_and_gb18030_files_decoded():
    text = "---\ntitle: 央行发布报告\ncategories: 金融\n---\n<p>人民银行今日发布货币政策执行报告。</p>\n"
    for enc in ("gbk", "gb2312", "gb18030"):
        e = parse(text.encode(enc), "a.txt")
        assert e.title == "央行发布报告" and "货币政策" in e.content_html


def test_utf16_with_bom():
    e = parse("\ufeff---\ntitle: 十六位\n---\nx\n".encode("utf-16"))
    assert e.title == "十六位"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-02-16 20:47:24 +0800", datetime(2022, 2, 16, 12, 47, 24, tzinfo=UTC)),
        ("Fri, 02 Sep 2022 20:08:00 GMT", datetime(2022, 9, 2, 20, 8, tzinfo=UTC)),
        ("2022-09-02T20:08:00+08:00", datetime(2022, 9, 2, 12, 8, tzinfo=UTC)),
        ("2022-09-02T20:08:00Z", datetime(2022, 9, 2, 20, 8, tzinfo=UTC)),
        ("2022-09-02 20:08", datetime(2022, 9, 2, 12, 8, tzinfo=UTC)),
        ("2022-09-02", datetime(2022, 9, 1, 16, tzinfo=UTC)),
        ("September 2, 2022 8:08 PM", datetime(2022, 9, 2, 12, 8, tzinfo=UTC)),
        (datetime(2022, 9, 2, 20, 8), datetime(2022, 9, 2, 12, 8, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_dates(value, expected):
    assert parse_date(value, SHANGHAI) == expected


def test_naive_dates_use_the_source_timezone():
    ctx = ArticleContext("s", ZoneInfo("America/New_York"), (), {}, "http://x.org/")
    e = parse("---\ntitle: T\ndate: 2022-07-01 12:00:00\n---\nx", ctx=ctx)
    assert e.published == datetime(2022, 7, 1, 16, tzinfo=UTC)


def test_categories_string_list_aliases_and_source_categories():
    ctx = ArticleContext("s", SHANGHAI, ("全部",), {"Finance": "金融"}, "http://x.org/")
    e = parse("---\ntitle: T\ncategories: Finance, 要闻\ntags: [a, b]\n---\nx", ctx=ctx)
    assert e.categories == ("金融", "要闻", "全部")
    assert e.tags == ("a", "b")


def test_jekyll_date_from_file_name():
    e = parse("---\ntitle: T\n---\nx", "posts/2021-05-04-hello.md")
    assert e.published == datetime(2021, 5, 3, 16, tzinfo=UTC)


def test_updated_field_and_missing_date():
    e = parse("---\ntitle: T\ndate: 2022-01-01\nupdated: 2022-01-05 10:00:00 +0800\n---\nx")
    assert e.updated == datetime(2022, 1, 5, 2, tzinfo=UTC)
    assert parse("---\ntitle: T\n---\nx").published is None


def test_author_forms():
    assert parse("---\ntitle: T\nauthor: {name: Ann}\n---\nx").authors == ("Ann",)
    assert parse("---\ntitle: T\nauthors: [Ann, Bo]\n---\nx").authors == ("Ann", "Bo")


# ---------------------------------------------------------------- body clean-up


def test_trailing_url_line_and_back_links():
    body, link = clean_body("<p>x</p>\n\n<https://a.example/1>\n\n[返回财经](//a/b.html)｜[返回首页](//a/)\n")
    assert link == "https://a.example/1"
    assert body == "<p>x</p>"


def test_url_line_in_the_middle_stays():
    body, link = clean_body("see\n<https://a.example/1>\nmore text\n")
    assert link is None and "https://a.example/1" in body


def test_stock_quote_links_unwrapped():
    body, _ = clean_body('<p>A<a class="trsHotWords" href="https://q/?c=1" code="1">新产业</a>B</p>')
    assert body == "<p>A新产业B</p>"


def test_sanitized_and_absolute():
    e = parse(
        '---\ntitle: T\n---\n<p onclick="x()">a <a href="/r">r</a> <a href="//cdn.example/i">c</a>'
        '<a href="javascript:alert(1)">j</a></p><script>bad()</script><iframe src="x"></iframe>'
        '<style>p{}</style><img src="i.png" onerror="y()">\n\n<https://site.example/post/1>\n',
        "a.html",
    )
    html = e.content_html
    for bad in ("onclick", "script", "iframe", "style", "javascript:", "onerror", "bad()"):
        assert bad not in html
    assert 'href="https://site.example/r"' in html
    assert 'href="https://cdn.example/i"' in html
    assert 'src="https://site.example/post/i.png"' in html


def test_relative_links_without_original_url_use_base_url():
    e = parse("---\ntitle: T\nimage: img/a.png\n---\n[x](/rel/1)")
    assert 'href="http://feeds.example.org/rel/1"' in e.content_html
    assert e.image == "http://feeds.example.org/img/a.png"


def test_markdown_with_raw_html_passes_through():
    e = parse("---\ntitle: T\n---\n**bold**\n\n<div><em>raw</em></div>\n")
    assert "<strong>bold</strong>" in e.content_html and "<em>raw</em>" in e.content_html


def test_summary_is_plain_text_and_bounded():
    e = parse("---\ntitle: T\n---\n" + "<p>这是一个很长的句子，用来测试摘要。</p>" * 100, "a.html")
    assert "<" not in e.summary and len(e.summary) <= 281 and e.summary.endswith("…")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"---\ntitle: [unclosed\ndate: 2022-01-01\n---\nbody\n", "broken YAML front matter"),
        (b'+++\ntitle = "x\n+++\nbody\n', "broken TOML front matter"),
        (b"\x00\x01\x02binary\x00data", "binary data"),
        (b"---\ndate: 2022-01-01\n---\njust text\n", "no title"),
        (b"---\ntitle: T\ndate: not a date at all\n---\nx\n", "date: cannot understand"),
        (b"---\ntitle: [a, b]\n---\nx\n", "title: expected text, got list"),
        (b"---\ntitle: T\ncategories: {a: 1}\n---\nx\n", "categories: expected text or a list"),
        (b"---\n- a\n- b\n---\nx\n", "not a mapping"),
        (b"---\ntitle: T\ndate: [1]\n---\nx\n", "date: expected a date"),
        (b"---\ntitle: T\nauthor: [1]\n---\nx\n", "author: expected a name"),
    ],
)
def test_bad_articles_are_rejected_with_a_reason(data: bytes, reason: str):
    with pytest.raises(ArticleError, match=reason.replace("[", r"\[")):
        parse(data)


def test_undecodable_bytes_rejected():
    with pytest.raises(ArticleError):
        decode(b"\xff\xfe\x00\xd8")  # UTF-16 BOM then a lone surrogate


def test_oversize_and_unreadable_files_become_rejections(tmp_path: Path):
    (tmp_path / "big.md").write_text("---\ntitle: T\n---\n" + "x" * 100, encoding="utf-8")
    stamp = scan(tmp_path).files[0]
    r = read_article(tmp_path, stamp, CONTEXT, max_bytes=10)
    assert isinstance(r, Rejected) and "over the 10-byte limit" in r.reason and r.where.endswith("big.md")
    gone = FileStamp("missing.md", 0, 1)
    r = read_article(tmp_path, gone, CONTEXT, max_bytes=100)
    assert isinstance(r, Rejected) and "missing.md" in str(r)


def test_scan_skips_hidden_and_foreign_files(tmp_path: Path):
    names = ("a.md", "b.txt", "c.jpg", ".hidden.md", "~scratch.md", "x.md~", "sub/d.html", ".git/e.md", "_notes/u.md")
    for name in (*names, "node_modules/pkg/README.md", "_site/index.md"):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x", encoding="utf-8")
    assert [s.path for s in scan(tmp_path).files] == ["_notes/u.md", "a.md", "b.txt", "sub/d.html"]


def test_parallel_reading_keeps_order_and_results(tmp_path: Path):
    for i in range(450):
        (tmp_path / f"{i:04d}.md").write_text(f"---\ntitle: Post {i}\n---\nbody {i}\n", encoding="utf-8")
    (tmp_path / "0100.md").write_text("---\ntitle: [broken\n---\n", encoding="utf-8")
    stamps = scan(tmp_path).files
    results = list(read_articles(tmp_path, stamps, CONTEXT, 10_000))
    assert len(results) == 450
    assert isinstance(results[100], Rejected)
    assert [r.title for r in results[:3]] == ["Post 0", "Post 1", "Post 2"]
    assert results[449].key == "0449.md"


def test_a_file_that_kills_its_parser_process_is_rejected_alone(tmp_path: Path, monkeypatch):
    """A crash in a C parser or the out-of-memory killer takes the worker process with it:
    that file is rejected with the reason, every other file is read, in order. (The crash is
    the one thing stood in for: the workers are forked from this process and inherit it.)"""
    import os
    from types import SimpleNamespace

    import aggregator.sources.articles as articles

    real = articles.parse_article

    def crashing(data, stamp, ctx):
        if stamp.path == "0300.md":
            os._exit(70)  # what a segfault or a SIGKILL looks like from the pool
        return real(data, stamp, ctx)

    monkeypatch.setattr(articles, "parse_article", crashing)
    monkeypatch.setattr("aggregator.workers.cpu_workers", lambda limit=8: 2)  # whatever this machine has
    # Every pool forked from here, so that each inherits the crash: the pool that replaces a
    # broken one would otherwise start by forkserver (the broken pool's thread is still winding
    # down), with the real parser.
    monkeypatch.setattr("aggregator.workers.threading", SimpleNamespace(active_count=lambda: 1))
    for i in range(900):
        (tmp_path / f"{i:04d}.md").write_text(f"---\ntitle: Post {i}\n---\nbody {i}\n", encoding="utf-8")
    results = list(read_articles(tmp_path, scan(tmp_path).files, CONTEXT, 10_000))
    assert len(results) == 900
    assert isinstance(results[300], Rejected) and "parser process died" in results[300].reason
    assert results[300].where.endswith("0300.md")
    assert [r.title for n, r in enumerate(results) if n != 300] == [f"Post {i}" for i in range(900) if i != 300]


def test_parallel_reading_from_a_threaded_process(tmp_path: Path):
    """In the daemon other threads run: workers then start by forkserver, never by fork."""
    import threading

    for i in range(420):
        (tmp_path / f"{i:04d}.md").write_text(f"---\ntitle: Post {i}\n---\nbody\n", encoding="utf-8")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        results = list(read_articles(tmp_path, scan(tmp_path).files, CONTEXT, 10_000))
    finally:
        stop.set()
        other.join()
    assert [r.title for r in results] == [f"Post {i}" for i in range(420)]
