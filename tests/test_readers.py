"""Real feed readers from Debian agree with the database: sfeed parses each file, newsboat
fetches each feed from `aggregator serve` in non-interactive mode (`-x reload`)."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, write_config

from aggregator.config import load_config
from aggregator.publish import feed_plans
from aggregator.store import Store

MAX_ITEMS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_titles(config: Path) -> dict[str, list[str]]:
    """slug → titles the database says each feed holds, newest first."""
    settings = load_config(config)
    store = Store(settings.database.url)
    try:
        return {p.slug: [r.title for r in store.listing(p.category_id, p.max_items)]
                for p in feed_plans(settings, store.categories())}  # fmt: skip
    finally:
        store.close()


@contextmanager
def serving(site: Path, config_body: str = f"max_items = {MAX_ITEMS}\n") -> Iterator[str]:
    """Build `site` with the real CLI and serve it with `aggregator serve` on a free port; yields the base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    write_config(site, config_body)
    cfg = site / "config.toml"
    cfg.write_text(cfg.read_text().replace("http://feeds.example.org/", base), encoding="utf-8")
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "aggregator", "--config", str(cfg), "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=site, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "index.html", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"aggregator serve exited: {proc.stderr.read().decode()[-500:]}")
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def served(site: Path):
    with serving(site) as base:
        yield site, base


@pytest.mark.skipif(shutil.which("sfeed") is None, reason="sfeed not installed (apt-get install sfeed)")
def test_sfeed_sees_what_the_database_holds(served):
    site, _ = served
    want = expected_titles(site / "config.toml")
    assert len(want) >= 10 and len(want["all"]) == MAX_ITEMS
    for slug, titles in want.items():
        for name in ("atom.xml", "rss.xml"):
            data = (site / "out" / slug / name).read_bytes()
            r = subprocess.run(["sfeed"], input=data, capture_output=True, check=True, timeout=30)
            rows = [line.split(b"\t") for line in r.stdout.split(b"\n") if line.strip()]
            assert [row[1].decode() for row in rows] == titles, (slug, name)
            assert all(row[5].startswith(b"urn:uuid:") for row in rows), "sfeed reads the guid/id"


@pytest.mark.skipif(shutil.which("newsboat") is None, reason="newsboat not installed (apt-get install newsboat)")
def test_newsboat_sees_what_the_database_holds(served, tmp_path: Path):
    site, base = served
    want = expected_titles(site / "config.toml")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "LANG": "C.UTF-8", "XDG_CONFIG_HOME": str(home), "XDG_DATA_HOME": str(home)}
    for slug, titles in want.items():
        for name in ("atom.xml", "rss.xml"):
            # One cache per feed: newsboat keys items by guid, and an entry is in several feeds.
            run = tmp_path / f"{slug}-{name}"
            run.mkdir()
            (run / "urls").write_text(f"{base}{slug}/{name}\n", encoding="utf-8")
            (run / "config").write_text("", encoding="utf-8")
            cmd = ["newsboat", "-x", "reload", "-u", "urls", "-c", "cache.db", "-C", "config"]
            r = subprocess.run(cmd, cwd=run, env=env, capture_output=True, timeout=60)
            assert r.returncode == 0, r.stderr
            with sqlite3.connect(run / "cache.db") as db:
                got = [t for (t,) in db.execute("select title from rss_item order by pubDate desc, id")]
                feed_title = db.execute("select title from rss_feed").fetchone()[0]
            assert got == titles, (slug, name)
            assert feed_title.endswith("Test"), (slug, name, feed_title)
