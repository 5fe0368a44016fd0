"""What the output says to people: the site's language, summary lengths, links without trackers."""

from __future__ import annotations

from pathlib import Path

import feedparser
import pytest
from conftest import run_cli
from lxml import etree
from markupsafe import escape

from aggregator.publish.i18n import STRINGS, text

BODY = "港口新闻正文。" * 40 + "\n\n<http://news.example.com/2024/port.html?utm_source=wechat&id=7&spm=a.b>\n"


def site(tmp_path: Path, language: str) -> Path:
    arts = tmp_path / "articles"
    arts.mkdir()
    (arts / "a.md").write_text("---\ntitle: 港口新闻\ncategories: [世界, 经济]\n---\n" + BODY, encoding="utf-8")
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db.sqlite3"\n'
        f'[output]\ndir = "out"\nbase_url = "http://feeds.example.org/"\nlanguage = "{language}"\n'
        '[categories."世界"]\nsummary_chars = 40\n'
        '[[sources]]\nname = "local"\npath = "articles"\n',
        encoding="utf-8",
    )
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    return tmp_path / "out"


@pytest.mark.parametrize(("language", "english"), [("zh", False), ("zh-CN", False), ("en", True)])
def test_index_and_browser_view_speak_the_site_language(tmp_path: Path, language: str, english: bool):
    out = site(tmp_path, language)
    index = (out / "index.html").read_text(encoding="utf-8")
    view = str(etree.XSLT(etree.parse(str(out / "static" / "feed.xsl")))(etree.parse(str(out / "all" / "atom.xml"))))
    for en_text, key in (("These are web feeds", "note"), ("Subscribe:", "subscribe")):
        assert (en_text in index) is english and str(escape(text(language, key))) in index
    for en_text, key in (("All feeds", "all_feeds"), ("To subscribe", "to_subscribe")):
        assert (en_text in view) is english and text(language, key) in view


def test_summary_chars_cut_one_category_and_links_lose_trackers(tmp_path: Path):
    out = site(tmp_path, "zh")
    world = feedparser.parse((out / "shijie" / "atom.xml").read_bytes()).entries[0]
    economy = feedparser.parse((out / "jingji" / "atom.xml").read_bytes()).entries[0]
    assert len(world.summary) <= 41 and len(economy.summary) > 100
    assert economy.summary.startswith(world.summary.rstrip("…"))
    for e in (world, economy):
        assert e.link == "http://news.example.com/2024/port.html?id=7"


def test_every_language_has_every_string():
    assert all(set(words) == set(STRINGS["en"]) for words in STRINGS.values())
    assert text("fr", "all_feeds") == STRINGS["en"]["all_feeds"]
    assert text("zh-TW", "entries", n=3) == "3 篇" and text("en", "entries", n=1) == "1 entry"
