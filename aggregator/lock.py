"""One writer per database.

Two processes writing the same database would fetch every source twice and race on
category creation, so `run`, `update`, `ingest` and `build` hold a writer lock:

- SQLite: a `filelock` lock on `<database>.lock` beside the file. The operating system
  drops it when the holder dies, even by SIGKILL, so there is nothing stale to clean up.
  The holder writes who it is to `<database>.lock.json` so a refused process can name it.
- A server database (PostgreSQL): a lease row in `daemon_state`, renewed by the holder
  well before it expires; a holder that died without releasing loses it at expiry.

A second writer is refused with `LockHeld` (naming the holder's pid), or waits up to
`wait` seconds first when asked to.

A lease is only safe while its holder knows it still holds it. A renewal that finds the row
taken (this process was stalled past the expiry and another writer moved in), or that cannot
get through (the database is unreachable or hangs) until the lease is nearly due to lapse,
means another writer may be writing now or soon: the holder exits at once (status
`EXIT_LEASE_LOST`) with a message saying why, rather than write on beside it. Its open
transaction rolls back with the connection and published files are only ever replaced whole.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from filelock import FileLock, Timeout

from .store import Store, lease_free, now_utc

log = logging.getLogger(__name__)

LEASE_NAME = "writer"
LEASE_SECONDS = 60.0
EXIT_LEASE_LOST = 4


class LockHeld(Exception):
    """Another process is the database's writer; the message names it."""


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    host: str
    command: str
    since: str

    @classmethod
    def me(cls, command: str) -> Holder:
        return cls(os.getpid(), socket.gethostname(), command, now_utc().isoformat())

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (aggregator {self.command}, since {self.since})"

    def dumps(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "command": self.command, "since": self.since})

    @classmethod
    def loads(cls, text: str | None) -> Holder | None:
        try:
            d = json.loads(text or "")
            return cls(int(d["pid"]), str(d["host"]), str(d["command"]), str(d["since"]))
        except (ValueError, KeyError, TypeError):
            return None


def refusal(holder: Holder | None, database: str) -> str:
    who = holder.describe() if holder else "another process"
    return f"{database}: database is locked by {who}; only one writer may run at a time"


# ------------------------------------------------------------------ SQLite: a file lock


class FileWriterLock:
    """The lock file beside a SQLite database, with the holder recorded next to it."""

    def __init__(self, db_path: Path):
        self.path = Path(str(db_path) + ".lock")
        self.info = Path(str(db_path) + ".lock.json")
        self._lock = FileLock(self.path, thread_local=False)

    def acquire(self, command: str, wait: float = 0.0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=wait)
        except Timeout:
            raise LockHeld(refusal(self.holder(), str(self.path.with_suffix("")))) from None
        self.info.write_text(Holder.me(command).dumps(), encoding="utf-8")

    def release(self) -> None:
        if self._lock.is_locked:
            self.info.unlink(missing_ok=True)
            self._lock.release()

    def holder(self) -> Holder | None:
        try:
            return Holder.loads(self.info.read_text(encoding="utf-8"))
        except OSError:
            return None

    def is_held_elsewhere(self) -> bool:
        """True if another process holds the lock now (probed without keeping it)."""
        if self._lock.is_locked:
            return False
        probe = FileLock(self.path, thread_local=False)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False

    def renew(self) -> bool:
        """Nothing to renew: the operating system holds a file lock as long as the process lives."""
        return True


# ------------------------------------------------------------------ server database: a lease row


class LeaseWriterLock:
    """A lease row in the database (`Store.take_lease`): portable SQL, so it works on any server backend."""

    def __init__(self, store: Store, seconds: float = LEASE_SECONDS):
        self.store = store
        self.seconds = seconds
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held = False
        self._info = ""

    def _try(self, now: datetime) -> bool:
        return self.store.take_lease(LEASE_NAME, self.token, self._info, now, now + timedelta(seconds=self.seconds))

    def acquire(self, command: str, wait: float = 0.0) -> None:
        self._info = Holder.me(command).dumps()
        deadline = time.monotonic() + wait
        while not self._try(now_utc()):
            if time.monotonic() >= deadline:
                raise LockHeld(refusal(self.holder(), self.store.describe()))
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self._held = True

    def renew(self) -> bool:
        """Push the expiry forward (called well within `seconds`). False if the lease is no
        longer ours: it lapsed and another process took it, or its row was removed."""
        if not self._held:
            return True
        if not self.store.renew_lease(LEASE_NAME, self.token, now_utc() + timedelta(seconds=self.seconds)):
            self._held = False  # so that release() cannot touch another holder's row
            return False
        return True

    def release(self) -> None:
        if not self._held:
            return
        self.store.release_lease(LEASE_NAME, self.token)
        self._held = False

    def holder(self) -> Holder | None:
        found = self.store.lease(LEASE_NAME)
        return Holder.loads(found[2]) if found else None

    def is_held_elsewhere(self) -> bool:
        found = self.store.lease(LEASE_NAME)
        return found is not None and not lease_free(found[1], found[0], self.token, now_utc())


WriterLock = FileWriterLock | LeaseWriterLock


def writer_lock_for(store: Store) -> WriterLock:
    path = store.sqlite_path
    if path is not None:
        return FileWriterLock(path)
    return LeaseWriterLock(store)


# ------------------------------------------------------------------ keeping a lease


def renewal_verdict(renewed: bool | None, now: float, valid_until: float, margin: float) -> str:
    """After a renewal attempt: "ok", "retry" (it failed, but the lease has time left) or
    "lost". `renewed`: True, False (the row is another's) or None (the attempt failed or hung).
    `valid_until`: when the lease lapses by our own clock (from the start of the last renewal
    that got through); `margin`: how long before that to give up, for clock skew between hosts."""
    if renewed:
        return "ok"
    if renewed is False or now >= valid_until - margin:
        return "lost"
    return "retry"


class LeaseKeeper:
    """Renews a lease from a background thread until stopped; calls `on_lost(reason)` when the
    lease is lost. Each attempt runs in its own thread, waited for only as long as the lease has
    left, so a database that hangs cannot hold the verdict back."""

    RETRY_SECONDS = 2.0

    def __init__(self, lock: LeaseWriterLock, on_lost):
        self.lock = lock
        self.on_lost = on_lost
        self.interval = lock.seconds / 3
        self.margin = lock.seconds / 4
        self.valid_until = time.monotonic() + lock.seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            started = time.monotonic()
            renewed, error = self._attempt(self.valid_until - self.margin - started)
            if self._stop.is_set():
                return
            verdict = renewal_verdict(renewed, time.monotonic(), self.valid_until, self.margin)
            if verdict == "ok":
                self.valid_until = started + self.lock.seconds
                wait = self.interval
            elif verdict == "retry":
                log.warning("cannot renew the writer lease (retrying): %s", error)
                wait = min(self.RETRY_SECONDS, max(0.1, self.valid_until - self.margin - time.monotonic()))
            else:
                self.on_lost(error or "unknown")
                return

    def _attempt(self, limit: float) -> tuple[bool | None, str | None]:
        """(renewed, why not): renewed is None when the attempt failed or did not end in `limit` s."""
        result: list = [None, None]

        def renew() -> None:
            try:
                result[0] = self.lock.renew()
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                result[1] = f"{e.__class__.__name__}: {first}"

        t = threading.Thread(target=renew, name="lease-renew", daemon=True)
        t.start()
        t.join(max(0.0, limit))
        if t.is_alive():
            return None, "the database did not answer the renewal in time"
        if result[0] is False:
            return False, "another process holds it now"
        return result[0], result[1]


def exit_lease_lost(database: str, reason: str) -> None:
    """Stop this process now: another writer may already be writing. A clean shutdown would
    let the running jobs go on writing for seconds, which is what must not happen."""
    message = (
        f"{database}: lost the writer lease ({reason}); stopping now so that two writers never "
        "write at once; restart to take the lease again"
    )
    log.critical(message)  # shown at any verbosity, as a JSON line with --json-logs
    logging.shutdown()
    os._exit(EXIT_LEASE_LOST)


@contextmanager
def writer(store: Store, command: str, wait: float = 0.0) -> Iterator[WriterLock]:
    """Hold the database's writer lock for the block; raise LockHeld if another process has it.

    A lease is renewed from a background thread, so a long `update` keeps it too; losing it
    ends the process (`exit_lease_lost`)."""
    lock = writer_lock_for(store)
    lock.acquire(command, wait)
    keeper = None
    if isinstance(lock, LeaseWriterLock):
        database = store.describe()
        keeper = LeaseKeeper(lock, lambda reason: exit_lease_lost(database, reason))
        keeper.start()
    try:
        yield lock
    finally:
        if keeper is not None:
            keeper.stop()
        lock.release()
