"""End to end: the real CLI on a copy of the example articles, and the pipeline in-process."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import feedparser
import pytest
from conftest import config_database_url, dump_database, run_cli, write_config

from aggregator.config import load_config
from aggregator.pipeline import update
from aggregator.store import Store, unique_slug

EXPECTED = {  # slug → titles the example corpus puts there
    "beijingshangbao": {"新合作、新技术、新场景 服贸会“剧透”中医药未来"},
    "zhengquanshibaowang": {"首届卫生健康与工业科技创新服务大会在京举办", "光伏板块午后拉升 多只个股涨停"},
    "jinrong": {"首届卫生健康与工业科技创新服务大会在京举办", "多家银行下调存款利率", "Quarterly results at a glance"},
    "zhengquan": {
        "上交所发布科创板做市商业务指引",
        "Regulator fines brokerage over research reports",
        "北向资金单日净买入超百亿元",
    },
    "waihui": {"人民币汇率中间价上调182个基点"},
    "keji": {"Chip makers lift capital spending plans for 2024"},
}


def digest(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_update_end_to_end(site: Path):
    r = run_cli(site / "config.toml", "update")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("14 files seen: 14 new, 0 updated, 0 unchanged, 0 rejected")
    out = site / "out"
    for slug, titles in EXPECTED.items():
        for name in ("atom.xml", "rss.xml"):
            d = feedparser.parse((out / slug / name).read_bytes())
            assert d.bozo == 0, (slug, name, d.get("bozo_exception"))
            assert {e.title for e in d.entries} == titles, (slug, name)
    every = feedparser.parse((out / "all" / "atom.xml").read_bytes())
    assert len(every.entries) == 14
    dates = [e.updated_parsed for e in every.entries]
    published = [e.published_parsed for e in every.entries]
    assert published == sorted(published, reverse=True), "newest first"
    assert all(dates)

    seed = feedparser.parse((out / "beijingshangbao" / "atom.xml").read_bytes()).entries[0]
    assert seed.link == "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202202162278892871"
    assert seed.id.startswith("urn:uuid:")
    assert seed.author == "北京商报"
    assert "返回首页" not in seed.content[0].value

    rss = (out / "jinrong" / "rss.xml").read_text(encoding="utf-8")
    assert "picsum.photos/400/300?random=9986" in rss and "<dc:creator>证券时报网</dc:creator>" in rss
    assert 'isPermaLink="false"' in rss

    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'type="application/atom+xml"' in index and "http://feeds.example.org/beijingshangbao/atom.xml" in index
    opml = (out / "index.opml").read_text(encoding="utf-8")
    assert 'xmlUrl="http://feeds.example.org/beijingshangbao/rss.xml"' in opml


def test_second_update_changes_no_row_and_no_byte(site: Path):
    cfg = site / "config.toml"
    url = config_database_url(cfg)
    assert run_cli(cfg, "update").returncode == 0
    files, rows = digest(site / "out"), dump_database(url)
    assert len(dict(rows)["entries"]) == 14  # the dump sees the config's database, not an empty one
    r = run_cli(cfg, "update")
    assert r.returncode == 0
    assert "0 new, 0 updated, 14 unchanged" in r.stdout and "0 files written" in r.stdout
    assert digest(site / "out") == files
    assert dump_database(url) == rows
    # Re-rendering everything from scratch must give the very same bytes.
    r = run_cli(cfg, "build", "--force")
    assert r.returncode == 0 and r.stdout.startswith("0 files written")
    assert {k: v[0] for k, v in digest(site / "out").items()} == {k: v[0] for k, v in files.items()}


def test_changed_deleted_and_broken_files(site: Path):
    cfg = site / "config.toml"
    out = site / "out"
    assert run_cli(cfg, "update").returncode == 0
    waihui_before = (out / "waihui" / "atom.xml").read_bytes()

    note = site / "articles" / "008_date_only_cover.md"
    note.write_text(note.read_text(encoding="utf-8").replace("2.68%", "2.66%"), encoding="utf-8")
    (site / "articles" / "004_toml_front_matter.md").unlink()
    (site / "articles" / "bad.md").write_text("---\ntitle: [unclosed\n---\nx\n", encoding="utf-8")
    (site / "articles" / "new.md").write_text("---\ntitle: Fresh\ncategories: bonds\n---\nNew.\n", encoding="utf-8")

    r = run_cli(cfg, "update")
    assert r.returncode == 0
    assert "bad.md" in r.stderr and "broken YAML front matter" in r.stderr
    assert "15 files seen: 1 new, 1 updated, 12 unchanged, 1 rejected, 1 withdrawn" in r.stdout

    bonds = feedparser.parse((out / "bonds" / "atom.xml").read_bytes())
    assert {e.title for e in bonds.entries} == {"Bond yields slip to three-month low", "Fresh"}
    changed = next(e for e in bonds.entries if e.title.startswith("Bond"))
    assert "2.66%" in changed.content[0].value
    assert changed.updated_parsed > changed.published_parsed, "an edit moves the updated time"
    keji = feedparser.parse((out / "keji" / "atom.xml").read_bytes())
    assert keji.entries == [], "a deleted file's entry is withdrawn"
    assert (out / "waihui" / "atom.xml").read_bytes() == waihui_before, "untouched categories keep their bytes"

    # Fixing the broken file brings it in; restoring nothing else changes.
    (site / "articles" / "bad.md").write_text("---\ntitle: Mended\ncategories: bonds\n---\nok\n", encoding="utf-8")
    r = run_cli(cfg, "update")
    assert "1 new, 0 updated, 14 unchanged, 0 rejected, 0 withdrawn" in r.stdout


def test_touched_but_unchanged_file_is_not_republished(site: Path):
    cfg = site / "config.toml"
    assert run_cli(cfg, "update").returncode == 0
    before = digest(site / "out")
    f = site / "articles" / "010_no_original_url.md"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    r = run_cli(cfg, "update")
    assert "0 new, 0 updated, 14 unchanged" in r.stdout
    assert digest(site / "out") == before
    # and the new mtime was recorded, so the next scan does not even open the file
    r = run_cli(cfg, "-v", "update")
    assert "unchanged=14" in r.stderr


def test_ingest_build_and_categories_commands(site: Path):
    cfg = site / "config.toml"
    r = run_cli(cfg, "ingest")
    assert r.returncode == 0 and "14 new" in r.stdout
    assert not (site / "out").exists()
    r = run_cli(cfg, "build")
    assert r.returncode == 0 and (site / "out" / "waihui" / "rss.xml").exists()
    r = run_cli(cfg, "categories")
    assert r.returncode == 0
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("外汇"))
    assert "waihui" in line and " 1 " in line and "waihui/atom.xml" in line


def test_max_items_and_formats(tmp_path: Path):
    arts = tmp_path / "articles"
    arts.mkdir()
    for i in range(8):
        (arts / f"{i}.md").write_text(f"---\ntitle: N{i}\ndate: 2022-01-0{i + 1}\ncategories: n\n---\nb\n", "utf-8")
    cfg = write_config(tmp_path, 'max_items = 3\nformats = ["atom", "json"]')
    assert run_cli(cfg, "update").returncode == 0
    d = feedparser.parse((tmp_path / "out" / "n" / "atom.xml").read_bytes())
    assert [e.title for e in d.entries] == ["N7", "N6", "N5"]
    assert (tmp_path / "out" / "n" / "feed.json").exists()
    assert not (tmp_path / "out" / "n" / "rss.xml").exists()
    # Dropping a format removes its files rather than leaving them frozen.
    cfg = write_config(tmp_path, 'max_items = 3\nformats = ["atom"]')
    assert run_cli(cfg, "update").returncode == 0
    assert not (tmp_path / "out" / "n" / "feed.json").exists()
    assert (tmp_path / "out" / "n" / "atom.xml").exists()


# ---------------------------------------------------------------- in-process


def test_pipeline_in_process_and_slug_collisions(tmp_path: Path):
    arts = tmp_path / "articles"
    arts.mkdir()
    (arts / "a.md").write_text("---\ntitle: A\ncategories: [Tech News, tech-news, all, 北京]\n---\nx\n", "utf-8")
    cfg = load_config(write_config(tmp_path))
    store = Store(cfg.database.url)
    try:
        report = update(store, cfg)
        assert (report.ingest.new, report.build.rebuilt) == (1, 5)
        slugs = {c.name: c.slug for c in store.categories()}
        assert slugs["Tech News"] == "tech-news"
        assert slugs["tech-news"].startswith("tech-news-") and len(slugs["tech-news"]) == len("tech-news-") + 6
        assert slugs["all"].startswith("all-"), "'all' is the every-entry feed"
        assert slugs["北京"] == "beijing"
        assert update(store, cfg).build.rebuilt == 0
    finally:
        store.close()


def test_unique_slug_is_deterministic():
    assert unique_slug("北京商报", set()) == "beijingshangbao"
    a = unique_slug("Tech News", {"tech-news"})
    assert a == unique_slug("Tech News", {"tech-news"}) and a != "tech-news"
    assert unique_slug("!!!", set()) == "category"


@pytest.mark.parametrize("name", ["∑∑", "   "])
def test_unsluggable_names_still_get_a_slug(name):
    assert unique_slug(name, {"category"}).startswith("category-")


PG_URL = os.environ.get("AGG_TEST_PG_URL")  # a scratch database; .ci/run starts one


@pytest.mark.skipif(not PG_URL, reason="AGG_TEST_PG_URL not set")
def test_postgresql_publishes_the_same_bytes_as_sqlite(site: Path, tmp_path: Path):
    from conftest import reset_database

    reset_database(PG_URL)
    cfg = site / "config.toml"
    assert run_cli(cfg, "update").returncode == 0
    pg = tmp_path / "pg"
    shutil.copytree(site / "articles", pg / "articles")
    pg_cfg = pg / "config.toml"
    pg_cfg.write_text(cfg.read_text(encoding="utf-8").replace("sqlite:///db/agg.sqlite3", PG_URL), encoding="utf-8")
    r = run_cli(pg_cfg, "update")
    assert r.returncode == 0, r.stderr
    assert "14 new" in r.stdout
    assert {k: v[0] for k, v in digest(pg / "out").items()} == {k: v[0] for k, v in digest(site / "out").items()}
    r = run_cli(pg_cfg, "update")
    assert "0 new, 0 updated, 14 unchanged" in r.stdout and "0 files written" in r.stdout


def test_entries_of_one_date_are_listed_in_the_same_order_whichever_feed_was_stored_first(tmp_path: Path, server):
    """Rebuilt from an empty database, the output is the same bytes, also where items of
    several feeds share a date (a batch published at once, date-only stamps): the order of
    such ties must not follow the order in which the feeds' answers happened to arrive."""
    import time

    from werkzeug import Response

    def feed(name: str) -> str:
        items = "".join(
            f"<item><title>{name} {j}</title><guid>urn:{name}:{j}</guid><link>http://example.org/{name}/{j}</link>"
            f"<pubDate>Mon, 05 Sep 2022 08:00:00 GMT</pubDate><description>{name} item {j}</description></item>"
            for j in range(3)
        )
        return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{name}</title>{items}</channel></rss>'

    slow = {"name": ""}

    def answer(name: str):
        def handler(_request):
            if slow["name"] == name:
                time.sleep(0.5)  # the other feed's answer is stored first
            return Response(feed(name), content_type="application/rss+xml")

        return handler

    for name in ("a", "b"):
        server.expect_request(f"/{name}.xml").respond_with_handler(answer(name))
    sources = "".join(
        f'[[sources]]\nname = "{n}"\nurl = "{server.url_for(f"/{n}.xml")}"\nallow_private = true\n' for n in "ab"
    )
    out = {}
    for first in ("a", "b"):
        slow["name"] = "b" if first == "a" else "a"
        folder = tmp_path / first
        (folder / "articles").mkdir(parents=True)
        r = run_cli(write_config(folder, extra_sources=sources), "update")
        assert r.returncode == 0, r.stderr
        assert "6 new" in r.stderr + r.stdout
        out[first] = {k: v[0] for k, v in digest(folder / "out").items()}
    assert out["a"] == out["b"]
