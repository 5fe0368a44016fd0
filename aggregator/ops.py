"""Watching the daemon: Prometheus metrics, a health answer and alerts.

The daemon calls `Ops.job_done` after every job; `serve` answers `/metrics` and `/healthz` from
the same object (`answer`). Whether the daemon is healthy is a pure function (`health`); what to
alert is `alerts.decide`. prometheus-client and Apprise are imported here only when used, so the
one-shot commands (`aggregator fetch`, `update`) never load them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from .config import Settings
from .store import Store, now_utc

log = logging.getLogger(__name__)

# Fetch latency buckets, seconds: most feeds answer in well under a second, a stalled one at its timeout.
FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60)
BUILD_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300)


def health(db_ok: bool, last_ok: float | None, late: list[tuple[str, float]]) -> tuple[bool, str]:
    """(healthy, reason). Healthy: the database answers, a cycle has finished, and no job is
    late, i.e. none was due more than its interval ago without having run (every job then
    finished within twice its interval, unless it was put off on purpose: a source backing off
    is rescheduled to its next due time, which is not lateness)."""
    if not db_ok:
        return False, "the database does not answer"
    if last_ok is None:
        return False, "no cycle has finished yet"
    if late:
        job, seconds = max(late, key=lambda x: x[1])
        more = f" (and {len(late) - 1} more)" if len(late) > 1 else ""
        return False, f"job {job} is {seconds:.0f} s late{more}: the scheduler is stuck or overloaded"
    return True, f"ok: last job finished {time.time() - last_ok:.0f} s ago"


def late_jobs(jobs: list[tuple[str, datetime | None, float]], now: datetime) -> list[tuple[str, float]]:
    """(job id, seconds late) of each job whose run time is more than its interval in the past."""
    out = []
    for job_id, next_run, interval in jobs:
        if next_run is None:
            continue
        behind = (now - next_run).total_seconds()
        if behind > max(interval, 60.0):  # a busy executor may start a job a little late
            out.append((job_id, behind))
    return out


class Metrics:
    """The Prometheus metrics of one process, in their own registry (no process/platform noise
    from the default one: the daemon's work is what is watched)."""

    def __init__(self, ops: Ops):
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
        from prometheus_client.core import GaugeMetricFamily

        disable_created_metrics()  # `_created` series double the output and no dashboard reads them

        r = self.registry = CollectorRegistry(auto_describe=True)
        self.fetches = Counter("aggregator_fetches", "Fetches of remote sources by outcome", ["outcome"], registry=r)
        self.fetch_seconds = Histogram("aggregator_fetch_seconds", "HTTP time of one source's fetch, seconds",
                                       buckets=FETCH_BUCKETS, registry=r)  # fmt: skip
        self.entries = Counter("aggregator_entries_stored", "Entries stored, by new or updated", ["kind"], registry=r)
        self.duplicates = Counter("aggregator_duplicates_found", "Entries found to duplicate another", registry=r)
        self.builds = Counter("aggregator_builds", "Builds (dedup and publish) by outcome", ["outcome"], registry=r)
        self.build_seconds = Histogram("aggregator_build_seconds", "Duration of a build, seconds",
                                       buckets=BUILD_BUCKETS, registry=r)  # fmt: skip
        self.files = Counter("aggregator_files_written", "Feed and page files written (changed)", registry=r)
        for outcome in ("fetched", "not_modified", "failed"):
            self.fetches.labels(outcome)
        for kind in ("new", "updated"):
            self.entries.labels(kind)
        for outcome in ("ok", "failed"):
            self.builds.labels(outcome)

        class FromStore:
            """Values read when scraped: they live in the database, shared with other processes."""

            def collect(self):
                backoff = GaugeMetricFamily(
                    "aggregator_sources_in_backoff", "Remote sources whose last fetch failed (backing off) or disabled"
                )
                last = GaugeMetricFamily("aggregator_last_successful_cycle_timestamp_seconds",
                                         "Unix time the last cycle finished without error")  # fmt: skip
                try:
                    backoff.add_metric([], len(ops.store.failing_sources()))
                    yield backoff
                except Exception as e:  # a scrape must answer even when the database does not
                    log.warning("metrics: cannot read the sources: %s", e)
                when = ops.last_ok()
                if when is not None:
                    last.add_metric([], when)
                    yield last

        r.register(FromStore())

    def job(self, kind: str, seconds: float, result: dict | None, failed: bool) -> None:
        result = result or {}
        if kind == "fetch" and result.get("outcome") not in ("not-due", "disabled", "skipped"):
            for outcome in ("fetched", "not_modified", "failed"):
                if result.get(outcome):
                    self.fetches.labels(outcome).inc(result[outcome])
            if failed:
                self.fetches.labels("failed").inc()
            if "http_seconds" in result:
                self.fetch_seconds.observe(result["http_seconds"])
        if kind in ("fetch", "scan"):
            for k in ("new", "updated"):
                if result.get(k):
                    self.entries.labels(k).inc(result[k])
        if kind == "build":
            self.builds.labels("failed" if failed else "ok").inc()
            if not failed:
                self.build_seconds.observe(seconds)
                self.duplicates.inc(result.get("duplicates", 0) or 0)
                self.files.inc(result.get("written", 0) or 0)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Ops:
    """Metrics, health and alerts of one process. In the daemon, `job_done` feeds it; under a
    bare `serve` (no daemon here), health and the last cycle come from what the daemon stored."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        sources: Callable[[], set[str]] | None = None,
        jobs: Callable[[], list[tuple[str, datetime | None, float]]] | None = None,
    ):
        self.settings = settings
        self.store = store
        self.sources = sources or (lambda: set())
        self.jobs = jobs  # None: no daemon in this process (a bare `serve`)
        self._last_ok: float | None = None
        self._metrics: Metrics | None = None
        self._lock = threading.Lock()
        self._alert_lock = threading.Lock()

    # ---- what the daemon tells

    def job_done(self, kind: str, seconds: float, result: dict | None, error: str | None) -> None:
        """After each job: count it, note a finished cycle, and raise or clear alerts. Never raises:
        watching must not break the work."""
        try:
            if error is None:
                self._last_ok = time.time()
            if self.settings.serve.metrics:
                self.metrics().job(kind, seconds, result, error is not None)
            if self.settings.alerts.urls and kind in ("fetch", "build"):
                self.check_alerts(build_error=error if kind == "build" else ..., now=now_utc())
        except Exception:
            log.exception("watching the %s job failed", kind)

    def metrics(self) -> Metrics:
        with self._lock:
            if self._metrics is None:
                self._metrics = Metrics(self)
            return self._metrics

    def last_ok(self) -> float | None:
        if self.jobs is not None:
            return self._last_ok
        cycle = self.store.last_cycle() or {}
        try:
            return datetime.fromisoformat(cycle["at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return None

    # ---- alerts

    def check_alerts(self, build_error=..., now: datetime | None = None) -> list[str]:
        """Raise or clear alerts from the sources' state and the last build (`build_error`: its
        error, None when it succeeded, `...` when this was no build). Returns what was sent."""
        from .alerts import BUILD, Problem, decide, send, source_key

        now = now or now_utc()
        with self._alert_lock:
            state = self.store.alert_state()
            configured = self.sources()
            failing = {n: e for n, e in self.store.failing_sources().items() if n in configured}
            since = {n: state["failing"].get(n, now.isoformat()) for n in failing}
            if build_error is not ...:
                state["build"] = build_error
            problems = [Problem(source_key(n), datetime.fromisoformat(since[n]), e) for n, e in failing.items()]
            if state.get("build"):
                problems.append(Problem(BUILD, now, state["build"]))
            after = timedelta(seconds=self.settings.alerts.source_failing_after)
            # A source taken out of the config is not "recovered": its alert is simply closed.
            opened = {k for k in state["open"] if k == BUILD or k.split(":", 1)[1] in configured}
            messages, now_open = decide(problems, opened, now, after)
            sent = set(send(self.settings.alerts.urls, messages))
            for m in messages:
                if m.key not in sent:  # not delivered: try again on the next check
                    (now_open.add if m.recovered else now_open.discard)(m.key)
            self.store.save_alert_state({"open": sorted(now_open), "failing": since, "build": state.get("build")})
        for m in messages:
            if m.key in sent:
                log.warning("alert sent: %s", m.title)
        return sorted(sent)

    # ---- what serve answers

    def answer(self, path: str) -> tuple[int, str, bytes] | None:
        """(status, content type, body) for /metrics and /healthz, None for any other path."""
        path = path.split("?", 1)[0]
        if path == "/metrics" and self.settings.serve.metrics:
            body, ctype = self.metrics().render()
            return 200, ctype, body
        if path == "/healthz" and self.settings.serve.healthz:
            ok, reason = self.health()
            return (200 if ok else 503), "text/plain; charset=utf-8", (reason + "\n").encode()
        return None

    def health(self) -> tuple[bool, str]:
        db_ok = self.store.answers()
        if self.jobs is None:
            # A bare `serve`: it serves files, and `update` may run from cron; what it can vouch
            # for is the database. The daemon's last cycle, if there is one, is told.
            when = self.last_ok() if db_ok else None
            seen = f"; the daemon's last build {time.time() - when:.0f} s ago" if when else ""
            return db_ok, ("ok: the database answers" + seen) if db_ok else "the database does not answer"
        return health(db_ok, self._last_ok, late_jobs(self.jobs(), now_utc()))


def start_servers(ops: Ops, listen: tuple[str, int] | None) -> list:
    """The HTTP servers of `serve` / `run --serve`: the feeds on `listen` (None: not served),
    answering /metrics and /healthz too unless `[serve] ops_listen` moves those to a listener
    of their own (which runs even without `--serve`)."""
    from . import serve

    settings = ops.settings
    servers = []
    apart = settings.serve.ops_listen
    wanted = settings.serve.metrics or settings.serve.healthz
    if listen is not None:
        host, port = listen
        server, _ = serve.start(settings.output.dir, host, port, settings.serve.max_age,
                                ops=ops if wanted and not apart else None)  # fmt: skip
        servers.append(server)
    if apart and wanted:
        host, _, port = apart.rpartition(":")
        server, _ = serve.start(settings.output.dir, host.strip("[]"), int(port), 0, ops=ops, files=False, workers=4)
        servers.append(server)
    return servers
