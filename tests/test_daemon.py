"""The real daemon (`aggregator run`) as a subprocess, with short intervals, a real local feed
server and a temp article folder. Waits are polling loops with generous deadlines."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, run_cli
from lxml import etree

DEADLINE = 40.0

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Remote</title><link>http://example.org/</link><description>d</description>
{items}
</channel></rss>"""
ITEM = """<item><title>{title}</title><link>http://example.org/{slug}</link><guid>http://example.org/{slug}</guid>
<pubDate>Tue, 01 Mar 2022 09:00:00 +0800</pubDate><description>{title} body</description></item>"""


class FeedServer:
    """Serves one RSS feed with ETag/304 and a path that always fails; records requests."""

    def __init__(self) -> None:
        self.items = [("Remote one", "r1")]
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.path != "/feed.xml":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = RSS.format(items="".join(ITEM.format(title=t, slug=s) for t, s in outer.items)).encode()
                etag = '"' + hashlib.sha1(body).hexdigest()[:12] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Daemon:
    """`aggregator run` in a subprocess, its log lines collected as they come."""

    def __init__(self, cfg: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "aggregator", "--config", str(cfg), "run", "--json-logs", *args]
        self.p = subprocess.Popen(cmd, cwd=cfg.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def records(self) -> list[dict]:
        out = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):  # not a JSON log line (e.g. a warning from a library)
                out.append(json.loads(line))
        return out

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise


def wait_for(cond: Callable[[], object], what: str, daemon: Daemon | None = None, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        if daemon is not None and daemon.p.poll() is not None:
            break
        time.sleep(0.2)
    log = daemon.log()[-3000:] if daemon else ""
    pytest.fail(f"timed out waiting for {what}\n{log}")


def contains(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(encoding="utf-8")
    except OSError:
        return False


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def config(folder: Path, port: int, remote: str = "") -> Path:
    cfg = folder / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db/agg.sqlite3"\n'
        f'[output]\ndir = "out"\nbase_url = "http://127.0.0.1:{port}/"\ntitle = "Test"\nformats = ["atom", "json"]\n'
        '[[sources]]\nname = "local"\npath = "articles"\n' + remote,
        encoding="utf-8",
    )
    return cfg


@pytest.fixture
def feeds():
    srv = FeedServer()
    yield srv
    srv.close()


def test_daemon_end_to_end(tmp_path: Path, feeds: FeedServer):
    (tmp_path / "articles").mkdir()
    (tmp_path / "articles" / "a.txt").write_bytes((EXAMPLES / "000_712fa19a513a8731.txt").read_bytes())
    port = free_port()
    remote = (
        f'[[sources]]\nname = "remote"\nurl = "{feeds.url}/feed.xml"\nallow_private = true\n'
        'every = "1s"\ncategories = ["remote news"]\n'
        f'[[sources]]\nname = "broken"\nurl = "{feeds.url}/broken.xml"\nallow_private = true\nevery = "1s"\n'
    )
    cfg = config(tmp_path, port, remote)
    out = tmp_path / "out"
    d = Daemon(cfg, "--serve", "--port", str(port))
    try:
        local_feed, remote_feed = out / "beijingshangbao" / "atom.xml", out / "remote-news" / "atom.xml"
        wait_for(lambda: local_feed.exists(), "the first build", d)
        wait_for(lambda: contains(remote_feed, "Remote one"), "the remote item in its category feed", d)

        # Serving: 304 to a conditional request while nothing changed.
        status, headers, _ = http_get(port, "/remote-news/atom.xml")
        assert status == 200 and headers["content-type"].startswith("application/atom+xml")
        etag = headers["etag"]
        assert http_get(port, "/remote-news/atom.xml", {"If-None-Match": etag})[0] == 304
        assert http_get(port, "/remote-news/feed.json")[1]["content-type"].startswith("application/feed+json")

        # A new article file is picked up by the watcher; a new remote item by the next fetch.
        (tmp_path / "articles" / "b.md").write_text(
            "---\ntitle: 'Daemon pickup test'\ndate: 2022-03-01 09:00:00 +0800\ncategories: beijingshangbao\n---\n"
            "<p>new</p>\n",
            encoding="utf-8",
        )
        feeds.items.insert(0, ("Remote two", "r2"))
        wait_for(lambda: contains(local_feed, "Daemon pickup test"), "the new file in its feed", d)
        wait_for(lambda: contains(remote_feed, "Remote two"), "the new remote item in its feed", d)
        status, headers, body = http_get(port, "/remote-news/atom.xml", {"If-None-Match": etag})
        assert status == 200 and b"Remote two" in body and headers["etag"] != etag

        # The failing source is logged with its name and does not stop the others.
        broken = wait_for(
            lambda: [r for r in d.records() if r.get("job") == "fetch" and r.get("source") == "broken"],
            "a log line for the broken source",
            d,
        )
        assert broken[0]["outcome"] == "ok" and broken[0]["failed"] == 1 and "seconds" in broken[0]
        assert feeds.requests.count("/broken.xml") >= 1
        assert any(r.get("job") == "fetch" and r.get("source") == "remote" and r.get("new") for r in d.records())

        # One writer: a second daemon and an update are refused, naming this daemon's pid.
        second = run_cli(cfg, "run", timeout=60)
        assert second.returncode == 3 and f"pid {d.p.pid}" in second.stderr
        assert run_cli(cfg, "update", timeout=60).returncode == 3
        st = run_cli(cfg, "status", timeout=60)
        assert st.returncode == 0 and f"running, pid {d.p.pid}" in st.stdout and "remote" in st.stdout

        # SIGHUP: a bad config is refused and the daemon keeps running; a good one is taken.
        good = cfg.read_text(encoding="utf-8")
        cfg.write_text(good + "\n[output]\nbogus = 1\n", encoding="utf-8")
        d.p.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reload refused" in d.log(), "the refused reload", d)
        assert d.p.poll() is None
        cfg.write_text(good.replace('title = "Test"', 'title = "Renamed"'), encoding="utf-8")
        d.p.send_signal(signal.SIGHUP)
        wait_for(lambda: contains(out / "all" / "atom.xml", "Renamed"), "the reloaded config's title", d)
    finally:
        rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    assert any(r.get("message", "").startswith("stopped after") for r in d.records())
    with sqlite3.connect(tmp_path / "db" / "agg.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    st = run_cli(cfg, "status", timeout=60)
    assert "daemon: not running" in st.stdout and "last cycle: 20" in st.stdout


def valid_outputs(out: Path) -> int:
    """Parse every published file; return how many there are."""
    n = 0
    for path in out.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".xml":
            etree.parse(str(path))  # raises on a truncated file
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        n += 1
    return n


def test_sigkill_during_build_leaves_valid_feeds_and_a_restart_recovers(tmp_path: Path):
    arts = tmp_path / "articles"
    arts.mkdir()
    body = "<p>" + "text " * 200 + "</p>\n"
    for i in range(240):
        (arts / f"{i:03d}.md").write_text(
            f"---\ntitle: 'Item {i}'\ndate: 2022-03-01 09:{i % 60:02d}:00 +0800\n"
            f"categories: [cat{i % 40}]\n---\n{body}",
            encoding="utf-8",
        )
    cfg = config(tmp_path, free_port())
    out = tmp_path / "out"
    d = Daemon(cfg)
    try:
        # Kill as soon as the build has written its first file: the rest is still being written.
        wait_for(lambda: any(out.rglob("atom.xml")), "the build to start writing", d)
    finally:
        d.stop(signal.SIGKILL)
    assert valid_outputs(out) >= 1
    d = Daemon(cfg)  # the lock died with the process; the next daemon finishes the job
    try:
        # (The killed build may have finished already: wait for this daemon to be up, too.)
        wait_for(lambda: any(r.get("message", "").startswith("daemon started") for r in d.records()), "start", d)
        wait_for(lambda: len(list(out.glob("cat*/atom.xml"))) == 40 and (out / "index.html").exists(),
                 "every category feed after the restart", d)  # fmt: skip
    finally:
        assert d.stop() == 0
    assert valid_outputs(out) >= 82
