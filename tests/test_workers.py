"""Several fetch workers and a publisher on one PostgreSQL database, through the real CLI,
against a loopback server with 200 feeds: every feed fetched once, a SIGKILLed worker's
sources taken over, and the same published feeds as one process on SQLite. Two publishers:
one builds, the other stands by and takes over when the first is SIGKILLed.

Skipped without AGG_TEST_PG_URL (a scratch database the test empties); `.ci/run` sets it."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import feedparser
import pytest
from conftest import PG_URL, ROOT, reset_database, run_cli, write_config

from aggregator.lock import LeaseWriterLock
from aggregator.store import Store

pytestmark = pytest.mark.skipif(not PG_URL, reason="AGG_TEST_PG_URL not set")

N_FEEDS = 200
CATS = ["markets", "tech", "world"]
DELAY = 0.1  # s per response: fetching takes long enough for a worker to be killed mid-way
LEASE = 4  # s, `[workers] lease`: the test waits a few of these at most
WAIT = 60.0  # s: the longest any step waits before the test gives up (a limit, not a measurement)


def feed(i: int) -> bytes:
    items = "".join(
        f"<item><title>Feed {i:03d} story {j}</title><guid>urn:t:{i}:{j}</guid>"
        f"<link>http://s{i % 7}.example.org/{i}/{j}</link><description>story {j} of feed {i}</description></item>"
        for j in range(2)
    )
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed {i:03d}</title>'
            f"<link>http://s{i % 7}.example.org/</link>{items}</channel></rss>").encode()  # fmt: skip


class FeedServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.log: list[tuple[str, float]] = []  # (path, when the request arrived)

    def handle_error(self, request, client_address) -> None:  # a killed worker breaks its pipe
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.log.append((self.path, time.time()))
        time.sleep(DELAY)
        i = int(self.path.rsplit("/", 1)[-1].split(".")[0])
        body = feed(i)
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def feed_server():
    srv = FeedServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def config(folder: Path, db_url: str, port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[database]", f'url = "{db_url}"',
        "[output]", 'dir = "out"', 'base_url = "http://feeds.example.org/"', 'title = "Workers"', "max_items = 1000",
        # Due once an hour: within the test, a second request for a feed is a double fetch.
        "[fetch]", 'every = "1h"', "per_host = 4", "allow_private = true", 'timeout = "10s"',
        "[workers]", f'lease = "{LEASE}s"', 'poll = "0.5s"',
    ]  # fmt: skip
    for i in range(N_FEEDS):
        lines += ["[[sources]]", f'name = "feed{i:03d}"', f'url = "http://127.0.0.1:{port}/f/{i:03d}.xml"',
                  f'categories = ["{CATS[i % len(CATS)]}"]']  # fmt: skip
    cfg = folder / "config.toml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


def spawn(cfg: Path, log: Path, *args: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(cfg), *args], cwd=cfg.parent,
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                start_new_session=True)  # fmt: skip


def wait_for(what, limit: float = WAIT) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if what():
            return True
        time.sleep(0.1)
    return what()


def titles(path: Path) -> set[str] | None:
    if not path.exists():
        return None
    return {e.title for e in feedparser.parse(path.read_bytes()).entries}


def test_three_fetch_workers_and_a_publisher_share_the_sources(feed_server: FeedServer, tmp_path: Path) -> None:
    reset_database(PG_URL)
    port = feed_server.server_address[1]
    cfg = config(tmp_path / "multi", PG_URL, port)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for k in range(3):
            procs[f"fetch{k}"] = spawn(cfg, tmp_path / f"fetch{k}.log", "-v", "run", "--role", "fetch")
        procs["publish"] = spawn(cfg, tmp_path / "publish.log", "-v", "run", "--role", "publish")

        # SIGKILL a worker once fetching is well under way (requests still arriving).
        assert wait_for(lambda: len(feed_server.log) >= 40), "no fetching began"
        victim = procs.pop("fetch0")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.time()

        def fetched() -> set[str]:
            with feed_server.lock:
                return {p for p, _ in feed_server.log}

        assert wait_for(lambda: len(fetched()) == N_FEEDS), f"{N_FEEDS - len(fetched())} feeds never fetched"
        with feed_server.lock:
            log = list(feed_server.log)
        by_path: dict[str, list[float]] = {}
        for path, when in log:
            by_path.setdefault(path, []).append(when)
        doubles = {p: ts for p, ts in by_path.items() if len(ts) > 1}
        # A second request is allowed only for a feed the killed worker was fetching: its first
        # request came before the kill and was never recorded. Everything else: exactly once.
        assert all(len(ts) == 2 and min(ts) <= killed_at for ts in doubles.values()), doubles
        assert len(doubles) <= 4 * 8  # at most the killed worker's claims (lanes × batch)

        expected = {f"Feed {i:03d} story {j}" for i in range(N_FEEDS) for j in range(2)}
        out = cfg.parent / "out"
        assert wait_for(lambda: titles(out / "all" / "atom.xml") == expected), "the publisher did not publish it all"
        for name, p in procs.items():
            assert p.poll() is None, f"{name} exited {p.returncode}: {(tmp_path / f'{name}.log').read_text()[-500:]}"
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for name, p in procs.items():
            assert p.wait(30) == 0, f"{name}: {(tmp_path / f'{name}.log').read_text()[-500:]}"
    finally:
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)

    # One process on SQLite, same feeds: the same entries in every published feed.
    single = config(tmp_path / "single", "sqlite:///db/agg.sqlite3", port)
    r = run_cli(single, "update", timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ["all", *CATS]:
        assert titles(out / name / "atom.xml") == titles(single.parent / "out" / name / "atom.xml"), name


STANDBY_LEASE = 3  # s, the shortest `[workers] lease` the config allows
ARTICLE = "---\ntitle: '{title}'\ndate: 2022-03-0{day} 09:00:00 +0800\n---\n<p>{body}</p>\n"


def test_a_standby_publisher_takes_over_within_a_lease_of_the_active_one_dying(tmp_path: Path) -> None:
    reset_database(PG_URL)
    articles = tmp_path / "articles"
    articles.mkdir()
    stories = {"Harbour reopens": "The harbour reopened to ships on Monday.",
               "Rail fares frozen": "Fares on the regional lines stay as they are this year."}  # fmt: skip
    for day, (title, body) in enumerate(stories.items(), 1):
        (articles / f"{day}.md").write_text(ARTICLE.format(title=title, day=day, body=body), encoding="utf-8")
    # Two publishers of one database, each with an output folder of its own: whose folder gets
    # the feeds shows who builds. `poll` stays at its default: one under the build debounce's
    # quiet second would put each build off until its longest wait (each poll that finds
    # changes counts as a change).
    body = f'[workers]\nlease = "{STANDBY_LEASE}s"'
    cfgs = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        cfgs[name] = write_config(tmp_path / name, body, articles=str(articles), url=PG_URL)
    procs = {name: spawn(cfg, tmp_path / f"{name}.log", "-v", "run", "--role", "publish") for name, cfg in cfgs.items()}
    store = Store(PG_URL)

    def holder() -> int | None:
        found = LeaseWriterLock(store).holder()
        return found.pid if found else None

    def feed(name: str) -> Path:
        return tmp_path / name / "out" / "all" / "atom.xml"

    def log(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    try:
        assert wait_for(lambda: holder() in {p.pid for p in procs.values()}), "no publisher took the lease"
        active = next(name for name, p in procs.items() if p.pid == holder())
        standby = "b" if active == "a" else "a"
        assert wait_for(lambda: titles(feed(active)) == set(stories)), log(active)[-1000:]
        assert wait_for(lambda: "standing by" in log(standby)), log(standby)[-1000:]
        assert holder() == procs[active].pid
        assert not feed(standby).exists() and "job=build" not in log(standby)  # exactly one builds

        procs[active].send_signal(signal.SIGKILL)
        procs[active].wait(10)
        killed = time.monotonic()
        (articles / "3.md").write_text(
            ARTICLE.format(title="Written after the kill", day=3, body="Written after the first publisher died."),
            encoding="utf-8",
        )
        assert wait_for(lambda: holder() == procs[standby].pid), log(standby)[-1000:]
        took_over = time.monotonic() - killed
        assert wait_for(lambda: "Written after the kill" in (titles(feed(standby)) or set())), log(standby)[-1000:]
        published = time.monotonic() - killed
        # The dead publisher's lease lapses within one lease of its last renewal and the standby
        # looks every third of a lease (the margin: a loaded machine); it then scans, waits out
        # the build debounce (a second) and builds.
        assert took_over <= STANDBY_LEASE + 3, took_over
        assert published <= STANDBY_LEASE + 12, published
        assert titles(feed(standby)) == {*stories, "Written after the kill"}

        assert procs[standby].poll() is None, log(standby)[-1000:]
        procs[standby].send_signal(signal.SIGTERM)
        assert procs[standby].wait(30) == 0, log(standby)[-1000:]
    finally:
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        store.close()
