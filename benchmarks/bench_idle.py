"""Idle-daemon benchmark: what `aggregator run` costs when nothing changes.

500 remote sources (served by a local server in a separate process, all answering 304
after the first fetch) and 20,000 article files; every source due every 5 minutes. The
corpus is ingested and every feed fetched once with `aggregator update`, then the daemon
runs for 10 minutes. Printed: the daemon's CPU seconds and RSS when its start-up cycle has
settled and at the end, the average CPU use over the window, and how many requests the
feed server saw (each source should be polled about twice in 10 minutes, never in a burst
at start: next-due times come from the database).

Linux only (reads /proc). Run by hand; the figures go in docs/benchmarks.md ("Idle daemon").

    .venv/bin/python benchmarks/bench_idle.py [--sources 500] [--articles 20000] [--minutes 10] [--every 5m]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest import generate  # the same synthetic corpus as the ingest benchmark

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def feed(n: int) -> bytes:
    items = "".join(
        f"<item><title>Feed {n} item {i}</title><link>http://example.org/{n}/{i}</link>"
        f"<guid>http://example.org/{n}/{i}</guid><pubDate>Tue, 01 Mar 2022 09:{i:02d}:00 +0800</pubDate>"
        f"<description>Item {i} of feed {n}.</description></item>"
        for i in range(10)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {n}</title>'
        f"<link>http://example.org/{n}</link><description>d</description>{items}</channel></rss>"
    ).encode()


def serve_feeds(port_out, count) -> None:  # runs in its own process
    bodies = {f"/f/{n}.xml": feed(n) for n in range(2000)}
    tags = {p: '"' + hashlib.sha1(b).hexdigest()[:16] + '"' for p, b in bodies.items()}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            with count.get_lock():
                count.value += 1
            body, etag = bodies.get(self.path), tags.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    port_out.value = srv.server_address[1]
    srv.serve_forever()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=500)
    ap.add_argument("--articles", type=int, default=20_000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", default="5m")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args()

    count = multiprocessing.Value("i", 0)
    port = multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=serve_feeds, args=(port, count), daemon=True)
    server.start()
    while not port.value:
        time.sleep(0.05)

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-idle-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "articles").exists():
        print(f"generating {args.articles} articles in {work}/articles …", flush=True)
        generate(work / "articles", args.articles)
    sources = "".join(
        f'[[sources]]\nname = "feed{n}"\nurl = "http://127.0.0.1:{port.value}/f/{n}.xml"\nevery = "{args.every}"\n'
        for n in range(args.sources)
    )
    (work / "config.toml").write_text(
        '[database]\nurl = "sqlite:///db/agg.sqlite3"\n[output]\ndir = "out"\n'
        f'[[sources]]\nname = "articles"\npath = "articles"\nevery = "{args.every}"\n{sources}',
        encoding="utf-8",
    )
    aggregator = [sys.executable, "-m", "aggregator", "--config", str(work / "config.toml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    subprocess.run([*aggregator, "-q", "update"], check=True, env=env, cwd=work)
    print(f"prepared (update: ingest, first fetch of every feed, build) in {time.monotonic() - started:.0f} s")

    log = open(work / "daemon.log", "w")  # noqa: SIM115 - open for the daemon's lifetime
    daemon = subprocess.Popen([*aggregator, "run", "--serve", "--port", str(free_port())],
                              env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    # "Start": once the start-up cycle (scan of 20,000 files, first build) has settled.
    while "job=build" not in (work / "daemon.log").read_text(encoding="utf-8"):
        if daemon.poll() is not None:
            sys.exit(f"daemon exited: see {work / 'daemon.log'}")
        time.sleep(0.5)
    t0, cpu0, rss0, req0 = time.monotonic(), cpu_seconds(daemon.pid), rss_mb(daemon.pid), count.value
    print(f"start: cpu {cpu0:.1f} s (start-up cycle), rss {rss0:.0f} MB", flush=True)
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(60):
            samples.append(rss_mb(daemon.pid))

    threading.Thread(target=sample, daemon=True).start()
    time.sleep(args.minutes * 60)
    stop.set()
    t1, cpu1, rss1, req1 = time.monotonic(), cpu_seconds(daemon.pid), rss_mb(daemon.pid), count.value
    daemon.terminate()
    rc = daemon.wait(timeout=30)
    server.terminate()
    window = t1 - t0
    used = cpu1 - cpu0
    print(f"end:   cpu {cpu1:.1f} s, rss {rss1:.0f} MB; rss each minute: {' '.join(f'{m:.0f}' for m in samples)}")
    print(
        f"idle window {window:.0f} s: {used:.1f} cpu s = {100 * used / window:.2f} % of one core; "
        f"{req1 - req0} feed requests ({(req1 - req0) / max(1, args.sources):.1f} per source); "
        f"rss {rss0:.0f} → {rss1:.0f} MB; SIGTERM exit {rc}"
    )


if __name__ == "__main__":
    main()
