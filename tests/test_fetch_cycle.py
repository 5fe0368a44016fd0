"""A fetch cycle's cost structure, through the public seams: what a cycle of 304s loads, how
many requests go to one host at once, and that documents parsed in worker processes (with
feedparser's own sanitizer off) still come out cleaned and with absolute URLs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_cli
from sqlalchemy import select
from werkzeug import Request, Response

from aggregator.pipeline import PARSE_PROCESSES_MIN, fetch
from aggregator.sources.remote import HOST_SLOW, HOST_START, HostSlots
from aggregator.store import Store
from aggregator.store.schema import ENTRIES


@pytest.fixture
def store(tmp_path: Path):
    s = Store(f"sqlite:///{tmp_path / 'db' / 'agg.sqlite3'}")
    yield s
    s.close()


def config(tmp_path: Path, urls: dict[str, str], fetch_opts: str = "") -> Path:
    body = [
        '[database]\nurl = "sqlite:///db/agg.sqlite3"',
        '[output]\ndir = "out"\nbase_url = "http://feeds.example.org/"\ntitle = "T"',
        f"[fetch]\nallow_private = true\ntimeout = 10\n{fetch_opts}",
    ]
    body += [f'[[sources]]\nname = "{n}"\nurl = "{u}"' for n, u in urls.items()]
    cfg = tmp_path / "config.toml"
    cfg.write_text("\n\n".join(body) + "\n", encoding="utf-8")
    return cfg


def rss(n: int, content: str = "<p>Body.</p>") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed</title>'
        f"<link>http://site{n}.test/</link><description>d</description>"
        f"<item><title>Item {n}</title><link>/posts/{n}.html</link><guid>g{n}</guid>"
        f"<pubDate>Mon, 05 Sep 2022 08:00:00 +0800</pubDate>"
        f"<description><![CDATA[{content}]]></description></item></channel></rss>"
    ).encode()


# ---------------------------------------------------------------- hostile markup, parsed in worker processes

HOSTILE = (
    "<p onclick=\"steal()\">Text <a href='javascript:alert(1)'>js</a> <a href='/rel/page.html'>rel</a></p>"
    "<script>alert(2)</script><style>body{display:none}</style><iframe src='http://evil.test/'></iframe>"
    "<img src='img/pic.jpg' onerror='alert(3)'><object data='x.swf'></object>"
    "<form action='http://evil.test/'><input name=q></form><!-- a comment --><svg onload='alert(4)'></svg>"
    "<a href='//cdn.test/x'>protocol-relative</a><a href='vbscript:msgbox(5)'>vb</a>"
)


def test_hostile_markup_is_cleaned_when_parsed_in_worker_processes(server, store, tmp_path, monkeypatch):
    # Enough feeds for the process pool, forked as the CLI does (no other thread).
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    n = PARSE_PROCESSES_MIN + 2
    for i in range(n):
        server.expect_request(f"/h/{i}.xml").respond_with_data(rss(i, HOSTILE), content_type="application/rss+xml")
    cfg = config(tmp_path, {f"h{i}": server.url_for(f"/h/{i}.xml") for i in range(n)}, "per_host = 8")
    from aggregator.config import load_config

    report = fetch(store, load_config(cfg))
    assert (report.fetched, report.new) == (n, n), report.errors[:3]
    with store.engine.connect() as c:
        entries = c.execute(select(ENTRIES)).all()
    assert len(entries) == n
    base = server.url_for("/h/")
    for e in entries:
        html = e.content
        for bad in ("<script", "alert(2)", "<style", "display:none", "<iframe", "onerror", "onclick", "<object",
                    "<form", "<input", "<!--", "onload", "javascript:", "vbscript:", "<svg"):  # fmt: skip
            assert bad not in html, (bad, html)
        # relative URLs are made absolute against the feed's URL, protocol-relative ones get its scheme
        assert f'href="{base.split("/h/")[0]}/rel/page.html"' in html
        assert f'src="{base}img/pic.jpg"' in html
        assert 'href="http://cdn.test/x"' in html
        assert e.link.startswith(base.split("/h/")[0] + "/posts/")


# ---------------------------------------------------------------- a cycle of 304s loads only what it uses

HEAVY = ("feedparser", "numpy", "feedgen", "jinja2", "rich", "lxml", "pypinyin", "rensa", "yaml", "cmarkgfm",
         "prometheus_client", "apprise", "aiohttp_socks")  # fmt: skip


def test_a_cycle_of_304s_imports_nothing_it_does_not_use(server, tmp_path):
    etag = '"v1"'

    def conditional(request: Request) -> Response:
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers={"ETag": etag})
        return Response(rss(1), content_type="application/rss+xml", headers={"ETag": etag})

    server.expect_request("/c.xml").respond_with_handler(conditional)
    cfg = config(tmp_path, {"c": server.url_for("/c.xml")})
    first = run_cli(cfg, "fetch")
    assert first.returncode == 0 and "1 downloaded" in first.stdout, first.stderr
    warm = run_cli(cfg, "fetch", python=("-X", "importtime"))
    assert warm.returncode == 0 and "1 not modified" in warm.stdout, warm.stderr
    modules = {line.split("|")[-1].strip() for line in warm.stderr.splitlines() if "import time" in line}
    loaded = {m.split(".")[0] for m in modules}
    assert "aiohttp" in loaded and "sqlalchemy.dialects.sqlite" in modules  # the measurement works
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    # A SQLite database's cycle: the PostgreSQL dialect is ~30 ms of start-up it does not use.
    assert "sqlalchemy.dialects.postgresql" not in modules


def test_reading_the_config_does_not_search_the_installed_distributions_for_pydantic_plugins(tmp_path):
    # The search reads every installed distribution's entry points: start-up time for nothing.
    cfg = config(tmp_path, {"c": "http://127.0.0.1:9/c.xml"})
    code = ("import os; os.environ.pop('PYDANTIC_DISABLE_PLUGINS', None)\n"
            "from aggregator.config import load_config\n"
            f"load_config({str(cfg)!r})\n"
            "from pydantic.plugin import _loader\n"
            "print('searched' if _loader._plugins is not None else 'not searched')")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "not searched", out.stderr[-2000:]


# ---------------------------------------------------------------- requests in flight to one host


def test_host_slots_start_small_and_grow_only_while_the_host_is_slow():
    async def run() -> list[int]:
        slots = HostSlots(10)
        seen = [slots.limit]
        for took in (0.001, 0.001, HOST_SLOW * 2, HOST_SLOW * 2, 0.001):
            await slots.acquire()
            await slots.release(took)
            seen.append(slots.limit)
        for _ in range(20):
            await slots.acquire()
            await slots.release(HOST_SLOW * 2)
        seen.append(slots.limit)
        return seen

    assert asyncio.run(run()) == [HOST_START, HOST_START, HOST_START, HOST_START + 1, HOST_START + 2,
                                  HOST_START + 2, 10]  # fmt: skip
    assert HostSlots(2).limit == 2  # never more than per_host


def test_host_slots_hold_back_requests_past_the_limit():
    async def run() -> tuple[int, int]:
        slots = HostSlots(HOST_START)
        most = now = 0

        async def one() -> None:
            nonlocal most, now
            await slots.acquire()
            now += 1
            most = max(most, now)
            await asyncio.sleep(0.01)
            now -= 1
            await slots.release(0.0)

        await asyncio.gather(*(one() for _ in range(20)))
        return most, slots.busy

    assert asyncio.run(run()) == (HOST_START, 0)


def test_a_slow_host_gets_up_to_per_host_requests_at_once(server, store, tmp_path):
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    body = rss(1)

    def slow(request: Request) -> Response:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return Response(body, content_type="application/rss+xml")

    for i in range(24):
        server.expect_request(f"/s/{i}.xml").respond_with_handler(slow)
    cfg = config(tmp_path, {f"s{i}": server.url_for(f"/s/{i}.xml") for i in range(24)}, "per_host = 8")
    from aggregator.config import load_config

    assert fetch(store, load_config(cfg)).fetched == 24
    assert state["max"] == 8


def test_a_source_is_next_due_one_interval_after_its_own_fetch_not_the_runs_start(server, store, tmp_path):
    # One slot for the host and 0.6 s per response: the third fetch happens over a second into
    # the run. Counting its next fetch from the run's start would make it due early (and a fetch
    # worker whose batch waited long for host slots would fetch it again at once).
    from datetime import UTC, datetime, timedelta

    body = rss(1)

    def slow(request: Request) -> Response:
        time.sleep(0.6)
        return Response(body, content_type="application/rss+xml")

    for i in range(3):
        server.expect_request(f"/q/{i}.xml").respond_with_handler(slow)
    cfg = config(tmp_path, {f"q{i}": server.url_for(f"/q/{i}.xml") for i in range(3)}, 'per_host = 1\nevery = "1h"')
    from aggregator.config import load_config

    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert fetch(store, load_config(cfg), now=start).fetched == 3
    due = sorted(d for d, _ in store.due_times().values())
    # Fetch times are kept to the second, like every time the store keeps.
    assert all(d.microsecond == 0 for d in due)
    assert due[0] >= start + timedelta(hours=1)
    assert due[2] >= start + timedelta(hours=1, seconds=1)
    assert due[2] < start + timedelta(hours=1, minutes=1)


def serve_stories(server, tmp_path: Path, feeds: int, extra: str = "") -> Path:
    for i in range(feeds):
        body = rss(i, f"<p>第{i}条新闻正文，市场消息。</p><p>Paragraph {i} of the story.</p>")
        server.expect_request(f"/f/{i}.xml").respond_with_data(body, content_type="application/rss+xml")
    cfg = config(tmp_path, {f"f{i}": server.url_for(f"/f/{i}.xml") for i in range(feeds)}, "per_host = 8")
    cfg.write_text(cfg.read_text() + extra, encoding="utf-8")
    return cfg


def stored_features(store: Store) -> list[tuple]:
    with store.engine.connect() as c:
        return [(r.link, r.content, r.version, r.dedup_version, r.minhash, r.fingerprint, r.url_key)
                for r in c.execute(select(ENTRIES))]  # fmt: skip


def test_update_has_the_parse_workers_compute_dedup_features(server, store, tmp_path, monkeypatch):
    """In `update`, which dedups next, the parse workers compute each entry's dedup features
    (in parallel, while the entry is at hand), the same ones dedup would compute."""
    from aggregator.config import load_config
    from aggregator.features import features, tracking_patterns

    monkeypatch.setattr(threading, "active_count", lambda: 1)  # forked as the CLI does
    n = PARSE_PROCESSES_MIN + 2
    settings = load_config(serve_stories(server, tmp_path, n))
    assert fetch(store, settings, with_features=True).new == n
    patterns = tracking_patterns(settings.dedup.tracking_params)
    rows = stored_features(store)
    assert len(rows) == n
    for link, content, version, dedup_version, *found in rows:
        f = features(link, content, patterns)
        assert dedup_version == version and found == [f.signature, f.fingerprint, f.url_key]


@pytest.mark.parametrize(
    ("feeds", "with_features", "extra"),
    [
        (PARSE_PROCESSES_MIN + 2, False, ""),  # a fetch alone leaves them to the next dedup run
        (2, True, ""),  # parsed in threads: no parallelism to gain
        (PARSE_PROCESSES_MIN + 2, True, "\n[dedup]\nenabled = false\n"),
    ],
)
def test_otherwise_dedup_computes_the_features(server, store, tmp_path, monkeypatch, feeds, with_features, extra):
    from aggregator.config import load_config

    monkeypatch.setattr(threading, "active_count", lambda: 1)
    settings = load_config(serve_stories(server, tmp_path, feeds, extra))
    assert fetch(store, settings, with_features=with_features).new == feeds
    assert {(r[3], r[4]) for r in stored_features(store)} == {(None, None)}
