"""Serve the output folder over HTTP, the way feed readers like it.

Feed types that generic MIME tables get wrong are set explicitly, every answer carries an
ETag, Last-Modified and Cache-Control, conditional requests get a 304 and gzip goes to
clients that accept it. Request parsing is the standard library's; this module only
decides what to answer (pure functions below) and sends the bytes.

Published files are replaced atomically and only when their bytes change, so a file's
(mtime, size, inode) identifies its content: the ETag and the gzip body are computed once
per version and cached.

Hostile or merely slow clients must not starve the others. Connections are answered by a
fixed pool of threads (a burst of connects waits in a deep listen queue, then in the pool's
queue, instead of each getting a thread); the number of open connections is capped; a
request's head must arrive within `request_timeout` of the connect (or of the previous
answer on a kept-alive connection), however slowly it trickles in; and a GET or HEAD that
carries a body is refused with 400 and a close, so the body can never be read as a second
request.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import mimetypes
import posixpath
import queue
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Set
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

WORKERS = 64  # threads answering requests; connections beyond them wait their turn in a queue
MAX_CONNECTIONS = 1024  # open connections, answered or waiting; one more is closed at once
BACKLOG = 1024  # listen queue (the kernel caps it at net.core.somaxconn); the default 5 dropped bursts
REQUEST_TIMEOUT = 15.0  # seconds for a request's head to arrive in full (Apache allows 20-40)
SEND_TIMEOUT = 30.0  # seconds for one answer to be sent in full to a slow reader
LINGER_SECONDS = 2.0  # after refusing a request whose body is unread, drain it this long before closing


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


def carries_body(command: str, transfer_encoding: str | None, content_lengths: list[str]) -> bool:
    """Does a GET or HEAD announce a body? Such a request is refused: the body has no meaning
    here, and reading on past it would answer whatever it holds as a second request."""
    if command not in ("GET", "HEAD"):
        return False
    return transfer_encoding is not None or any(v.strip() != "0" for v in content_lengths)


def to_close(deadlines: Mapping[object, float | None], idle: Set[object], now: float, crowded: bool) -> list:
    """The connections to end: those whose request head is late (a deadline of None: not
    waiting for one), and, while others wait for a thread, the kept-alive ones idling between
    requests, as nginx does with its reusable connections when it runs short."""
    return [c for c, d in deadlines.items() if d is not None and (d <= now or (crowded and c in idle))]


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
    # The socket's timeout bounds each send in full (sendall counts the total since 3.5); reads
    # are bounded by the server's deadlines, which a client trickling bytes cannot stretch.
    timeout = SEND_TIMEOUT
    _linger = False

    def version_string(self) -> str:
        return self.server_version  # not "Python/3.x": which bugs apply is nobody's business

    def handle_one_request(self) -> None:
        self.server.expect_head(self.connection)
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        self.server.head_received(self.connection)
        h = self.headers
        if carries_body(self.command, h.get("Transfer-Encoding"), h.get_all("Content-Length") or []):
            self._linger = True
            self.send_error(HTTPStatus.BAD_REQUEST, "A GET or HEAD request has no body")  # and closes
            return False
        return True

    def end_headers(self) -> None:
        # Others are waiting for a thread: this connection gives its thread up after this
        # answer instead of holding it while the client thinks about its next request.
        if not self.close_connection and self.server.crowded():
            self.send_header("Connection", "close")
        super().end_headers()

    def finish(self) -> None:
        super().finish()
        if self._linger:
            _drain(self.connection)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        ops = self.server.ops.answer(self.path) if self.server.ops is not None else None
        if ops is not None:
            status, ctype, body = ops
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)
            return
        path = resolve(self.server.root, self.path) if self.server.files else None
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


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the client
        sock.shutdown(socket.SHUT_RDWR)


def _drain(sock: socket.socket) -> None:
    """Close our side, then read what the client still sends for a moment: closing a socket
    with unread bytes sends a reset, which can destroy the answer before the client reads it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:
        pass


class FeedServer(ThreadingHTTPServer):
    """An HTTP server whose threads are a fixed pool and whose connections are capped and timed."""

    daemon_threads = True  # a slow reader never holds up shutdown
    request_queue_size = BACKLOG

    def __init__(
        self,
        root: Path,
        host: str,
        port: int,
        max_age: float,
        *,
        workers: int = WORKERS,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
        ops=None,
        files: bool = True,
    ):
        self.ops = ops  # answers /metrics and /healthz (`ops.Ops`), or None
        self.files = files  # False: a listener for /metrics and /healthz only
        self.root = Path(root).resolve()
        self.max_age = int(max_age)
        self.cache = FileCache()
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        # Each open connection → when its request head is due (None while answering it).
        self._deadlines: dict[socket.socket, float | None] = {}
        self._idle: set[socket.socket] = set()  # kept alive, waiting for a next request
        self._lock = threading.Lock()
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()
        super().__init__((host, port), FeedHandler)
        self._pool = [threading.Thread(target=self._work, name=f"http-{n}", daemon=True) for n in range(workers)]
        for t in self._pool:
            t.start()

    # -- connections: admitted up to the cap, queued for the pool, timed until their head arrives

    def verify_request(self, request, client_address) -> bool:
        with self._lock:
            if len(self._deadlines) >= self.max_connections:
                return False  # socketserver closes it
            self._deadlines[request] = time.monotonic() + self.request_timeout
        return True

    def process_request(self, request, client_address) -> None:
        self._waiting.put((request, client_address))

    def _work(self) -> None:
        while (item := self._waiting.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def shutdown_request(self, request) -> None:
        with self._lock:
            self._deadlines.pop(request, None)
            self._idle.discard(request)
        super().shutdown_request(request)

    def expect_head(self, conn: socket.socket) -> None:
        """A request head is awaited: due `request_timeout` from now, unless already due (the
        first one is due from the connect, however long the connection waited for a thread)."""
        with self._lock:
            if conn in self._deadlines and self._deadlines[conn] is None:
                self._deadlines[conn] = time.monotonic() + self.request_timeout
                self._idle.add(conn)

    def head_received(self, conn: socket.socket) -> None:
        with self._lock:
            if conn in self._deadlines:
                self._deadlines[conn] = None
                self._idle.discard(conn)

    def crowded(self) -> bool:
        return not self._waiting.empty()

    def service_actions(self) -> None:
        """Called by serve_forever's loop about every poll interval: end the late connections,
        and the idle ones when others wait. A shutdown, unlike a close, is safe while another
        thread reads the socket: it wakes the reader with end-of-file."""
        with self._lock:
            for conn in to_close(self._deadlines, self._idle, time.monotonic(), self.crowded()):
                self._deadlines[conn] = None  # shut once; its thread removes it
                self._idle.discard(conn)
                _shut(conn)  # under the lock, so a head that just arrived is not cut off

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a reset, a broken pipe, a timeout: the client's doing
            log.debug("connection from %s ended", client_address, exc_info=True)
        else:
            log.exception("error answering %s", client_address)

    def server_close(self) -> None:
        super().server_close()
        for _ in self._pool:
            self._waiting.put(None)
        with self._lock:
            conns = list(self._deadlines)
        for conn in conns:
            _shut(conn)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def start(root: Path, host: str, port: int, max_age: float, **limits) -> tuple[FeedServer, threading.Thread]:
    """Bind and serve from a background thread; stop with `server.shutdown()`. `limits`:
    FeedServer's `workers`, `max_connections`, `request_timeout`."""
    root.mkdir(parents=True, exist_ok=True)
    server = FeedServer(root, host, port, max_age, **limits)
    # The poll interval is also how often late connections are looked for.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="http", daemon=True)
    thread.start()
    log.info("serving %s at %s", root, server.url)
    return server, thread
