"""Dedup end to end: the real CLI on article folders and a remote feed served over HTTP."""

from __future__ import annotations

import shutil
from pathlib import Path

import feedparser
import pytest
from conftest import EXAMPLES, run_cli, write_config
from pytest_httpserver import HTTPServer

SEED_0 = "000_712fa19a513a8731.txt"
SEED_1 = "001_57b60a071cc8b6e8.txt"
SEED_0_URL = "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202202162278892871"
SEED_0_TITLE = "新合作、新技术、新场景 服贸会“剧透”中医药未来"


def entries(site: Path, slug: str, name: str = "atom.xml") -> list:
    return feedparser.parse((site / "out" / slug / name).read_bytes()).entries


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    arts = tmp_path / "articles"
    arts.mkdir()
    for name in (SEED_0, SEED_1):
        shutil.copy(EXAMPLES / name, arts / name)
    return tmp_path


def test_copies_collapse_seeds_stay_apart_and_withdrawal_promotes(seeds: Path) -> None:
    arts = seeds / "articles"
    seed0 = (arts / SEED_0).read_text(encoding="utf-8")
    (arts / "zz-copy.txt").write_text(seed0, encoding="utf-8")
    tracked = seed0.replace("NW202202162278892871>", "NW202202162278892871&utm_campaign=feed&spm=x.y#top>")
    (arts / "zz-tracked.md").write_text(tracked, encoding="utf-8")
    cfg = write_config(seeds)

    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    assert "2 duplicates" in r.stdout
    assert [e.title for e in entries(seeds, "beijingshangbao")] == [SEED_0_TITLE]
    assert len(entries(seeds, "all")) == 2  # the two seeds: same trade fair, different stories

    r = run_cli(cfg, "duplicates")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == SEED_0_TITLE
    assert lines[1].split() == ["shown", "local:", SEED_0]
    assert sorted(" ".join(x.split()) for x in lines[2:4]) == ["url local: zz-copy.txt", "url local: zz-tracked.md"]
    assert lines[-1] == "1 clusters, 2 duplicates hidden"

    # A second run changes nothing.
    r = run_cli(cfg, "update")
    assert r.returncode == 0 and "0 duplicates" in r.stdout and " 0 files written" in r.stdout, r.stdout

    # Delete the canonical file: the next member is promoted, still one entry.
    (arts / SEED_0).unlink()
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    assert [e.title for e in entries(seeds, "beijingshangbao")] == [SEED_0_TITLE]
    assert len(entries(seeds, "all")) == 2
    r = run_cli(cfg, "duplicates")
    assert r.stdout.splitlines()[1].split() == ["shown", "local:", "zz-copy.txt"]
    assert r.stdout.splitlines()[-1] == "1 clusters, 1 duplicates hidden"


def test_disabled_dedup_shows_every_copy(seeds: Path) -> None:
    shutil.copy(seeds / "articles" / SEED_0, seeds / "articles" / "zz-copy.txt")
    cfg = write_config(seeds)
    assert run_cli(cfg, "update").returncode == 0
    assert len(entries(seeds, "beijingshangbao")) == 1
    cfg = write_config(seeds, "[dedup]\nenabled = false")
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    assert len(entries(seeds, "beijingshangbao")) == 2
    assert run_cli(cfg, "duplicates").stdout.strip() == "0 clusters, 0 duplicates hidden"
    # Nothing is left pending for a dedup that will not run: the next cycle with nothing new
    # is quiet (it skips the build) instead of building every time.
    shutil.copy(seeds / "articles" / SEED_0, seeds / "articles" / "zz-another.txt")
    assert run_cli(cfg, "update").returncode == 0
    from aggregator.config import load_config
    from aggregator.store import Store

    store = Store(load_config(cfg).database.url)
    try:
        assert not store.has_pending_changes()
    finally:
        store.close()


def test_bad_dedup_config_exits_2_naming_the_key(seeds: Path) -> None:
    cfg = write_config(seeds, "[dedup]\nnear_threshold = 1.5")
    r = run_cli(cfg, "update")
    assert r.returncode == 2 and "dedup.near_threshold" in r.stderr


RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Wire</title><link>http://wire.example/</link><description>w</description>
<item><title>{title}</title><link>{link}</link><guid isPermaLink="false">wire-1</guid>
<pubDate>Thu, 17 Feb 2022 08:00:00 +0800</pubDate><description>{body}</description></item>
<item><title>Unrelated wire story</title><link>http://wire.example/2</link><guid isPermaLink="false">wire-2</guid>
<pubDate>Thu, 17 Feb 2022 09:00:00 +0800</pubDate>
<description>Something else entirely happened today.</description></item>
</channel></rss>
"""


@pytest.mark.parametrize("priority", [None, "local"])
def test_a_file_and_a_remote_feed_item_with_the_same_url_collapse(
    seeds: Path, httpserver: HTTPServer, priority: str | None
) -> None:
    link = SEED_0_URL.replace("http://finews.zning.xyz", "HTTP://FINEWS.zning.xyz:80") + "&amp;utm_source=rss"
    body = "服贸会会后集体采访系列活动——健康卫生服务专题企业专场举办。"
    httpserver.expect_request("/feed.xml").respond_with_data(
        RSS.format(title="【转载】" + SEED_0_TITLE, link=link, body=body), content_type="application/rss+xml"
    )
    wire = (
        f'[[sources]]\nname = "wire"\nurl = "{httpserver.url_for("/feed.xml")}"\n'
        'allow_private = true\ncategories = ["wire-news"]\n'
    )
    prio = f'[dedup]\nsource_priority = ["{priority}"]' if priority else ""
    cfg = write_config(seeds, prio, extra_sources=wire)

    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    assert len(httpserver.log) >= 1
    shown = [SEED_0_TITLE] if priority else ["【转载】" + SEED_0_TITLE]
    # One URL, so two versions of one page: the wire's (dated a day later) is shown unless the
    # file's source has priority, in the categories of both: the file's own and the wire's.
    assert [e.title for e in entries(seeds, "beijingshangbao")] == shown
    assert sorted(e.title for e in entries(seeds, "wire-news")) == sorted([*shown, "Unrelated wire story"])
    titles = sorted(e.title for e in entries(seeds, "all"))
    assert len(titles) == 3 and "Unrelated wire story" in titles
    r = run_cli(cfg, "duplicates")
    lines = [" ".join(x.split()) for x in r.stdout.splitlines()]
    member = "url wire: " if priority else f"url local: {SEED_0}"
    assert any(x.startswith(member) for x in lines[2:-1]), r.stdout
    assert lines[-1] == "1 clusters, 1 duplicates hidden"


def test_ingest_then_build_publishes_each_story_once(seeds: Path) -> None:
    shutil.copy(seeds / "articles" / SEED_0, seeds / "articles" / "zz-copy.txt")
    cfg = write_config(seeds)
    assert run_cli(cfg, "ingest").returncode == 0
    r = run_cli(cfg, "build")
    assert r.returncode == 0, r.stderr
    assert len(entries(seeds, "beijingshangbao")) == 1
