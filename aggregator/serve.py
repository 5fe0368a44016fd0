"""Serve the output folder over HTTP, the way feed readers like it.

Feed types that generic MIME tables get wrong are set explicitly, every answer carries an
ETag, Last-Modified and Cache-Control, conditional requests get a 304 and gzip goes to
clients that accept it. Request parsing is the standard library's; this module only
decides what to answer (pure functions below) and sends the bytes.

Published files are replaced atomically and only when their bytes change, so a file's
(mtime, size, inode) identifies its content: the ETag and the gzip body are computed once
per version and cached.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import mimetypes
import posixpath
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

# By file name first (feeds are named by format, not only by extension), then by suffix.
_BY_NAME = {
    "atom.xml": "application/atom+xml",
    "rss.xml": "application/rss+xml",
    "feed.json": "application/feed+json",
}
_BY_SUFFIX = {
    ".opml": "text/x-opml",
    ".html": "text/html",
    ".htm": "text/html",
    ".xml": "application/xml",
    ".xsl": "application/xslt+xml",
    ".css": "text/css",
    ".js": "text/javascript",
    ".json": "application/json",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
}
_TEXTUAL = ("text/", "application/atom+xml", "application/rss+xml", "application/feed+json", "application/xml")
_TEXTUAL_EXTRA = ("application/xslt+xml", "application/json", "image/svg+xml")
GZIP_MIN_BYTES = 256
CACHE_ENTRIES = 256


def content_type(path: Path) -> str:
    """The Content-Type to send for a file, with charset=utf-8 for text."""
    ctype = _BY_NAME.get(path.name) or _BY_SUFFIX.get(path.suffix.lower())
    if ctype is None:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if ctype.startswith(_TEXTUAL) or ctype in _TEXTUAL_EXTRA:
        ctype += "; charset=utf-8"
    return ctype


_FEED_TYPES = ("application/atom+xml", "application/rss+xml")


def negotiated_type(ctype: str, accept: str | None) -> str:
    """A browser (its Accept lists text/html) gets feeds as application/xml: browsers show
    atom+xml and rss+xml as raw text and apply the feed's XSLT only to generic XML types.
    Feed readers, which ask for feed types or anything, get the precise type."""
    if ctype.split(";")[0] in _FEED_TYPES and accept and "text/html" in accept.lower():
        return "application/xml; charset=utf-8"
    return ctype


def is_feed(ctype: str) -> bool:
    return ctype.split(";")[0] in _FEED_TYPES


def compressible(ctype: str) -> bool:
    return ctype.startswith(_TEXTUAL) or ctype.split(";")[0] in _TEXTUAL_EXTRA


def resolve(root: Path, url_path: str) -> Path | None:
    """The file under `root` a request path names, or None if it names nothing servable.

    `root` must be resolved. Percent-escapes are decoded before normalising, so `%2e%2e`
    cannot climb out, and the result is checked against `root` after resolving symlinks.
    Directories map to their index.html."""
    path = unquote(urlsplit(url_path).path)
    if "\x00" in path or "\\" in path:
        return None
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    if any(p == ".." or p.startswith(".") for p in parts):  # dotfiles include in-flight temp files
        return None
    target = root.joinpath(*parts)
    if path.endswith("/") or not parts or target.is_dir():
        target = target / "index.html"
    try:
        real = target.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if real != root and root not in real.parents:
        return None
    return real if real.is_file() else None


def accepts_gzip(header: str | None) -> bool:
    """Does an Accept-Encoding header allow gzip (and not with q=0)?"""
    if not header:
        return False
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().lower()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def not_modified(if_none_match: str | None, if_modified_since: str | None, etags: tuple[str, ...], mtime: int) -> bool:
    """RFC 9110 §13.1: If-None-Match decides when present (weak comparison); otherwise
    If-Modified-Since, compared at one-second precision."""
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        offered = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return any(e in offered for e in etags)
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return mtime <= int(since.timestamp())
    return False


@dataclass(frozen=True, slots=True)
class Representation:
    body: bytes
    gz: bytes | None  # None when not worth compressing
    etag: str  # of the identity body; the gzip body's tag adds "-gz"
    mtime: int  # seconds
    ctype: str

    @property
    def etags(self) -> tuple[str, ...]:
        return (self.etag, self.etag[:-1] + '-gz"')


class FileCache:
    """Recently served files by (path, mtime_ns, size, inode): content, ETag, gzip body."""

    def __init__(self, size: int = CACHE_ENTRIES):
        self.size = size
        self._items: OrderedDict[tuple, Representation] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> Representation:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            rep = self._items.get(key)
            if rep is not None:
                self._items.move_to_end(key)
                return rep
        body = path.read_bytes()
        ctype = content_type(path)
        gz = None
        if len(body) >= GZIP_MIN_BYTES and compressible(ctype):
            gz = gzip.compress(body, compresslevel=6, mtime=0)
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        rep = Representation(body, gz, etag, int(st.st_mtime), ctype)
        with self._lock:
            self._items[key] = rep
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return rep


class FeedHandler(BaseHTTPRequestHandler):
    server: FeedServer
    server_version = "aggregator"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = resolve(self.server.root, self.path)
        if path is None:
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n", send_body)
            return
        try:
            rep = self.server.cache.get(path)
        except OSError:  # replaced or removed between resolve and read
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n", send_body)
            return
        use_gz = rep.gz is not None and accepts_gzip(self.headers.get("Accept-Encoding"))
        etag = rep.etags[1] if use_gz else rep.etag
        inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
        if not_modified(inm, ims, rep.etags, rep.mtime):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self._validators(rep, etag)
            self.end_headers()
            return
        body = rep.gz if use_gz and rep.gz is not None else rep.body
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", negotiated_type(rep.ctype, self.headers.get("Accept")))
        if use_gz:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self._validators(rep, etag)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _validators(self, rep: Representation, etag: str) -> None:
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", format_datetime(datetime.fromtimestamp(rep.mtime, UTC), usegmt=True))
        self.send_header("Cache-Control", f"public, max-age={self.server.max_age}")
        vary = (["Accept"] if is_feed(rep.ctype) else []) + (["Accept-Encoding"] if rep.gz is not None else [])
        if vary:
            self.send_header("Vary", ", ".join(vary))

    def _plain(self, status: HTTPStatus, body: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class FeedServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow reader never holds up shutdown

    def __init__(self, root: Path, host: str, port: int, max_age: float):
        self.root = Path(root).resolve()
        self.max_age = int(max_age)
        self.cache = FileCache()
        super().__init__((host, port), FeedHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def start(root: Path, host: str, port: int, max_age: float) -> tuple[FeedServer, threading.Thread]:
    """Bind and serve from a background thread; stop with `server.shutdown()`."""
    root.mkdir(parents=True, exist_ok=True)
    server = FeedServer(root, host, port, max_age)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 1.0}, name="http", daemon=True)
    thread.start()
    log.info("serving %s at %s", root, server.url)
    return server, thread
