"""`serve` under many, slow and hostile clients: real sockets against the real server on 127.0.0.1.

Time bounds here are generous on purpose: what is tested is that nothing hangs, not speed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, write_config

from aggregator.serve import BACKLOG, carries_body, start, to_close

ATOM = b'<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom">' + b"<x/>" * 2000 + b"</feed>"
SMUGGLED = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    (root / "news").mkdir(parents=True)
    (root / "news" / "atom.xml").write_bytes(ATOM)
    (root / "index.html").write_bytes(b"<html>hi</html>")
    return root


def serving(out: Path, **limits):
    srv, thread = start(out, "127.0.0.1", 0, 60, **limits)
    return srv, thread


def stop(srv, thread) -> None:
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def exchange(port: int, data: bytes, wait: float = 10.0) -> tuple[bytes, bool]:
    """Send `data`; read until the server closes (True) or `wait` seconds pass (False)."""
    buf = b""
    deadline = time.monotonic() + wait
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return buf, False
            except OSError:
                return buf, True
            if not chunk:
                return buf, True
            buf += chunk
    return buf, False


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (reading and discarding), or None if it did not."""
    t0 = time.monotonic()
    while (left := seconds - (time.monotonic() - t0)) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - t0
        except TimeoutError:
            return None
        except OSError:
            return time.monotonic() - t0
    return None


async def _get(port: int, path: str) -> str:
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            await r.readexactly(int(length.group(1)) if length else 0)
            return head[9:12].decode()
        finally:
            w.close()
    except Exception as e:  # the outcome is what is counted
        return type(e).__name__


def burst(port: int, n: int, path: str, limit: float) -> dict[str, int]:
    """`n` clients at once, each one GET; outcome → count (unanswered past `limit` s counted too)."""

    async def run() -> dict[str, int]:
        tasks = [asyncio.create_task(_get(port, path)) for _ in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=limit)
        for p in pending:
            p.cancel()
        codes: dict[str, int] = {}
        for d in done:
            codes[d.result()] = codes.get(d.result(), 0) + 1
        if pending:
            codes["unanswered"] = len(pending)
        return codes

    return asyncio.run(run())


def test_decisions():
    assert carries_body("GET", None, ["12"]) and carries_body("HEAD", "chunked", [])
    assert carries_body("GET", None, ["0", "5"]) and carries_body("GET", None, ["x"])
    assert not carries_body("GET", None, []) and not carries_body("GET", None, ["0"])
    assert not carries_body("POST", None, ["12"])  # refused anyway, as not implemented
    assert to_close({"a": 5.0, "b": None, "c": 11.0, "d": 12.0}, {"c", "b"}, 10.0, False) == ["a"]
    assert to_close({"a": 5.0, "b": None, "c": 11.0, "d": 12.0}, {"c", "b"}, 10.0, True) == ["a", "c"]
    assert BACKLOG >= 128


def test_the_cli_holds_500_concurrent_clients_hides_python_and_refuses_a_get_with_a_body(tmp_path: Path):
    (tmp_path / "articles").mkdir()
    cfg = write_config(tmp_path)
    (tmp_path / "out" / "all").mkdir(parents=True)
    (tmp_path / "out" / "all" / "atom.xml").write_bytes(ATOM)
    (tmp_path / "out" / "index.html").write_bytes(b"<html>hi</html>")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(cfg), "serve", "--port", str(port)],
                         cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and p.poll() is None
                time.sleep(0.2)
        codes = burst(port, 500, "/all/atom.xml", 30)
        assert codes == {"200": 500}

        head, _ = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"python" not in head.lower()
        assert re.search(rb"(?im)^server: aggregator\r$", head)

        req = b"GET /all/atom.xml HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED)
        answer, closed = exchange(port, req)
        assert re.findall(rb"HTTP/1\.[01] (\d{3})", answer) == [b"400"] and closed
        assert b"python" not in answer.lower()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0


def test_a_body_announced_by_transfer_encoding_is_refused_and_an_empty_one_is_not(out: Path):
    srv, thread = serving(out)
    port = srv.server_address[1]
    try:
        chunked = b"GET /news/atom.xml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer, closed = exchange(port, chunked + b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED))
        assert re.findall(rb"HTTP/1\.[01] (\d{3})", answer) == [b"400"] and closed
        answer, closed = exchange(port, b"HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert answer.startswith(b"HTTP/1.1 400") and closed
        answer, _ = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"<html>hi</html>")
    finally:
        stop(srv, thread)


def test_unfinished_and_trickled_request_heads_and_idle_connections_are_closed(out: Path):
    srv, thread = serving(out, request_timeout=1.0)
    port = srv.server_address[1]
    try:
        partial = socket.create_connection(("127.0.0.1", port))
        partial.sendall(b"GET /news/atom.xml HT")  # a request line that never ends
        idle = socket.create_connection(("127.0.0.1", port))  # sends nothing at all
        kept = socket.create_connection(("127.0.0.1", port))
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then kept alive and left idle
        assert closed_within(partial, 15) is not None
        assert closed_within(idle, 15) is not None
        assert closed_within(kept, 15) is not None
        # One byte every 0.2 s: each read is quick, so a per-read timeout alone would wait forever.
        trickle = socket.create_connection(("127.0.0.1", port))
        t0, shut = time.monotonic(), False
        for byte in b"GET /news/atom.xml HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200:
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                shut = True
                break
            time.sleep(0.2)
        assert shut or closed_within(trickle, 1) is not None
        assert time.monotonic() - t0 < 15
        for s in (partial, idle, kept, trickle):
            s.close()
        assert exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0].startswith(b"HTTP/1.1 200")
    finally:
        stop(srv, thread)


def test_connections_beyond_the_cap_are_closed_at_once_and_served_again_when_room(out: Path):
    srv, thread = serving(out, max_connections=4, request_timeout=30.0)
    port = srv.server_address[1]
    try:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        time.sleep(0.5)  # let the server accept them
        extra = socket.create_connection(("127.0.0.1", port))
        assert closed_within(extra, 10) is not None
        extra.close()
        for s in held:
            s.close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the closes as its threads read end-of-file
            answer, _ = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait=2)
            if answer.startswith(b"HTTP/1.1 200"):
                break
            assert time.monotonic() < deadline
    finally:
        stop(srv, thread)


def test_a_small_pool_still_answers_many_clients_and_gives_up_keep_alive_when_crowded(out: Path):
    srv, thread = serving(out, workers=2)
    port = srv.server_address[1]
    try:
        # Two kept-alive connections would hold both threads; a crowded server closes them after
        # their answer, so the others get a turn long before the request timeout.
        kept = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            kept.append(s)
        codes = burst(port, 200, "/news/atom.xml", 10)
        assert codes == {"200": 200}
        for s in kept:
            s.close()
    finally:
        stop(srv, thread)
