"""The writer lock: a file lock beside SQLite, a lease row for server databases, and the CLI refusing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, config_database_url, run_cli

from aggregator.lock import (
    FileWriterLock,
    Holder,
    LeaseWriterLock,
    LockHeld,
    refusal,
    writer,
    writer_lock_for,
)
from aggregator.store import Store, lease_free
from aggregator.store.database import sqlite_file as sqlite_path

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_pure_helpers():
    assert sqlite_path("sqlite:////tmp/x/agg.sqlite3") == Path("/tmp/x/agg.sqlite3")
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("postgresql+psycopg://u@h/db") is None
    assert lease_free(None, None, "me", T0)
    assert lease_free(T0 + timedelta(seconds=5), "me", "me", T0)
    assert not lease_free(T0 + timedelta(seconds=5), "other", "me", T0)
    assert lease_free(T0, "other", "me", T0)  # expired
    h = Holder(42, "box", "run", "2026-01-01T00:00:00+00:00")
    assert Holder.loads(h.dumps()) == h
    assert Holder.loads("not json") is None and Holder.loads(None) is None
    assert "pid 42" in refusal(h, "db") and "another process" in refusal(None, "db")


def test_file_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path):
    db = tmp_path / "db" / "agg.sqlite3"
    first = FileWriterLock(db)
    first.acquire("run")
    assert first.holder() is not None and first.holder().pid == os.getpid()
    # Another process tries: refused, and told who holds it.
    code = textwrap.dedent(f"""
        from pathlib import Path
        from aggregator.lock import FileWriterLock, LockHeld
        try:
            FileWriterLock(Path({str(db)!r})).acquire("update")
        except LockHeld as e:
            print(e)
            raise SystemExit(3)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 3, r.stderr
    assert f"pid {os.getpid()}" in r.stdout and "aggregator run" in r.stdout
    probe = FileWriterLock(db)
    assert probe.is_held_elsewhere()
    first.release()
    assert not first.info.exists()
    assert not probe.is_held_elsewhere()
    first.release()  # releasing twice is harmless
    first.renew()


def test_file_lock_is_freed_when_the_holder_is_killed(tmp_path: Path):
    db = tmp_path / "agg.sqlite3"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from aggregator.lock import FileWriterLock
        lock = FileWriterLock(Path({str(db)!r}))  # kept referenced: a collected FileLock unlocks
        lock.acquire("run")
        print("held", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {p.pid}"):
            FileWriterLock(db).acquire("update")
    finally:
        p.kill()
        p.wait()
    lock = FileWriterLock(db)
    lock.acquire("update", wait=10)  # SIGKILL left nothing stale behind
    lock.release()


def test_lease_lock(tmp_path: Path):
    engine = Store(f"sqlite:///{tmp_path / 'lease.sqlite3'}")
    a, b = LeaseWriterLock(engine, seconds=30), LeaseWriterLock(engine, seconds=30)
    a.acquire("run")
    assert b.is_held_elsewhere() and not a.is_held_elsewhere()
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}.*aggregator run"):
        b.acquire("update", wait=0.2)
    a.acquire("run")  # re-acquiring one's own lease is fine
    a.renew()
    a.release()
    a.release()
    a.renew()  # no-op once released
    b.acquire("update")
    assert b.holder().command == "update"
    b.release()
    engine.close()


def test_lapsed_lease_is_taken_over(tmp_path: Path):
    engine = Store(f"sqlite:///{tmp_path / 'lease.sqlite3'}")
    dead = LeaseWriterLock(engine, seconds=0.5)
    dead.acquire("run")  # never renewed: its holder "died"
    heir = LeaseWriterLock(engine, seconds=30)
    heir.acquire("run", wait=10)
    assert heir.holder().command == "run" and not heir.is_held_elsewhere()
    assert dead.renew() is False  # the old holder's renewal no longer touches the row
    assert dead.is_held_elsewhere()
    engine.close()


def test_writer_context_renews_a_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    engine = Store(f"sqlite:///{tmp_path / 'lease.sqlite3'}")
    import aggregator.lock as lockmod

    # Expiry times are stored to the second, so the lease must be a few seconds long for a
    # renewal (every seconds/3) to always leave it in the future.
    lease = LeaseWriterLock(engine, seconds=3)
    monkeypatch.setattr(lockmod, "writer_lock_for", lambda _store: lease)
    with writer(engine, "run"):
        time.sleep(4)  # longer than the lease: only the renewals keep it
        with pytest.raises(LockHeld):
            LeaseWriterLock(engine, seconds=30).acquire("update")
    assert not LeaseWriterLock(engine).is_held_elsewhere()  # released on exit
    engine.close()


def test_writer_lock_for_picks_the_kind(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'agg.sqlite3'}")
    assert isinstance(writer_lock_for(store), FileWriterLock)
    store.close()
    mem = Store("sqlite://")
    assert isinstance(writer_lock_for(mem), LeaseWriterLock)
    mem.close()


def test_update_refused_while_another_writer_holds_the_lock(site: Path):
    # The lock of the config's database, whichever kind: the SQLite file's or the lease row.
    store = Store(config_database_url(site / "config.toml"))
    try:
        with writer(store, "run"):
            r = run_cli(site / "config.toml", "update")
            assert r.returncode == 3
            assert f"pid {os.getpid()}" in r.stderr and "only one writer" in r.stderr
            r = run_cli(site / "config.toml", "update", "--wait", "0.3")
            assert r.returncode == 3
    finally:
        store.close()
    r = run_cli(site / "config.toml", "update")
    assert r.returncode == 0, r.stderr
