"""`aggregator run --role fetch|publish`: several processes, on one machine or many, share one
PostgreSQL database.

- **fetch** workers (any number) fetch the remote sources. Each claims a few due sources at a
  time (`store.leases`: `FOR UPDATE SKIP LOCKED`, a lease expiry in the row), fetches and
  stores them, and clears its claims once their new state (their next due time) is written.
  It renews its claims every third of `[workers] lease`; a worker that dies leaves claims that
  lapse within one lease, and the others take the sources over. `[fetch] per_host` holds
  across all of them (`store.hostslots`).
- **publish**: exactly one at a time holds the writer lease (`lock`, renewed every third of
  `[workers] lease`); others wait as standbys and take over within one lease when it dies.
  It scans the article folders, and dedups and publishes whenever entries changed, whoever
  stored them: the daemon (`schedule.Daemon`) without its fetch jobs, plus a job that looks
  for stored changes every `[workers] poll`.

SQLite stays one process (`run`, role `all`); these roles refuse it (`refusal`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta

from .config import ConfigError, Settings, SourceSettings, load_config
from .schedule import Daemon, remote_sources
from .stopping import SHUTDOWN_GRACE, install_signals
from .store import Store, now_utc

log = logging.getLogger("aggregator.workers")

ROLES = ("all", "fetch", "publish")
IDLE_LEAST = 0.05  # s: an idle lane never spins faster than this


def refusal(role: str, dialect: str) -> str | None:
    """Why `role` cannot run on this database, or None when it can."""
    if role == "all" or dialect == "postgresql":
        return None
    return (
        f"`run --role {role}` needs PostgreSQL: workers share the sources through the database, and "
        f"SQLite ({dialect} here) has a single writer; run `aggregator run` (role all) for one process"
    )


def idle_wait(next_claimable, now, poll: float) -> float:
    """Seconds an idle lane sleeps: until the next source may become claimable, at most `poll`
    (a source added to the config, or claimed and released by a stopped worker, is noticed)."""
    if next_claimable is None:
        return poll
    return min(poll, max(IDLE_LEAST, (next_claimable - now).total_seconds()))


def worker_name() -> str:
    """Who holds a claim: host, pid and a random part (pids repeat across machines and restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class FetchWorker:
    """A fetch worker: `lanes` threads, each claiming a batch, fetching it, releasing it."""

    def __init__(self, settings: Settings, store: Store, load=load_config):
        from .store.hostslots import DatabaseHostBudget

        self.settings = settings
        self.store = store
        self.load = load
        self.me = worker_name()
        # A dead worker's slots stay held this long: its requests (a feed and a discovery
        # follow-up, each within its timeout) may still be answered after its session ended.
        longest = max([settings.fetch.timeout, *(s.timeout for s in settings.sources if s.timeout)])
        self.budget = DatabaseHostBudget(store.engine, settings.fetch.per_host, 2 * longest + 5, self.me)
        self.stop = threading.Event()
        self._reload = threading.Event()
        self._sources: dict[str, SourceSettings] = {}
        self.fetched = 0  # sources this worker fetched (for the benchmark and the exit line)

    # -------------------------------------------------------------- sources

    def sync_sources(self) -> None:
        """The configured remote sources, their rows created when missing."""
        sources = {s.name: s for s in remote_sources(self.settings) if s.url}
        self.store.feed_sources({name: s.url for name, s in sources.items()})
        self._sources = sources

    def reload(self) -> None:
        try:
            new = self.load(self.settings.config_path)
        except ConfigError as e:
            log.error("config reload refused, keeping the running config: %s", e)
            return
        if new.database.url != self.settings.database.url:
            log.error("config reload refused: database.url cannot change while running; restart instead")
            return
        self.settings = new
        self.budget.per_host = new.fetch.per_host
        self.sync_sources()
        log.warning("config reloaded: %d remote sources", len(self._sources))

    # -------------------------------------------------------------- the lanes

    def lane(self) -> None:
        from .fetching import fetch_sources

        w = self.settings.workers
        while not self.stop.is_set():
            names = list(self._sources)
            now = now_utc()
            try:
                claimed = self.store.claim_sources(names, self.me, now, now + timedelta(seconds=w.lease), w.batch)
            except Exception as e:  # the database is away: try again shortly
                log.warning("cannot claim sources: %s", _first_line(e))
                self.stop.wait(w.poll)
                continue
            if not claimed:
                try:
                    nxt = self.store.next_claimable(names, now)
                except Exception:
                    nxt = None
                self.stop.wait(idle_wait(nxt, now_utc(), w.poll))
                continue
            batch = [self._sources[n] for n in claimed if n in self._sources]
            started = time.monotonic()
            try:
                report = fetch_sources(self.store, self.settings, batch, self.budget)
            except Exception as e:
                # Claims are kept: they lapse within a lease, and then the sources are tried
                # again, rather than at once in a loop against whatever failed.
                log.error("batch of %d sources failed: %s: %s", len(batch), e.__class__.__name__, _first_line(e))
                continue
            self.store.release_claims(self.me, claimed)
            self.fetched += len(batch)
            log.info(
                "job=fetch-batch sources=%d fetched=%d not_modified=%d failed=%d new=%d seconds=%.2f",
                len(batch), report.fetched, report.not_modified, report.failed, report.new,
                time.monotonic() - started,
            )  # fmt: skip

    def renew(self) -> None:
        """Push the expiry of this worker's claims every third of a lease."""
        lease = self.settings.workers.lease
        while not self.stop.wait(lease / 3):
            try:
                self.store.renew_claims(self.me, now_utc() + timedelta(seconds=lease))
            except Exception as e:  # the claims lapse if this goes on: others take the sources over
                log.warning("cannot renew this worker's claims: %s", _first_line(e))

    # -------------------------------------------------------------- life cycle

    def run(self) -> int:
        from .sources.tls import import_aiohttp

        install_signals(self.stop, self.stop.set, self._reload.set, log)  # the reload happens in the loop below
        import_aiohttp()  # while this is the only thread (see `tls.import_aiohttp`)
        self.sync_sources()
        w = self.settings.workers
        threads = [threading.Thread(target=self.lane, name=f"lane-{i}", daemon=True) for i in range(w.lanes)]
        threads.append(threading.Thread(target=self.renew, name="claims-renewer", daemon=True))
        for t in threads:
            t.start()
        log.info("fetch worker %s started: %d remote sources, %d lanes of %d", self.me, len(self._sources),
                 w.lanes, w.batch)  # fmt: skip
        while not self.stop.is_set():
            self.stop.wait(1.0)
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        # Claims of batches still in flight are released too: their sources are fetched again
        # by another worker rather than wait for the lease to lapse.
        try:
            self.store.release_claims(self.me)
        except Exception as e:
            log.warning("cannot release this worker's claims (they lapse within a lease): %s", _first_line(e))
        self.budget.close()
        log.info("fetch worker %s stopped: %d sources fetched", self.me, self.fetched)
        return 0


class Publisher(Daemon):
    """The publishing role: the daemon without fetch jobs, holding the writer lease, building
    whenever the fetch workers stored changes."""

    def desired_jobs(self):
        return {k: v for k, v in super().desired_jobs().items() if v[0] != "fetch"}

    def sync_jobs(self) -> None:
        super().sync_jobs()
        poll = self.settings.workers.poll
        if self._intervals.get("changes") != poll:
            from apscheduler.triggers.interval import IntervalTrigger

            self.scheduler.add_job(self.look_for_changes, IntervalTrigger(seconds=poll), id="changes", name="changes",
                                   executor="local", replace_existing=True)  # fmt: skip
            self._intervals["changes"] = poll

    def look_for_changes(self) -> None:
        """Entries stored by the fetch workers (or retention) wait for dedup: build soon."""
        try:
            if self.store.has_pending_changes():
                self.request_build()
        except Exception as e:  # the next look retries
            log.warning("cannot look for stored changes: %s", _first_line(e))

    def run(self) -> int:
        from .lock import LeaseKeeper, LeaseWriterLock, LockHeld, exit_lease_lost

        self._install_signals()
        lock = LeaseWriterLock(self.store, seconds=self.settings.workers.lease)
        told = False
        while not self._stop.is_set():
            try:
                lock.acquire("run --role publish", wait=0)
                break
            except LockHeld as e:
                if not told:
                    log.warning("standing by: %s", e)
                    told = True
            self._stop.wait(min(self.settings.workers.poll, lock.seconds / 3))
        else:
            return 0  # stopped while standing by
        log.info("publisher %s holds the writer lease", lock.token)
        database = self.store.describe()
        keeper = LeaseKeeper(lock, lambda reason: exit_lease_lost(database, reason))
        keeper.start()
        try:
            return super().run()
        finally:
            keeper.stop()
            lock.release()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__
