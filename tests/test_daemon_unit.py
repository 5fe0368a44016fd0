"""The daemon's decisions and jobs, in-process (real SQLite, real folders, a real local feed server)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from conftest import config_database_url, write_config
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from test_daemon import FeedServer

from aggregator import logs, pipeline
from aggregator.config import load_config
from aggregator.logs import JsonFormatter, configure_logging, counts, format_fields
from aggregator.schedule import Daemon
from aggregator.status import status
from aggregator.store import Store
from aggregator.store.schema import SOURCES
from aggregator.timing import Debounce, after_fetch, fetch_decision, first_run, jitter, retry_delay, stagger

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


# ------------------------------------------------------------------ pure decisions


def test_debounce_waits_for_calm_but_not_forever():
    d = Debounce(quiet=1.0, max_wait=5.0)
    assert d.note(100.0) == 101.0
    assert d.note(100.5) == 101.5  # each change pushes the run back…
    assert d.note(104.5) == 105.0  # …but never past first + max_wait
    d.fired()
    assert d.note(200.0) == 201.0


def test_retry_delay_doubles_and_caps():
    assert [retry_delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert retry_delay(50) == 300.0
    assert retry_delay(0) == 2.0


def test_stagger_is_stable_and_bounded():
    assert stagger("a", 60) == stagger("a", 60)
    assert all(0 <= stagger(f"s{i}", 60) < 60 for i in range(100))
    assert len({round(stagger(f"s{i}", 60), 3) for i in range(100)}) > 50


def test_first_run_honours_the_stored_next_due():
    ahead = NOW + timedelta(hours=3)
    assert first_run(ahead, NOW, 1800, "x") == ahead  # backing off: stays backed off
    soon = first_run(NOW - timedelta(days=2), NOW, 1800, "x")
    assert NOW <= soon < NOW + timedelta(seconds=60)  # overdue: soon, staggered
    assert NOW <= first_run(None, NOW, 5, "x") < NOW + timedelta(seconds=5)


def test_after_fetch_and_fetch_decision():
    assert after_fetch(None, NOW, 60) is None
    assert after_fetch(NOW + timedelta(hours=1), NOW, 60) == NOW + timedelta(hours=1)
    assert after_fetch(NOW - timedelta(hours=1), NOW, 600) == NOW + timedelta(seconds=30)  # no hot loop
    assert fetch_decision(None, None, NOW) == "fetch"
    assert fetch_decision(NOW, None, NOW) == "fetch"
    assert fetch_decision(NOW + timedelta(seconds=1), None, NOW) == "wait"
    assert fetch_decision(None, "410 Gone", NOW) == "disabled"


def test_jitter_and_report_fields():
    assert jitter(1800) == 180 and jitter(86400) == 300 and jitter(5) == 0

    @dataclass
    class Report:
        new: int = 3
        ok: bool = True
        seconds: float = 0.5
        touched: list[int] = field(default_factory=lambda: [1, 2])

    assert counts(Report()) == {"new": 3, "touched": 2}
    assert counts(object()) == {}
    assert format_fields({"job": "fetch", "source": "a b", "seconds": 0.5, "n": 3, "e": ""}) == (
        'job=fetch source="a b" seconds=0.50 n=3 e=""'
    )


def test_json_formatter():
    record = logging.LogRecord("aggregator.daemon", logging.INFO, __file__, 1, "job=x", None, None)
    record.fields = {"job": "x", "source": "北京"}
    line = json.loads(JsonFormatter().format(record))
    assert line["job"] == "x" and line["source"] == "北京" and line["level"] == "info" and line["message"] == "job=x"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["traceback"]


def test_configure_logging_switches_format():
    root = logging.getLogger()
    saved = [(h, h.formatter) for h in root.handlers]
    names = ("aggregator", "aggregator.pipeline", "aggregator.dedup", "apscheduler")
    levels = {n: logging.getLogger(n).level for n in names}
    try:
        configure_logging(True, 0)
        assert all(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
        assert logging.getLogger("aggregator").level == logging.INFO
        configure_logging(False, 2)
        assert logging.getLogger("aggregator").level == logging.DEBUG
    finally:
        for h, f in saved:
            h.setFormatter(f)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


# ------------------------------------------------------------------ jobs in-process


@pytest.fixture
def feeds():
    srv = FeedServer()
    yield srv
    srv.close()


@pytest.fixture
def daemon(site: Path, feeds: FeedServer):
    extra = (
        f'[[sources]]\nname = "remote"\nurl = "{feeds.url}/feed.xml"\nallow_private = true\n'
        'every = "1h"\ncategories = ["remote news"]\n'
    )
    write_config(site, extra_sources=extra)
    settings = load_config(site / "config.toml")
    store = Store(settings.database.url)
    d = Daemon(settings, store)
    yield d
    if d.scheduler.running:
        d.scheduler.shutdown(wait=False)
    store.close()


def test_scan_then_build_publishes_and_records_the_cycle(daemon: Daemon, site: Path, caplog):
    caplog.set_level(logging.INFO, logger="aggregator.daemon")
    daemon.scan_now("local")
    assert daemon._touched  # the changes wait for the debounced build
    assert not (site / "out" / "all" / "atom.xml").exists()
    daemon.build_now()
    assert (site / "out" / "all" / "atom.xml").exists()
    assert not daemon._touched
    cycle = daemon.store.last_cycle()
    assert cycle is not None and cycle["written"] > 0 and cycle["touched"] > 0
    daemon.build_now()
    assert daemon.store.last_cycle()["written"] == 0  # nothing changed: nothing rewritten
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("job=scan source=local outcome=ok") and "new=" in m for m in lines)
    assert any(m.startswith("job=build outcome=ok") for m in lines)


def test_fetch_job_follows_next_due(daemon: Daemon, feeds: FeedServer, site: Path, caplog):
    caplog.set_level(logging.INFO, logger="aggregator.daemon")
    daemon.scheduler.start(paused=True)
    daemon.sync_jobs()
    assert daemon.scheduler.get_job("fetch:remote") is not None
    daemon.fetch_now("remote")
    assert feeds.requests == ["/feed.xml"]
    assert daemon._touched
    job = daemon.scheduler.get_job("fetch:remote")
    assert job.next_run_time > datetime.now(UTC) + timedelta(minutes=50)  # moved to the stored next_due
    daemon.fetch_now("remote")  # not due yet: no request
    assert feeds.requests == ["/feed.xml"]
    assert any("outcome=not-due" in r.getMessage() for r in caplog.records)
    daemon.build_now()
    assert "Remote one" in (site / "out" / "remote-news" / "atom.xml").read_text(encoding="utf-8")
    # A source a 410 disabled is not fetched.
    with daemon.store.engine.begin() as c:
        c.execute(update(SOURCES).where(SOURCES.c.name == "remote").values(disabled="410 Gone", next_due=None))
    daemon.fetch_now("remote")
    assert feeds.requests == ["/feed.xml"]


def test_restart_keeps_stored_next_due(daemon: Daemon):
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    daemon.store.source_id("remote", "feed", "x")
    with daemon.store.engine.begin() as c:
        c.execute(update(SOURCES).where(SOURCES.c.name == "remote").values(next_due=later))
    daemon.scheduler.start(paused=True)
    daemon.sync_jobs()
    assert daemon.scheduler.get_job("fetch:remote").next_run_time == later
    assert daemon.scheduler.get_job("scan:local").next_run_time <= datetime.now(UTC)  # folders: scanned at once


def test_a_failing_job_is_logged_with_its_source_and_retried(daemon: Daemon, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="aggregator.daemon")
    daemon.scheduler.start(paused=True)
    daemon.sync_jobs()

    def boom(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline, "ingest_files", boom)
    daemon.scan_now("local")
    line = next(r for r in caplog.records if "outcome=error" in r.getMessage())
    assert "source=local" in line.getMessage() and "disk on fire" in line.getMessage()
    assert line.fields["retry_in"] == 2.0
    job = daemon.scheduler.get_job("scan:local")
    assert job.next_run_time < datetime.now(UTC) + timedelta(seconds=5)

    def locked(*_a, **_k):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(pipeline, "ingest_files", locked)
    daemon.scan_now("local")
    line = next(r for r in caplog.records if "outcome=database-error" in r.getMessage())
    assert line.fields["retry_in"] == 4.0  # second failure in a row: backed off further

    monkeypatch.setattr(pipeline, "settle", locked)
    daemon._touched.update({1, 2})
    daemon.build_now()
    assert daemon._touched == {1, 2}  # kept for the retry
    assert daemon.scheduler.get_job("build") is not None


def test_skipped_runs_are_retried(daemon: Daemon):
    daemon.scheduler.start(paused=True)
    daemon.sync_jobs()
    daemon._skipped(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "build", "default", [NOW]))
    assert daemon.scheduler.get_job("build") is not None
    daemon._skipped(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "scan:local", "default", [NOW]))
    assert daemon.scheduler.get_job("scan:local").next_run_time < datetime.now(UTC) + timedelta(seconds=5)
    daemon.poke("scan:gone")  # a job removed by a reload: ignored


def test_reload(daemon: Daemon, site: Path, caplog):
    daemon.scheduler.start(paused=True)
    daemon.sync_jobs()
    cfg = site / "config.toml"
    good = cfg.read_text(encoding="utf-8")
    cfg.write_text(good + "\n[output]\nbogus = 1\n", encoding="utf-8")
    assert not daemon.reload()
    assert "config reload refused" in caplog.text and "output" in caplog.text
    written = tomllib.loads(good)["database"]["url"]  # as the config spells it, whichever the backend
    cfg.write_text(good.replace(written, "sqlite:///db/other.sqlite3"), encoding="utf-8")
    assert not daemon.reload()
    assert "database.url cannot change" in caplog.text
    # Dropping the remote source and changing the folder's interval re-times the jobs.
    local_only = good.split('[[sources]]\nname = "remote"')[0]
    cfg.write_text(local_only.replace('path = "articles"', 'path = "articles"\nevery = "5m"'), encoding="utf-8")
    assert daemon.reload()
    assert daemon.scheduler.get_job("fetch:remote") is None
    assert daemon._intervals["scan:local"] == 300.0


def test_status(daemon: Daemon):
    daemon.scan_now("local")
    daemon.build_now()
    st = status(daemon.store)
    assert not st.running and st.holder is None
    assert st.last_cycle is not None
    assert [s.name for s in st.sources] == ["local"] and st.sources[0].entries > 0
    assert any(n > 0 for _, _, n in st.categories)
    assert st.database_bytes and st.database_bytes > 0


def test_run_until_stopped_in_process(daemon: Daemon, site: Path):
    """run(): serve, watch, scan, build; a new file is picked up; stop() returns 0."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    daemon.serve = ("127.0.0.1", port)
    feed = site / "out" / "all" / "atom.xml"
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    result: list[int] = []

    def drive() -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end and not feed.exists():
            time.sleep(0.1)
        (site / "articles" / "zz-new.md").write_text(
            "---\ntitle: 'Watched file'\ndate: 2022-03-01 09:00:00 +0800\n---\n<p>x</p>\n", encoding="utf-8"
        )
        while time.monotonic() < end and "Watched file" not in feed.read_text(encoding="utf-8"):
            time.sleep(0.1)
        daemon._reload = True  # as SIGHUP does
        daemon._wake.set()
        time.sleep(0.3)
        daemon.stop()

    t = threading.Thread(target=drive)
    t.start()
    try:
        result.append(daemon.run())
    finally:
        t.join()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert result == [0]
    assert "Watched file" in feed.read_text(encoding="utf-8")
    assert not daemon.scheduler.running


# ------------------------------------------------------------------ the CLI commands, in-process


def test_cli_status_run_and_lock_in_process(site: Path, monkeypatch):
    from click.testing import CliRunner

    from aggregator.cli import main
    from aggregator.lock import writer

    cfg = str(site / "config.toml")
    runner = CliRunner()
    r = runner.invoke(main, ["--config", cfg, "status"])
    assert r.exit_code == 0 and "daemon: not running" in r.output and "last cycle: none yet" in r.output
    seen: dict = {}

    def fake_run(self: Daemon) -> int:
        seen["serve"] = self.serve
        return 0

    monkeypatch.setattr(Daemon, "run", fake_run)
    monkeypatch.setattr(logs, "configure_logging", lambda *_: None)  # keep pytest's log capture as is
    r = runner.invoke(main, ["--config", cfg, "run", "--serve", "--port", "9999", "--json-logs"])
    assert r.exit_code == 0 and seen["serve"] == ("127.0.0.1", 9999)
    store = Store(config_database_url(site / "config.toml"))
    try:
        with writer(store, "run"):  # the SQLite file's lock or the lease row, as the daemon takes it
            r = runner.invoke(main, ["--config", cfg, "run"])
            assert r.exit_code == 3 and "only one writer" in r.output
            r = runner.invoke(main, ["--config", cfg, "status"])
            assert "daemon: running, pid" in r.output
    finally:
        store.close()


def test_the_publisher_looking_for_changes_does_not_push_back_a_scheduled_build(site: Path):
    # Each request counts as a change for the build's debounce: a look every `poll` while a
    # build waits would keep moving it back to the debounce's longest wait.
    from aggregator.roles import Publisher

    write_config(site)
    settings = load_config(site / "config.toml")
    store = Store(settings.database.url)
    p = Publisher(settings, store)
    try:
        p.scheduler.start(paused=True)
        p.scan_now("local")  # entries stored, pending dedup
        assert store.has_pending_changes()
        p.look_for_changes()
        first = p.scheduler.get_job("build").next_run_time
        time.sleep(0.3)
        p.look_for_changes()
        assert p.scheduler.get_job("build").next_run_time == first
    finally:
        p.scheduler.shutdown(wait=False)
        store.close()


def test_a_skipped_build_or_scan_is_no_warning_but_a_skipped_fetch_is(capsys):
    """APScheduler warns of every run it skips because the previous one still runs; the daemon
    runs a skipped build or scan again itself, so those are no warnings (they are with -vv)."""
    from types import SimpleNamespace

    root = logging.getLogger()
    saved = [(h, h.formatter) for h in root.handlers]
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)
    level = logging.getLogger("apscheduler").level
    scheduler = logging.getLogger("apscheduler.scheduler")

    def skipped(job_id: str) -> None:
        job = SimpleNamespace(id=job_id)
        scheduler.warning('Execution of job "%s" skipped: maximum number of running instances reached (%d)', job, 1)

    try:
        configure_logging(False, 0)
        configure_logging(False, 0)  # configured twice (a reload): one filter
        for job_id in ("build", "scan:local", "fetch:slow-feed"):
            skipped(job_id)
        lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
        assert len(lines) == 1 and "fetch:slow-feed" in lines[0] and "WARNING" in lines[0]
        configure_logging(False, 2)
        skipped("build")
        assert "build" in capsys.readouterr().err
    finally:
        root.removeHandler(handler)
        for h, f in saved:
            h.setFormatter(f)
        logging.getLogger("apscheduler").setLevel(level)
        for f in [f for f in scheduler.filters if f.__class__.__name__ == "ExpectedSkips"]:
            scheduler.removeFilter(f)
