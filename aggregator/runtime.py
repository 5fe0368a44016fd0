"""Process-wide tuning for the batch stages."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a batch stage (ingest, dedup). They make many
    small objects and few reference cycles: the collector's repeated passes over them found
    next to nothing and cost about a tenth of a cold run. Once it is back on, its next pass
    frees the few there were."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class TimeLimitExceeded(Exception):
    """The work ran past its wall-clock limit."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeLimitExceeded in the block once `seconds` have passed.

    A real-time interval timer and SIGALRM: the check costs nothing while the block runs, and
    the exception lands at the next Python instruction (a C call in progress finishes first).
    Signals reach only a process's main thread, so elsewhere (the daemon's job threads) the
    block runs unlimited; worker processes run their tasks on their main thread."""
    import signal
    import threading

    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(_signum, _frame):
        raise TimeLimitExceeded(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
