"""The real CLI on the example corpus: every feed valid and complete, archives, WebSub pings,
no rewrite without change, and (when it is set up) zero findings from the W3C feed validator."""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import feedparser
import pytest
from conftest import run_cli, write_config
from test_publish import Hub, assert_valid, digests

BASE = "http://feeds.example.org/"
VALIDATOR = Path(tempfile.gettempdir()) / "fv"  # where ../shared/acceptance/setup_validator.sh puts it
VALIDATE = """
import sys
sys.path.insert(0, sys.argv[1])
import feedvalidator
from feedvalidator import compatibility
from feedvalidator.formatter.text_plain import Formatter
bad = 0
for path, url, ctype in zip(*[iter(sys.argv[2:])] * 3):
    with open(path, "rb") as f:
        try:
            events = feedvalidator.validateStream(f, firstOccurrenceOnly=1, contentType=ctype, base=url)["loggedEvents"]
        except feedvalidator.logging.ValidationFailure as e:
            events = [e.event]
    for line in Formatter(compatibility.AA(events)):
        bad += 1
        print(url, line)
sys.exit(1 if bad else 0)
"""


@pytest.fixture
def hub():
    h = Hub()
    yield h
    h.close()


@pytest.fixture
def built(site: Path, hub: Hub) -> Path:
    write_config(site, f'max_items = 4\nformats = ["atom", "rss", "json"]\n[websub]\nhub = "{hub.url}"\n')
    r = run_cli(site / "config.toml", "update")
    assert r.returncode == 0, r.stderr
    return site


def feed_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.xml") if p.name in ("atom.xml", "rss.xml"))


def test_every_feed_is_valid_complete_and_archived(built: Path, hub: Hub):
    out = built / "out"
    files = feed_files(out)
    assert len(files) >= 30 and any("archive" in p.parts for p in files)
    for path in files:
        parsed = assert_valid(path, hub=None if "archive" in path.parts else hub.url)
        assert len(parsed.entries) <= 4
        assert ("archive" in path.parts) is not any(link.rel == "hub" for link in parsed.feed.links)
    every = feedparser.parse((out / "all" / "atom.xml").read_bytes())
    links = {link.rel: link.href for link in every.feed.links}
    assert links["self"] == BASE + "all/atom.xml" and links["hub"] == hub.url and "prev-archive" in links
    # Every entry of the corpus is in the current feed or reachable through prev-archive.
    seen: list[str] = [e.id for e in every.entries]
    while "prev-archive" in links:
        page = feedparser.parse((out / links["prev-archive"].removeprefix(BASE)).read_bytes())
        seen += [e.id for e in page.entries]
        links = {link.rel: link.href for link in page.feed.links}
    assert len(seen) == len(set(seen)) == 14
    doc = json.loads((out / "all" / "feed.json").read_text(encoding="utf-8"))
    assert doc["version"] == "https://jsonfeed.org/version/1.1" and len(doc["items"]) == 4
    assert (out / "static" / "feed.xsl").exists()
    assert b'<?xml-stylesheet type="text/xsl" href="../static/feed.xsl"?>' in (out / "keji" / "rss.xml").read_bytes()


def test_pings_follow_changes_only(built: Path, hub: Hub):
    out = built / "out"
    current = sorted(BASE + p.relative_to(out).as_posix() for p in out.glob("*/*") if p.suffix in (".xml", ".json"))
    assert hub.urls == current, "one ping per published feed file, none for archive pages"
    hub.pings.clear()
    before = digests(out)
    r = run_cli(built / "config.toml", "update")
    assert r.returncode == 0, r.stderr
    assert hub.pings == [] and digests(out) == before

    # An old article edited: only the feed still showing it changes (it is archived in `all/`),
    # and only that one is pinged.
    art = built / "articles" / "2022-03-15-jekyll-filename-date.md"
    art.write_text(art.read_text(encoding="utf-8").replace("\n---\n", "\n---\nAn added first line.\n", 1), "utf-8")
    assert run_cli(built / "config.toml", "update").returncode == 0
    changed = {u.removeprefix(BASE).split("/")[0] for u in hub.urls}
    assert changed == {"zhengquan"}


def test_bad_category_options_exit_2_naming_the_key(site: Path):
    write_config(site, '[categories."金融"]\nmax_items = 0\n')
    r = run_cli(site / "config.toml", "build")
    assert r.returncode == 2
    assert "categories.金融.max_items" in r.stderr
    write_config(site, '[categories]\n"Fin" = { alias_of = "金融", title = "x" }\n')
    r = run_cli(site / "config.toml", "build")
    assert r.returncode == 2 and "categories.Fin" in r.stderr and "alias" in r.stderr


@pytest.mark.skipif(not (VALIDATOR / "src" / "feedvalidator").is_dir(), reason="W3C feedvalidator not set up")
def test_w3c_validator_finds_nothing(built: Path):
    out = built / "out"
    args: list[str] = []
    for path in feed_files(out):
        ctype = "application/atom+xml" if path.name == "atom.xml" else "application/rss+xml"
        args += [str(path), BASE + urllib.parse.quote(path.relative_to(out).as_posix()), ctype]
    python = VALIDATOR / ".venv" / "bin" / "python"
    r = subprocess.run(
        [str(python), "-c", VALIDATE, str(VALIDATOR / "src"), *args], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
