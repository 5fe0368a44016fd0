"""Worker processes for CPU-bound stages (parsing article files and feed documents).

Fork is the cheapest start and lets workers inherit the parent's imports, but forking a
process that has other threads (the daemon's scheduler, a writer thread) can leave the
child stuck on a lock one of those threads held. So: fork when this process is
single-threaded, forkserver (with the modules preloaded) otherwise.

Worker processes only make a stage faster: where they cannot run (no writable `/dev/shm` for
their queues' semaphores, as on AWS Lambda or in a sandbox), `cpu_workers` answers 1 and every
stage does its work in this process instead.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)


def cpu_workers(limit: int = 8) -> int:
    """Worker processes for a CPU-bound stage: one per core, at most `limit`; 1 (work in this
    process) where worker processes cannot run (`unavailable`)."""
    if unavailable() is not None:
        return 1
    return min(os.cpu_count() or 1, limit)


@functools.cache
def unavailable() -> str | None:
    """Why worker processes cannot run on this system, or None when they can. Asked once per
    process, and logged then: a pool's queues need a POSIX semaphore, which a system without a
    writable `/dev/shm` cannot make, and the pool would fail at its first task."""
    try:
        multiprocessing.get_context().Lock()
    except (OSError, NotImplementedError, ImportError) as e:  # ImportError: no _multiprocessing.SemLock
        reason = f"{e.__class__.__name__}: {e}"
        log.warning("worker processes cannot run here (%s): every stage works in this process", reason)
        return reason
    return None


def process_pool(
    workers: int,
    preload: Sequence[str],
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    fresh: bool = False,
) -> ProcessPoolExecutor:
    """A pool of `workers` processes, started safely for the calling process (see above);
    each runs `initializer(*initargs)` first. `fresh`: never fork this process, because it has
    grown big and every forked worker would start with a copy of its memory."""
    if threading.active_count() == 1 and not fresh:
        pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=initializer, initargs=initargs
        )
        # Start them now, while this process is still single-threaded.
        for f in [pool.submit(int) for _ in range(workers)]:
            f.result()
        return pool
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(list(preload))
    return ProcessPoolExecutor(workers, mp_context=mp, initializer=initializer, initargs=initargs)


def start_forkserver(preload: Sequence[str]) -> None:
    """Start the process `fresh` pools fork from now, so that its imports overlap with the
    caller's own work instead of delaying the pool's first task."""
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    forkserver.ensure_running()
