"""Serving the output folder: content types, ETag/Last-Modified/304, gzip, no path escape."""

from __future__ import annotations

import gzip
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, write_config

from aggregator.serve import FileCache, accepts_gzip, content_type, not_modified, resolve, start

ATOM = b'<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom">' + b"<x/>" * 200 + b"</feed>"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    (root / "news").mkdir(parents=True)
    (root / "news" / "atom.xml").write_bytes(ATOM)
    (root / "news" / "rss.xml").write_bytes(b"<rss/>")
    (root / "news" / "feed.json").write_bytes(b"{}")
    (root / "index.html").write_bytes(b"<html>" + b"<p>hello</p>" * 50 + b"</html>")
    (root / "index.opml").write_bytes(b"<opml/>")
    (root / "news" / ".atom.xml.123.tmp").write_bytes(b"half")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    return root


@pytest.fixture
def server(out: Path):
    srv, thread = start(out, "127.0.0.1", 0, 120)
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def get(srv, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r, body


def test_content_types():
    assert content_type(Path("x/atom.xml")) == "application/atom+xml; charset=utf-8"
    assert content_type(Path("x/rss.xml")) == "application/rss+xml; charset=utf-8"
    assert content_type(Path("x/feed.json")) == "application/feed+json; charset=utf-8"
    assert content_type(Path("index.opml")) == "text/x-opml; charset=utf-8"
    assert content_type(Path("index.html")) == "text/html; charset=utf-8"
    assert content_type(Path("a.png")) == "image/png"
    assert content_type(Path("blob.unknownext")) == "application/octet-stream"


def test_resolve_never_leaves_the_root(out: Path, tmp_path: Path):
    root = out.resolve()
    assert resolve(root, "/news/atom.xml") == root / "news" / "atom.xml"
    assert resolve(root, "/news/atom.xml?x=1#f") == root / "news" / "atom.xml"
    assert resolve(root, "/") == root / "index.html"
    assert resolve(root, "") == root / "index.html"
    bad = ["/../secret.txt", "/news/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/news/%00"]
    bad += ["/news/.atom.xml.123.tmp", "/news\\..\\..\\secret.txt", "/missing.xml", "/news/"]
    for path in bad:
        assert resolve(root, path) is None, path
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    assert resolve(root, "/escape.txt") is None


def test_accepts_gzip():
    assert accepts_gzip("gzip, deflate, br")
    assert accepts_gzip("br;q=1.0, gzip;q=0.5")
    assert accepts_gzip("*")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("gzip;q=zero")
    assert not accepts_gzip("identity")
    assert not accepts_gzip(None)


def test_not_modified_decision():
    tags = ('"abc"', '"abc-gz"')
    assert not_modified('"abc"', None, tags, 1000)
    assert not_modified('W/"abc-gz", "zzz"', None, tags, 1000)
    assert not_modified("*", None, tags, 1000)
    assert not not_modified('"old"', "Thu, 01 Jan 2099 00:00:00 GMT", tags, 1000)  # ETag wins
    assert not_modified(None, "Thu, 01 Jan 1970 00:16:40 GMT", tags, 1000)
    assert not not_modified(None, "Thu, 01 Jan 1970 00:16:39 GMT", tags, 1000)
    assert not not_modified(None, "garbage", tags, 1000)
    assert not not_modified(None, None, tags, 1000)


def test_cache_follows_file_versions(out: Path):
    cache = FileCache(size=1)
    a = cache.get(out / "news" / "atom.xml")
    assert cache.get(out / "news" / "atom.xml") is a
    cache.get(out / "index.html")  # evicts the first
    (out / "news" / "atom.xml").write_bytes(ATOM + b"\n")
    assert cache.get(out / "news" / "atom.xml").etag != a.etag


def test_get_conditional_and_change(server, out: Path):
    r, body = get(server, "/news/atom.xml")
    assert r.status == 200 and body == ATOM
    assert r.getheader("Content-Type") == "application/atom+xml; charset=utf-8"
    assert r.getheader("Cache-Control") == "public, max-age=120"
    etag, modified = r.getheader("ETag"), r.getheader("Last-Modified")
    assert etag and modified
    r, body = get(server, "/news/atom.xml", {"If-None-Match": etag})
    assert r.status == 304 and body == b"" and r.getheader("ETag") == etag
    r, _ = get(server, "/news/atom.xml", {"If-Modified-Since": modified})
    assert r.status == 304
    # A new version of the file (published atomically) answers 200 with a new ETag.
    new = out / "news" / ".tmp"
    new.write_bytes(ATOM.replace(b"<x/>", b"<y/>", 1))
    os.replace(new, out / "news" / "atom.xml")
    r, body = get(server, "/news/atom.xml", {"If-None-Match": etag})
    assert r.status == 200 and b"<y/>" in body and r.getheader("ETag") != etag


def test_gzip_head_index_and_errors(server):
    r, body = get(server, "/news/atom.xml", {"Accept-Encoding": "gzip"})
    assert r.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == ATOM
    assert r.getheader("Vary") == "Accept, Accept-Encoding"
    gz_tag = r.getheader("ETag")
    r, _ = get(server, "/news/atom.xml", {"Accept-Encoding": "gzip", "If-None-Match": gz_tag})
    assert r.status == 304
    r, body = get(server, "/news/rss.xml", {"Accept-Encoding": "gzip"})  # too small to bother
    assert r.getheader("Content-Encoding") is None and body == b"<rss/>"
    r, body = get(server, "/news/atom.xml", method="HEAD")
    assert r.status == 200 and body == b"" and r.getheader("Content-Length") == str(len(ATOM))
    r, body = get(server, "/")
    assert r.status == 200 and body.startswith(b"<html>")
    assert get(server, "/news/feed.json")[0].getheader("Content-Type") == "application/feed+json; charset=utf-8"
    assert get(server, "/index.opml")[0].getheader("Content-Type") == "text/x-opml; charset=utf-8"
    assert get(server, "/../secret.txt")[0].status == 404
    assert get(server, "/nothing.xml")[0].status == 404
    assert get(server, "/x", method="POST")[0].status == 501


def test_serve_command(tmp_path: Path):
    (tmp_path / "articles").mkdir()
    cfg = write_config(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.html").write_text("<html>hi</html>", encoding="utf-8")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(cfg), "serve", "--port", str(port)],
                         cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/")
                status = conn.getresponse().status
            except OSError:
                time.sleep(0.2)
        assert status == 200
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0


def test_browsers_get_feeds_as_generic_xml_so_the_stylesheet_applies(server):
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    r, body = get(server, "/news/atom.xml", {"Accept": browser})
    assert r.getheader("Content-Type") == "application/xml; charset=utf-8" and body == ATOM
    r, _ = get(server, "/news/atom.xml", {"Accept": "application/atom+xml, application/xml;q=0.9"})
    assert r.getheader("Content-Type") == "application/atom+xml; charset=utf-8"
    r, _ = get(server, "/index.html", {"Accept": browser})
    assert r.getheader("Content-Type") == "text/html; charset=utf-8" and r.getheader("Vary") in (
        None,
        "Accept-Encoding",
    )
