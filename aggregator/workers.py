"""Worker processes for CPU-bound stages (parsing article files and feed documents).

Fork is the cheapest start and lets workers inherit the parent's imports, but forking a
process that has other threads (the daemon's scheduler, a writer thread) can leave the
child stuck on a lock one of those threads held. So: fork when this process is
single-threaded, forkserver (with the modules preloaded) otherwise.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor


def cpu_workers(limit: int = 8) -> int:
    return min(os.cpu_count() or 1, limit)


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
