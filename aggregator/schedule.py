"""`aggregator run`: APScheduler wiring that keeps every feed fresh, and nothing more.

Jobs (all `max_instances=1`, coalescing, with a misfire grace time):

- `fetch:<name>`, one per remote source, on an interval trigger with jitter. The database's
  `next_due` (last fetch, back-off, Retry-After, feed hints) decides when it really runs: the
  first run is placed at `next_due` (so a restart does not refetch everything, and a source
  that was backing off stays backed off), and after every run the job moves to the new
  `next_due`.
- `scan:<name>`, one per article folder, on its interval, and poked by a watchdog observer
  within about a second of any change in the folder.
- `build`, a one-shot job placed by `request_build` after any job changed entries (and
  once at start), debounced: a burst of changes gives one dedup + publish, never a blind timer.
- `retention`, on `[retention] every`: pruning and database upkeep.

Scans, builds and retention share one worker (they are local and write the most); fetches
run on their own pool. Every job ends with one log line (source, outcome, counts, seconds),
text or JSON. A job that raises is logged and retried with back-off; the scheduler goes on.

Signals: SIGTERM/SIGINT stop the scheduler and wait a few seconds for in-flight jobs (whose
transactions commit or roll back; files are replaced atomically); SIGHUP reloads the config,
keeping the old one if the new one is bad.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import DBAPIError

from . import pipeline, retention
from .config import ConfigError, Settings, SourceSettings, load_config
from .logs import counts, job_log
from .sources.hostbudget import LocalBudget
from .stopping import SHUTDOWN_GRACE, install_signals
from .store import Store, now_utc
from .timing import Debounce, after_fetch, fetch_decision, first_run, jitter, retry_delay

log = logging.getLogger("aggregator.daemon")

WATCH_QUIET = 1.0  # seconds of calm in a folder before it is rescanned
WATCH_MAX_WAIT = 10.0  # a folder that never calms down is rescanned at least this often
BUILD_QUIET = 1.0  # seconds without a new change before building
BUILD_MAX_WAIT = 15.0  # a steady stream of changes still publishes this often


def remote_sources(settings: Settings) -> list[SourceSettings]:
    """Every enabled remote source, OPML files expanded (the fetch stage's own list)."""
    from .sources.opml import remote_sources as expand

    return [s for s in expand(settings) if s.enabled]


@dataclass(slots=True)
class _JobState:
    failures: int = 0
    debounce: Debounce | None = None


@dataclass
class Daemon:
    settings: Settings
    store: Store
    serve: tuple[str, int] | None = None
    load: Callable[[Path], Settings] = load_config
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _reload: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _touched: set[int] = field(default_factory=set)
    _build_debounce: Debounce = field(default_factory=lambda: Debounce(BUILD_QUIET, BUILD_MAX_WAIT))
    _jobs: dict[str, _JobState] = field(default_factory=dict)
    _intervals: dict[str, float] = field(default_factory=dict)
    _remote: dict[str, SourceSettings] = field(default_factory=dict)
    server: Any = None
    servers: list = field(default_factory=list)
    ops: Any = None  # metrics, health and alerts (`ops.Ops`)
    observer: Any = None
    scheduler: BackgroundScheduler = field(init=False)
    budget: LocalBudget = field(init=False)  # `[fetch] per_host` across every fetch job of the process

    def __post_init__(self) -> None:
        self.budget = LocalBudget(self.settings.fetch.per_host)
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={
                # As many fetches in flight as `[fetch] concurrency`, so a few stalled servers
                # (each abandoned at its timeout) cannot hold up the other sources.
                "default": ThreadPoolExecutor(max_workers=self.settings.fetch.concurrency),
                "local": ThreadPoolExecutor(max_workers=1),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        self.scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)
        from .ops import Ops

        self.ops = Ops(self.settings, self.store, sources=lambda: set(self._remote), jobs=self._job_times)

    def _job_times(self) -> list[tuple[str, datetime | None, float]]:
        """(id, next run, interval) of the interval jobs, for `/healthz`."""
        return [(j.id, j.next_run_time, self._intervals[j.id]) for j in self.scheduler.get_jobs()
                if j.id in self._intervals]  # fmt: skip

    # -------------------------------------------------------------- life cycle

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status."""
        self._install_signals()
        from .ops import start_servers
        from .sources.tls import import_aiohttp

        import_aiohttp()  # while this is the only thread (see `tls.import_aiohttp`)

        self.servers = start_servers(self.ops, self.serve)
        self.server = self.servers[0] if self.serve is not None else None
        self._start_observer()
        self.scheduler.start()
        self.sync_jobs()
        self.request_build()  # publish once at start, even when nothing changed
        log.info("daemon started: pid %d, %d sources", os.getpid(), len(self.settings.sources))
        while not self._stop.is_set():
            self._wake.wait(timeout=60)
            self._wake.clear()
            if self._reload and not self._stop.is_set():
                self._reload = False
                self.reload()
        return self.shutdown()

    def shutdown(self) -> int:
        started = time.monotonic()
        log.info("stopping: waiting up to %.0f s for running jobs", SHUTDOWN_GRACE)
        if self.observer is not None:
            self.observer.stop()
        for server in self.servers:
            server.shutdown()
            server.server_close()
        done = threading.Event()

        def stop_scheduler() -> None:
            try:
                if self.scheduler.running:
                    self.scheduler.shutdown(wait=True)
            finally:
                done.set()

        threading.Thread(target=stop_scheduler, name="scheduler-stop", daemon=True).start()
        if not done.wait(SHUTDOWN_GRACE):
            # A job is stuck (a slow server, a long build). Its transaction rolls back when
            # the process ends and files are only ever replaced whole, so leaving is safe.
            log.warning("stopped after %.1f s; abandoning jobs still running", time.monotonic() - started)
            logging.shutdown()
            os._exit(0)
        if self.observer is not None:
            self.observer.join(timeout=2)
        log.info("stopped after %.1f s", time.monotonic() - started)
        return 0

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _install_signals(self) -> None:
        def reload() -> None:  # done by the main loop, not in the signal handler
            self._reload = True
            self._wake.set()

        install_signals(self._stop, self.stop, reload)

    def reload(self) -> bool:
        """Re-read the config file; a bad one is refused and the running config stays."""
        path = self.settings.config_path
        try:
            new = self.load(path)
        except ConfigError as e:
            log.error("config reload refused, keeping the running config: %s", e)
            return False
        if new.database.url != self.settings.database.url:
            log.error("config reload refused: %s: database.url cannot change while running; restart instead", path)
            return False
        if (
            new.serve != self.settings.serve
            or new.output.dir != self.settings.output.dir
            or new.database.cache_mb != self.settings.database.cache_mb
        ):
            log.warning("%s: [serve], output.dir and database.cache_mb changes take effect at the next restart", path)
        with self._lock:
            self.settings = new
            self.ops.settings = new
            self.budget.per_host = new.fetch.per_host
        self.sync_jobs()
        self._sync_watches()
        self.request_build()
        log.warning("config reloaded from %s: %d sources", path, len(new.sources))
        return True

    # -------------------------------------------------------------- jobs

    def _state(self, job_id: str) -> _JobState:
        with self._lock:
            return self._jobs.setdefault(job_id, _JobState())

    def _source(self, name: str) -> SourceSettings | None:
        found = next((s for s in self.settings.sources if s.name == name and s.enabled), None)
        return found or self._remote.get(name)

    def _every(self, source: SourceSettings) -> float:
        return source.every or self.settings.fetch.every

    def desired_jobs(self) -> dict[str, tuple[str, SourceSettings, float]]:
        """job id → (kind, source, interval) for the current config."""
        out: dict[str, tuple[str, SourceSettings, float]] = {}
        for s in self.settings.file_sources:
            out[f"scan:{s.name}"] = ("scan", s, self._every(s))
        for s in self._remote.values():
            out[f"fetch:{s.name}"] = ("fetch", s, self._every(s))
        return out

    def sync_jobs(self) -> None:
        """Make the scheduler's jobs match the config: add, re-time or remove them."""
        try:
            remote = remote_sources(self.settings)
        except ConfigError as e:  # an unreadable OPML file: keep the sources we had
            log.error("%s; keeping the remote sources already scheduled", e)
            remote = list(self._remote.values())
        self._remote = {s.name: s for s in remote}
        desired = self.desired_jobs()
        for job in self.scheduler.get_jobs():
            if job.id.startswith(("fetch:", "scan:")) and job.id not in desired:
                job.remove()
                self._intervals.pop(job.id, None)
        now = now_utc()
        due = self.store.due_times() if any(v[0] == "fetch" for v in desired.values()) else {}
        for job_id, (kind, source, every) in desired.items():
            if self._intervals.get(job_id) == every and self.scheduler.get_job(job_id) is not None:
                continue
            existing = self.scheduler.get_job(job_id)
            if kind == "fetch":
                stored = due.get(source.name, (None, None))[0]
                start = existing.next_run_time if existing else first_run(stored, now, every, source.name)
                func, executor = self.fetch_now, "default"
            else:
                start = existing.next_run_time if existing else now  # scan every folder at start
                func, executor = self.scan_now, "local"
            if existing is not None:
                existing.remove()
            self.scheduler.add_job(
                func,
                IntervalTrigger(seconds=every, start_date=start, jitter=jitter(every) or None, timezone=UTC),
                args=[source.name],
                id=job_id,
                name=job_id,
                executor=executor,
                misfire_grace_time=int(max(30.0, every / 2)),
                next_run_time=start,
            )
            self._intervals[job_id] = every
        # Always scheduled: even without pruning rules the database gets its periodic upkeep.
        every = self.settings.retention.every
        if self._intervals.get("retention") != every:
            self.scheduler.add_job(
                self.prune_now,
                IntervalTrigger(seconds=every, timezone=UTC),
                id="retention",
                name="retention",
                executor="local",
                replace_existing=True,
            )
            self._intervals["retention"] = every

    def _skipped(self, event: JobSubmissionEvent) -> None:
        """A run was skipped because the previous one is still going: a change that poked a scan
        or a build must not be lost, so try again shortly."""
        if event.job_id == "build":
            self.request_build(delay=1.0)
        elif event.job_id.startswith("scan:"):
            self._move(event.job_id, now_utc() + timedelta(seconds=1))

    def _move(self, job_id: str, when: datetime) -> None:
        with contextlib.suppress(JobLookupError):  # removed by a reload meanwhile
            self.scheduler.modify_job(job_id, next_run_time=when)

    def poke(self, job_id: str) -> None:
        """Something changed for this job (a file in a watched folder): run it soon, debounced."""
        state = self._state(job_id)
        with self._lock:
            if state.debounce is None:
                state.debounce = Debounce(WATCH_QUIET, WATCH_MAX_WAIT)
            run_at = state.debounce.note(time.monotonic())
        self._move(job_id, now_utc() + timedelta(seconds=max(0.0, run_at - time.monotonic())))

    def request_build(self, touched: list[int] | None = None, delay: float | None = None) -> None:
        """Entries changed: dedup and publish soon, once for a whole burst of changes. A request
        that names no entries (retention, the publisher finding stored changes) leaves a build
        already scheduled where it is: counted as a new change, each would push it back."""
        if not touched and self.scheduler.get_job("build") is not None:
            return
        with self._lock:
            if touched:
                self._touched.update(touched)
            mono = time.monotonic()
            wait = (self._build_debounce.note(mono) - mono) if delay is None else delay
        if self._stop.is_set():
            return
        run_at = datetime.now(UTC) + timedelta(seconds=max(0.0, wait))
        self.scheduler.add_job(
            self.build_now, "date", run_date=run_at, id="build", name="build", executor="local", replace_existing=True
        )

    def _guarded(self, job_id: str, kind: str, source: str | None, body: Callable[[], dict[str, Any]]) -> None:
        """Run a job body: one log line, and a retry with back-off when it fails."""
        if self._stop.is_set():
            return
        state = self._state(job_id)
        started = time.monotonic()
        try:
            result = body()
        except DBAPIError as e:
            state.failures += 1
            delay = retry_delay(state.failures)
            job_log(logging.WARNING, kind, source, "database-error", time.monotonic() - started,
                    error=_first_line(e), retry_in=delay)  # fmt: skip
            self._retry(job_id, delay)
            self.ops.job_done(kind, time.monotonic() - started, None, f"database error: {_first_line(e)}")
        except Exception as e:
            state.failures += 1
            delay = retry_delay(state.failures)
            job_log(logging.ERROR, kind, source, "error", time.monotonic() - started,
                    error=f"{e.__class__.__name__}: {_first_line(e)}", retry_in=delay)  # fmt: skip
            log.debug("traceback of job %s", job_id, exc_info=True)
            self._retry(job_id, delay)
            self.ops.job_done(kind, time.monotonic() - started, None, f"{e.__class__.__name__}: {_first_line(e)}")
        else:
            state.failures = 0
            self.ops.job_done(kind, time.monotonic() - started, dict(result), None)
            job_log(logging.INFO, kind, source, result.pop("outcome", "ok"), time.monotonic() - started, **result)

    def _retry(self, job_id: str, delay: float) -> None:
        if self._stop.is_set():
            return
        if job_id == "build":
            self.request_build(delay=delay)
        else:
            self._move(job_id, now_utc() + timedelta(seconds=delay))

    def scan_now(self, name: str) -> None:
        job_id = f"scan:{name}"
        state = self._state(job_id)
        with self._lock:
            if state.debounce is not None:
                state.debounce.fired()

        def body() -> dict[str, Any]:
            source = self._source(name)
            if source is None or source.path is None:
                return {"outcome": "skipped"}
            report = pipeline.ingest_files(self.store, self.settings, source)
            if report.touched:
                self.request_build(report.touched)
            if report.next_release is not None:
                # A post dated in the future goes out when its date comes, not at the next rescan.
                job = self.scheduler.get_job(job_id)
                due = report.next_release + timedelta(seconds=1)
                if job is not None and (job.next_run_time is None or due < job.next_run_time):
                    self._move(job_id, due)
            return counts(report)

        self._guarded(job_id, "scan", name, body)

    def fetch_now(self, name: str) -> None:
        job_id = f"fetch:{name}"

        def body() -> dict[str, Any]:
            source = self._remote.get(name)
            if source is None:
                return {"outcome": "skipped"}
            every = self._every(source)
            next_due, disabled = self.store.due_time(name)
            decision = fetch_decision(next_due, disabled, now_utc())
            if decision != "fetch":
                when = after_fetch(next_due, now_utc(), every) if decision == "wait" else None
                if when is not None:
                    self._move(job_id, when)
                return {"outcome": "not-due" if decision == "wait" else "disabled", "next_due": _iso(when)}
            report = pipeline.fetch_one(self.store, self.settings, source, self.budget)
            touched = list(report.touched)
            if touched:
                self.request_build(touched)
            when = after_fetch(self.store.due_time(name)[0], now_utc(), every)
            if when is not None:
                self._move(job_id, when)
            out = counts(report)
            out.pop("seconds", None)
            out["http_seconds"] = round(getattr(report, "http_seconds", 0.0), 3)
            out["next_due"] = _iso(when)
            return out

        self._guarded(job_id, "fetch", name, body)

    def build_now(self) -> None:
        with self._lock:
            self._build_debounce.fired()
            touched = sorted(self._touched)
            self._touched.clear()

        def body() -> dict[str, Any]:
            started = time.monotonic()
            try:
                deduped, built = pipeline.settle(self.store, self.settings, touched)
            except BaseException:
                with self._lock:  # nothing was published: keep the ids for the retry
                    self._touched.update(touched)
                raise
            values = {
                "touched": len(touched),
                "duplicates": getattr(deduped, "duplicates", 0) if deduped else 0,
                "feeds": built.feeds,
                "rebuilt": built.rebuilt,
                "written": built.written,
                "changed": ",".join(built.changed) or "-",
            }
            seconds = round(time.monotonic() - started, 3)
            try:
                self.store.record_cycle({"at": now_utc().isoformat(), **values, "seconds": seconds})
            except DBAPIError as e:  # the feeds are published; only `status` misses this cycle
                log.warning("cannot record the cycle for `aggregator status`: %s", _first_line(e))
            return values

        self._guarded("build", "build", None, body)

    def prune_now(self) -> None:
        def body() -> dict[str, Any]:
            report = retention.prune(self.store, self.settings.retention, stop=self._stop)
            retention.upkeep(self.store)
            if report.pruned:
                self.request_build()
            return {"by_age": report.by_age, "by_count": report.by_count, "withdrawn": report.withdrawn}

        self._guarded("retention", "retention", None, body)

    # -------------------------------------------------------------- watching folders

    def _start_observer(self) -> None:
        from .watch import FolderWatcher

        self.observer = FolderWatcher(self.poke)
        self._sync_watches()
        self.observer.start()

    def _sync_watches(self) -> None:
        if self.observer is not None:
            self.observer.sync({s.name: s.path for s in self.settings.file_sources})


def _iso(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else "-"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__
