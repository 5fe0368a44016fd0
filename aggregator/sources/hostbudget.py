"""Per-host politeness beyond one fetch call: a budget of slots per host shared by everything
that fetches in this process (the daemon runs one fetch job per source, each with its own
event loop), or by every fetch worker of a database (`store.hostslots`).

A budget is taken with `take(host)` and given back with `give(host, slot)`; `take` never
waits, it answers None when the host's slots are all in use, and the caller (`remote.fetch_many`)
polls. Both calls are quick and thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Protocol

# How long a request waiting for a slot sleeps between attempts: short at first (slots free
# up every few tens of milliseconds on a busy host), longer while the host stays saturated.
POLL_FIRST = 0.01
POLL_MOST = 0.2


class HostBudget(Protocol):
    def take(self, host: str) -> Hashable | None: ...

    def give(self, host: str, slot: Hashable) -> None: ...


def next_poll(wait: float) -> float:
    """The pause after one that lasted `wait` seconds (0 for the first): doubling, capped."""
    return POLL_FIRST if wait <= 0 else min(POLL_MOST, wait * 2)


class LocalBudget:
    """At most `per_host` requests in flight to one host across the threads of this process."""

    def __init__(self, per_host: int):
        self.per_host = max(1, per_host)
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, host: str) -> Hashable | None:
        with self._lock:
            busy = self._busy.get(host, 0)
            if busy >= self.per_host:
                return None
            self._busy[host] = busy + 1
            return busy

    def give(self, host: str, slot: Hashable) -> None:
        with self._lock:
            left = self._busy.get(host, 0) - 1
            if left > 0:
                self._busy[host] = left
            else:
                self._busy.pop(host, None)

    def in_flight(self, host: str) -> int:
        with self._lock:
            return self._busy.get(host, 0)
