"""The daemon's timing decisions, as pure functions: when a job runs, retries, or waits.

Tested without a scheduler, a clock or a database; `schedule.Daemon` applies them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

RETRY_BASE = 2.0  # first retry after a failed job, doubling
RETRY_CAP = 300.0
FIRST_SPREAD = 60.0  # overdue and never-fetched sources start spread over up to this many seconds


@dataclass(slots=True)
class Debounce:
    """When to act on a burst of changes: `quiet` seconds after the last one, but never later
    than `max_wait` after the first, so a folder that keeps changing is still picked up."""

    quiet: float
    max_wait: float
    first: float | None = None

    def note(self, now: float) -> float:
        if self.first is None:
            self.first = now
        return min(now + self.quiet, self.first + self.max_wait)

    def fired(self) -> None:
        self.first = None


def retry_delay(failures: int, base: float = RETRY_BASE, cap: float = RETRY_CAP) -> float:
    """Exponential back-off for a job that failed `failures` times in a row."""
    return min(cap, base * 2 ** max(0, failures - 1))


def stagger(name: str, spread: float) -> float:
    """A stable offset in [0, spread) for a source, so sources that are all due at once (a fresh
    database, a restart after downtime) start spread out, in the same order every time."""
    return (zlib.crc32(name.encode()) % 10_000) / 10_000 * spread


def first_run(next_due: datetime | None, now: datetime, every: float, name: str) -> datetime:
    """When a remote source's job first runs: at its stored `next_due` if that is still ahead,
    else soon, staggered."""
    if next_due is not None and next_due > now:
        return next_due
    return now + timedelta(seconds=stagger(name, min(every, FIRST_SPREAD)))


def fetch_decision(next_due: datetime | None, disabled: str | None, now: datetime) -> str:
    """ "fetch" when the source's time has come, "wait" when its stored next_due is still ahead
    (backing off, Retry-After), "disabled" when a 410 turned it off."""
    if disabled:
        return "disabled"
    if next_due is not None and next_due > now:
        return "wait"
    return "fetch"


def after_fetch(next_due: datetime | None, now: datetime, every: float) -> datetime | None:
    """Where to move a fetch job after it ran: to the source's new `next_due`, but never into a
    tight loop when the pipeline left it in the past. None: keep the interval trigger's time."""
    if next_due is None:
        return None
    return max(next_due, now + timedelta(seconds=min(every, 30.0)))


def jitter(every: float) -> int:
    """Up to 10 % of the interval (at most 5 minutes), so sources on one host drift apart."""
    return max(0, int(min(every * 0.1, 300.0)))
