"""The per-host budget shared beyond one fetch call: across the event loops of one process
(`LocalBudget`, the daemon's per-source jobs) and across processes through PostgreSQL
(`DatabaseHostBudget`, fetch workers), against a real loopback server that counts the
requests it is answering at once."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time

import pytest
from conftest import PG_URL, reset_database

from aggregator.sources.hostbudget import POLL_FIRST, POLL_MOST, LocalBudget, next_poll
from aggregator.sources.remote import FetchRequest, fetch_many

RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
CALLERS = 3  # fetch calls side by side, each with its own event loop (as daemon jobs or workers)
PER_CALL = 8  # requests per call


class CountingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.served = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.now += 1
            srv.peak = max(srv.peak, srv.now)
        time.sleep(0.03)  # long enough for requests to overlap when nothing stops them
        with srv.lock:
            srv.now -= 1
            srv.served += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(RSS)))
        self.end_headers()
        self.wfile.write(RSS)


@pytest.fixture
def counting_server():
    srv = CountingServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _fetch_side_by_side(srv: CountingServer, budgets: list) -> None:
    """CALLERS fetch calls at once, each allowed PER_CALL per host on its own, call i using budgets[i]."""
    base = f"http://127.0.0.1:{srv.server_address[1]}"

    async def done(_req, result) -> None:
        assert result.status == 200, result.error

    def call(i: int) -> None:
        reqs = [FetchRequest(f"c{i}-{k}", f"{base}/{i}/{k}.xml", allow_private=True) for k in range(PER_CALL)]
        asyncio.run(fetch_many(reqs, PER_CALL, PER_CALL, 1_000_000, done, budget=budgets[i]))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert srv.served == CALLERS * PER_CALL


def test_next_poll_doubles_from_the_first_pause_up_to_a_cap() -> None:
    assert next_poll(0) == POLL_FIRST
    assert next_poll(POLL_FIRST) == 2 * POLL_FIRST
    assert next_poll(POLL_MOST) == POLL_MOST


def test_local_budget_counts_per_host() -> None:
    b = LocalBudget(2)
    a1, a2 = b.take("a"), b.take("a")
    assert a1 is not None and a2 is not None and b.take("a") is None
    assert b.take("b") is not None  # another host has its own slots
    b.give("a", a1)
    assert b.in_flight("a") == 1 and b.take("a") is not None


def test_without_a_shared_budget_each_call_keeps_only_its_own_limit(counting_server: CountingServer) -> None:
    """The control: what the budget is there to prevent does happen without it."""
    _fetch_side_by_side(counting_server, [None] * CALLERS)
    assert counting_server.peak > 2


def test_one_local_budget_holds_per_host_across_event_loops(counting_server: CountingServer) -> None:
    shared = LocalBudget(2)
    _fetch_side_by_side(counting_server, [shared] * CALLERS)
    assert counting_server.peak <= 2
    assert shared.in_flight("127.0.0.1") == 0


@pytest.mark.skipif(not PG_URL, reason="AGG_TEST_PG_URL not set")
def test_the_database_budget_holds_per_host_across_sessions(counting_server: CountingServer) -> None:
    from aggregator.store import Store
    from aggregator.store.hostslots import DatabaseHostBudget

    reset_database(PG_URL)
    store = Store(PG_URL)
    budgets = [DatabaseHostBudget(store.engine, 2) for _ in range(CALLERS)]  # one session each, as workers
    try:
        _fetch_side_by_side(counting_server, budgets)
        assert counting_server.peak <= 2
        assert all(b.round_trips >= PER_CALL * 2 for b in budgets)  # a take and a give per request at least
    finally:
        for b in budgets:
            b.close()
        store.close()


@pytest.mark.skipif(not PG_URL, reason="AGG_TEST_PG_URL not set")
def test_a_closed_budget_frees_its_slots_and_a_dead_ones_expire() -> None:
    from aggregator.store import Store
    from aggregator.store.hostslots import DatabaseHostBudget

    reset_database(PG_URL)
    store = Store(PG_URL)
    a, b = DatabaseHostBudget(store.engine, 1), DatabaseHostBudget(store.engine, 1)
    dead = DatabaseHostBudget(store.engine, 1, hold=1.0)
    try:
        assert a.take("h") == 0 and a.take("h") is None and b.take("h") is None
        a.close()  # a worker stopping: its slots are given back
        assert b.take("h") == 0
        b.give("h", 0)
        assert dead.take("h") == 0
        dead._conn.invalidate()  # as when a worker dies mid-request: its session ends, the row stays
        assert b.take("h") is None  # its request may still be answered: the slot stays taken
        end, taken = time.monotonic() + 10, None
        while taken is None and time.monotonic() < end:
            time.sleep(0.1)
            taken = b.take("h")
        assert taken == 0  # free once its hold expired
    finally:
        a.close()
        b.close()
        store.close()


def test_the_daemons_fetch_jobs_share_per_host(counting_server: CountingServer, tmp_path) -> None:
    # The daemon runs one fetch job per source, each with its own event loop: `[fetch] per_host`
    # must hold across all of them (it once held within one job only: 14-16 in flight at 2).
    from conftest import write_config

    from aggregator.config import load_config
    from aggregator.schedule import Daemon
    from aggregator.store import Store

    base = f"http://127.0.0.1:{counting_server.server_address[1]}"
    names = [f"s{i}" for i in range(12)]
    extra = "".join(f'[[sources]]\nname = "{n}"\nurl = "{base}/{n}.xml"\nallow_private = true\n' for n in names)
    (tmp_path / "articles").mkdir()
    write_config(tmp_path, "[fetch]\nper_host = 2\n", extra_sources=extra)
    settings = load_config(tmp_path / "config.toml")
    store = Store(settings.database.url)
    try:
        daemon = Daemon(settings, store)
        daemon.scheduler.start(paused=True)  # the jobs exist, their fetches run here, side by side
        daemon.sync_jobs()
        jobs = [threading.Thread(target=daemon.fetch_now, args=(n,)) for n in names]
        for t in jobs:
            t.start()
        for t in jobs:
            t.join()
        daemon.scheduler.shutdown(wait=False)
    finally:
        store.close()
    assert counting_server.served == len(names)
    assert counting_server.peak == 2
