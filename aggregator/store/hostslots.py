"""The per-host budget shared by every fetch worker of a PostgreSQL database.

Slot `s` of host `h` is the row (hash(h), s) of `host_slots`: a worker holds it, its name and
an expiry written in the row, while its request to `h` is in flight, and clears it when the
request ends. A worker that dies (even by SIGKILL) leaves its rows held until they expire,
`hold` seconds after they were taken (twice the longest request timeout, a request and a
discovery follow-up): its requests may still be running on the server after its database
session is gone, so a slot must not be freed before they are over. A session advisory lock
would be freed the moment the connection closes, letting the other workers exceed `per_host`
while the dead worker's requests are still being answered.

Each process keeps one connection for its slots (in autocommit, so it never sits idle in a
transaction), used under a lock by its fetching threads; taking a slot is one statement per
slot tried, giving it back one.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import uuid
from datetime import timedelta

from sqlalchemy import and_, bindparam, func, or_, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .schema import HOST_SLOTS

log = logging.getLogger(__name__)

S = HOST_SLOTS


def host_key(host: str) -> int:
    """A stable signed 32-bit key for a host name."""
    return int.from_bytes(hashlib.blake2b(host.encode(), digest_size=4).digest(), "big", signed=True)


class DatabaseHostBudget:
    """At most `per_host` requests in flight to one host across every process using this
    database (see the module's docstring). Implements `sources.hostbudget.HostBudget`."""

    def __init__(self, engine: Engine, per_host: int, hold: float = 60.0, holder: str | None = None):
        if engine.dialect.name != "postgresql":
            raise ValueError("a per-host budget shared through the database needs PostgreSQL")
        # Here, not at the top: the PostgreSQL dialect costs every SQLite command ~30 ms of start-up.
        from sqlalchemy.dialects.postgresql import insert

        self.engine = engine
        self.per_host = max(1, per_host)
        self.holder = holder or uuid.uuid4().hex
        self.round_trips = 0  # statements sent, for the benchmark
        self._conn: Connection | None = None
        self._held: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        now = func.now()  # the database's clock: workers' clocks may disagree
        until = now + timedelta(seconds=hold)
        stmt = insert(S).values(host_key=bindparam("k"), slot=bindparam("s"), holder=self.holder, expires=until)
        self._take = stmt.on_conflict_do_update(
            index_elements=[S.c.host_key, S.c.slot],
            set_={"holder": stmt.excluded.holder, "expires": stmt.excluded.expires},
            where=or_(S.c.holder.is_(None), S.c.expires < now),
        ).returning(S.c.slot)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def _drop(self, e: DBAPIError) -> None:
        """The connection failed: slots held stay held until they expire (none is given twice)."""
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
                    if c.execute(self._take, {"k": key, "s": slot}).first() is not None:
                        self._held.add((key, slot))
                        return slot
            except DBAPIError as e:
                self._drop(e)
        return None

    def give(self, host: str, slot: int) -> None:
        key = host_key(host)
        with self._lock:
            if (key, slot) not in self._held:
                return  # lost with a dropped connection: it expires
            self._held.discard((key, slot))
            try:
                self.round_trips += 1
                self._connection().execute(self._free(and_(S.c.host_key == key, S.c.slot == slot)))
            except DBAPIError as e:
                self._drop(e)

    def _free(self, where):
        return update(S).where(where, S.c.holder == self.holder).values(holder=None, expires=None)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute(self._free(S.c.holder == self.holder))
                except DBAPIError:
                    self._conn.invalidate()
                self._conn.close()
                self._conn = None
            self._held.clear()
