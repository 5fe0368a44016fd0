"""OPML import/export, `opml = …` sources, and the remote-source commands of the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from pytest_httpserver import HTTPServer

from aggregator.config import ConfigError, load_config
from aggregator.sources.opml import OpmlError, Subscription, read_opml, remote_sources, subscriptions, write_opml

DATA = Path(__file__).parent / "data" / "feeds"

OPML = """<?xml version="1.0" encoding="utf-8"?>
<opml version="2.0">
  <head><title>My subscriptions</title></head>
  <body>
    <outline text="Top level" type="rss" xmlUrl="http://top.example.com/feed"/>
    <outline text="财经" title="财经">
      <outline text="Markets daily" type="rss" xmlUrl="http://m.example.com/rss" htmlUrl="http://m.example.com/"/>
      <outline text="Nested">
        <outline title="Deep feed" xmlUrl="http://deep.example.com/atom" category="/tech/AI,Science"/>
      </outline>
    </outline>
    <outline text="Markets daily" xmlUrl="http://other.example.com/rss"/>
    <outline text="Not a feed" htmlUrl="http://page.example.com/"/>
  </body>
</opml>
"""


def test_read_opml_folders_become_categories():
    subs = read_opml(OPML.encode())
    assert subs == [
        Subscription("Top level", "http://top.example.com/feed", ()),
        Subscription("Markets daily", "http://m.example.com/rss", ("财经",), "http://m.example.com/"),
        Subscription("Deep feed", "http://deep.example.com/atom", ("Nested", "AI", "Science")),
        Subscription("Markets daily", "http://other.example.com/rss", ()),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<opml><body><outline", "not well-formed"),
        (b"<rss/>", "not <opml>"),
        (b"<opml version='2.0'><head/></opml>", "no <body>"),
    ],
)
def test_bad_opml(data: bytes, reason: str):
    with pytest.raises(OpmlError, match=reason):
        read_opml(data)


def test_opml_entities_are_not_expanded():
    bomb = b'<!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>' + (
        b'<opml version="2.0"><body><outline text="&b;" xmlUrl="http://x.test/"/></body></opml>'
    )
    with pytest.raises(OpmlError, match="entity declarations are not allowed"):
        read_opml(bomb)


def test_write_then_read_round_trips():
    subs = [
        Subscription("A", "http://a.test/feed", ("Tech", "AI")),
        Subscription("B", "http://b.test/feed", ()),
        Subscription("C & D", "http://c.test/feed?x=1&y=2", ("Tech",)),
    ]
    assert sorted(read_opml(write_opml(subs, "t")), key=lambda s: s.url) == subs  # grouped by folder


def write(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db/agg.sqlite3"\n[output]\ndir = "out"\n'
        'base_url = "http://feeds.example.org/"\ntitle = "T"\n' + text,
        encoding="utf-8",
    )
    return cfg


def test_opml_source_expands_into_remote_sources(tmp_path: Path):
    (tmp_path / "subs.opml").write_text(OPML, encoding="utf-8")
    cfg = write(
        tmp_path,
        '[[sources]]\nname = "Markets daily"\nurl = "http://direct.test/rss"\n'
        '[[sources]]\nname = "imported"\nopml = "subs.opml"\ncategories = ["feeds"]\nevery = "2h"\n',
    )
    sources = remote_sources(load_config(cfg))
    assert [(s.name, s.url) for s in sources] == [
        ("Markets daily", "http://direct.test/rss"),
        ("Top level", "http://top.example.com/feed"),
        ("Markets daily (2)", "http://m.example.com/rss"),
        ("Deep feed", "http://deep.example.com/atom"),
        ("Markets daily (3)", "http://other.example.com/rss"),
    ]
    assert sources[2].categories == ["财经", "feeds"] and sources[2].every == 7200
    assert [s.title for s in subscriptions(sources)][:2] == ["Markets daily", "Top level"]


def test_unusable_opml_source_names_the_key(tmp_path: Path):
    (tmp_path / "subs.opml").write_text("<html/>", encoding="utf-8")
    cfg = write(tmp_path, '[[sources]]\nname = "imported"\nopml = "subs.opml"\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.opml: .*subs.opml: root element is <html>"):
        remote_sources(load_config(cfg))
    for command in ("fetch", "update", "sources"):
        r = run_cli(cfg, command)
        assert r.returncode == 2 and "sources[0].opml" in r.stderr, (command, r.stderr)


def test_import_export_round_trip_through_the_cli(tmp_path: Path):
    cfg = write(tmp_path, '[[sources]]\nname = "existing"\nurl = "http://top.example.com/feed"\n')
    (tmp_path / "in.opml").write_text(OPML, encoding="utf-8")
    r = run_cli(cfg, "sources", "import-opml", str(tmp_path / "in.opml"))
    assert r.returncode == 0, r.stderr
    assert "3 sources added" in r.stdout and "1 already subscribed" in r.stdout
    names = [(s.name, s.url, tuple(s.categories)) for s in load_config(cfg).sources]
    assert names == [
        ("existing", "http://top.example.com/feed", ()),
        ("Markets daily", "http://m.example.com/rss", ("财经",)),
        ("Deep feed", "http://deep.example.com/atom", ("Nested", "AI", "Science")),
        ("Markets daily (2)", "http://other.example.com/rss", ()),
    ]
    again = run_cli(cfg, "sources", "import-opml", str(tmp_path / "in.opml"))
    assert "0 sources added" in again.stdout
    out = run_cli(cfg, "sources", "export-opml")
    assert out.returncode == 0, out.stderr
    exported = read_opml(out.stdout.encode())
    assert [(s.url, s.categories) for s in exported] == [(u, c) for _, u, c in names]
    run_cli(cfg, "sources", "export-opml", "-o", str(tmp_path / "out.opml"))
    assert read_opml((tmp_path / "out.opml").read_bytes()) == exported
    bad = run_cli(cfg, "sources", "import-opml", str(tmp_path / "missing.opml"))
    assert bad.returncode == 2 and "missing.opml" in bad.stderr


def test_fetch_and_sources_table_through_the_cli(tmp_path: Path):
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    try:
        srv.expect_request("/rss.xml").respond_with_data((DATA / "rss20.xml").read_bytes(), headers={"ETag": '"1"'})
        srv.expect_request("/down.xml").respond_with_data("no", status=503)
        cfg = write(
            tmp_path,
            f'[[sources]]\nname = "good"\nurl = "{srv.url_for("/rss.xml")}"\n'
            'allow_private = true\ncategories = ["markets"]\n'
            f'[[sources]]\nname = "down"\nurl = "{srv.url_for("/down.xml")}"\nallow_private = true\n'
            '[[sources]]\nname = "later"\nurl = "http://later.test/feed"\nenabled = false\n',
        )
        r = run_cli(cfg, "fetch")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().startswith("2 feeds fetched: 1 downloaded, 0 not modified, 1 failed; 2 new")
        table = run_cli(cfg, "sources")
        assert table.returncode == 0, table.stderr
        good = next(line for line in table.stdout.splitlines() if line.startswith("good"))
        down = next(line for line in table.stdout.splitlines() if line.startswith("down"))
        assert "200" in good and " 2 " in good and "ago" in good
        assert "503" in down and "HTTP 503" in down and " 1 " in down
        assert "never" in next(line for line in table.stdout.splitlines() if line.startswith("later"))
        again = run_cli(cfg, "fetch", "good")
        assert again.returncode == 0 and "1 feeds fetched" in again.stdout
        assert srv.log[-1][0].headers.get("If-None-Match") == '"1"'
        unknown = run_cli(cfg, "fetch", "nope")
        assert unknown.returncode == 2 and "no remote source named 'nope'" in unknown.stderr
    finally:
        srv.clear()
        srv.stop()
