"""The per-host budget shared by every fetch worker of a PostgreSQL database.

Slot `s` of host `h` is the session advisory lock (hash(h), s): a worker holds it while its
request to `h` is in flight. PostgreSQL releases a session's advisory locks when the session
ends, so a worker that dies (even by SIGKILL) frees its slots as soon as its connection
closes; nothing stale is left to expire.

Each process keeps one connection for its slots (in autocommit, so it never sits idle in a
transaction), used under a lock by its fetching threads. A session may take one advisory
lock twice, so the process remembers which slots it holds and never asks for those.

A limit of this design: a worker killed mid-request frees its slots at once, while the server
may still be answering its last requests, so for that moment (at most one request timeout)
the host can have up to twice `per_host` requests in flight. A slot held in a row with an
expiry would close that gap, at the price of a host running one slot short until the expiry;
tried, the multi-worker acceptance run then fetched sources twice after the kill (cause not yet
found), so it was left out.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)


def host_key(host: str) -> int:
    """A stable signed 32-bit key for a host name (the first half of its advisory lock key)."""
    return int.from_bytes(hashlib.blake2b(host.encode(), digest_size=4).digest(), "big", signed=True)


class DatabaseHostBudget:
    """At most `per_host` requests in flight to one host across every process using this
    database (see the module's docstring). Implements `sources.hostbudget.HostBudget`."""

    def __init__(self, engine: Engine, per_host: int):
        if engine.dialect.name != "postgresql":
            raise ValueError("a per-host budget shared through the database needs PostgreSQL")
        self.engine = engine
        self.per_host = max(1, per_host)
        self.round_trips = 0  # statements sent, for the benchmark
        self._conn: Connection | None = None
        self._held: set[tuple[int, int]] = set()
        self._lock = threading.Lock()

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def _drop(self, e: DBAPIError) -> None:
        """The connection failed: the server has released its locks (or will, when it notices)."""
        log.warning("per-host budget: database connection lost (%s); reconnecting", str(e).splitlines()[0])
        if self._conn is not None:
            self._conn.invalidate()
            self._conn.close()
        self._conn = None
        self._held.clear()

    def take(self, host: str) -> int | None:
        key = host_key(host)
        slots = [s for s in range(self.per_host) if (key, s) not in self._held]
        random.shuffle(slots)  # workers starting together would otherwise all queue on slot 0
        with self._lock:
            try:
                c = self._connection()
                for slot in slots:
                    if (key, slot) in self._held:
                        continue
                    self.round_trips += 1
                    if c.exec_driver_sql("SELECT pg_try_advisory_lock(%s, %s)", (key, slot)).scalar():
                        self._held.add((key, slot))
                        return slot
            except DBAPIError as e:
                self._drop(e)
        return None

    def give(self, host: str, slot: int) -> None:
        key = host_key(host)
        with self._lock:
            if (key, slot) not in self._held:
                return  # lost with a dropped connection: the server released it already
            self._held.discard((key, slot))
            try:
                self.round_trips += 1
                self._connection().exec_driver_sql("SELECT pg_advisory_unlock(%s, %s)", (key, slot))
            except DBAPIError as e:
                self._drop(e)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                # The connection goes back to the engine's pool, its session alive: release
                # the locks explicitly (a failure to do so ends the session, which does it too).
                try:
                    self._conn.exec_driver_sql("SELECT pg_advisory_unlock_all()")
                except DBAPIError:
                    self._conn.invalidate()
                self._conn.close()
                self._conn = None
            self._held.clear()
