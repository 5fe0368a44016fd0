"""Losing the writer lease: a holder whose renewal finds the lease taken, or cannot get through
before it lapses, stops writing and exits with a message. Real processes on a real database
(SQLite through the portable lease SQL; PostgreSQL and the real daemon with AGG_TEST_PG_URL)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, reset_database, write_config
from sqlalchemy import create_engine, text

from aggregator.lock import EXIT_LEASE_LOST, LEASE_NAME, renewal_verdict
from aggregator.store import Store

PG_URL = os.environ.get("AGG_TEST_PG_URL")  # a scratch database; .ci/run starts one

# A writer holding a 3 s lease (renewed every second) and inserting a row every 0.1 s.
HOLDER = textwrap.dedent("""
    import sys, time
    from sqlalchemy import create_engine, text
    import aggregator.lock as lockmod

    from aggregator.store import Store

    store = Store(sys.argv[1])
    lease = lockmod.LeaseWriterLock(store, seconds=3)
    lockmod.writer_lock_for = lambda _store: lease
    with lockmod.writer(store, "run"):
        print("held", flush=True)
        while True:
            with store.engine.begin() as c:
                c.execute(text("INSERT INTO marks VALUES (:t)"), {"t": time.time()})
            time.sleep(0.1)
    print("left the writer block", flush=True)
""")


def test_renewal_verdict():
    assert renewal_verdict(True, 100.0, 90.0, 5.0) == "ok"  # renewed, even if late by our clock
    assert renewal_verdict(False, 10.0, 60.0, 15.0) == "lost"  # the row is another's
    assert renewal_verdict(None, 10.0, 60.0, 15.0) == "retry"  # failed, time left
    assert renewal_verdict(None, 45.0, 60.0, 15.0) == "lost"  # failed, too close to the lapse


def _holder(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    url = f"sqlite:///{tmp_path / 'lease.sqlite3'}"
    store = Store(url)
    with store.engine.begin() as c:
        c.execute(text("CREATE TABLE marks (t REAL)"))
    store.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, url], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout.readline().strip() == "held"
    return p, str(tmp_path / "lease.sqlite3")


def _marks(db: str) -> int:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT count(*) FROM marks").fetchone()[0]


def test_a_holder_whose_lease_was_taken_exits_and_writes_no_more(tmp_path: Path):
    p, db = _holder(tmp_path)
    try:
        time.sleep(1.5)
        assert p.poll() is None and _marks(db) > 0
        with sqlite3.connect(db) as c:  # another process took the lease (as after a lapse)
            c.execute("UPDATE daemon_state SET holder = 'thief' WHERE name = ?", (LEASE_NAME,))
        rc = p.wait(timeout=20)
        err = p.stderr.read()
        assert rc == EXIT_LEASE_LOST
        assert "lost the writer lease" in err and "another process holds it now" in err
        assert "left the writer block" not in p.stdout.read()
        n = _marks(db)
        time.sleep(0.5)
        assert _marks(db) == n
        with sqlite3.connect(db) as c:  # and it left the thief's lease alone
            assert c.execute("SELECT holder FROM daemon_state").fetchall() == [("thief",)]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_holder_that_cannot_renew_before_the_lease_lapses_exits(tmp_path: Path):
    p, db = _holder(tmp_path)
    blocker = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        time.sleep(1.5)
        blocker.execute("BEGIN EXCLUSIVE")  # the database stops answering the holder
        rc = p.wait(timeout=20)
        err = p.stderr.read()
        assert rc == EXIT_LEASE_LOST and "lost the writer lease" in err, err
    finally:
        blocker.close()
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.skipif(not PG_URL, reason="AGG_TEST_PG_URL not set")
def test_the_daemon_on_postgresql_stops_when_its_lease_is_taken(tmp_path: Path):
    reset_database(PG_URL)
    scratch = create_engine(PG_URL)
    (tmp_path / "articles").mkdir()
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("sqlite:///db/agg.sqlite3", PG_URL), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(cfg), "run"], cwd=tmp_path, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with scratch.connect() as c:
                try:
                    held = c.execute(text("SELECT holder FROM daemon_state WHERE name = :n"), {"n": LEASE_NAME}).first()
                except Exception:  # the table is not created yet
                    held = None
            if held and held[0]:
                break
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.3)
        with scratch.begin() as c:
            c.execute(text("UPDATE daemon_state SET holder = 'thief' WHERE name = :n"), {"n": LEASE_NAME})
        rc = p.wait(timeout=60)  # the next renewal, within 20 s, finds the lease gone
        assert rc == EXIT_LEASE_LOST and "lost the writer lease" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        scratch.dispose()
        reset_database(PG_URL)
