"""Reading many article files: in order, in worker processes for a big batch, memory flat.

A file that kills the process parsing it (a crash in a C parser, the kernel's out-of-memory
killer) fails alone: the pool it broke is replaced, the files that were in flight are read
again one at a time, and the one that kills its worker again is rejected with that reason. Any
other problem with a file is `read_article`'s, which rejects it without leaving the worker.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

from ..model import Entry, FileStamp, Held, Rejected
from .articles import ArticleContext, read_article

log = logging.getLogger(__name__)

_CHUNK = 200
# Chunks queued per worker: enough that they parse on while the caller stores a transaction's
# worth of entries (pipeline.INGEST_BATCH, ten chunks), few enough to keep memory flat.
IN_FLIGHT = 8
DIED = "the parser process died reading it (a crash or out of memory)"


def read_articles(
    root: Path, stamps: list[FileStamp], ctx: ArticleContext, max_bytes: int, parallel_min: int = 400
) -> Iterator[Entry | Held | Rejected]:
    """`read_article` for many files, in order. Large batches (a cold start) are parsed in
    worker processes, one per core, with a bounded number of chunks in flight so memory
    stays flat however big the folder is. `parallel_min`: fewer files are read here (starting
    worker processes would cost more than it saves)."""
    import threading

    from ..workers import cpu_workers, unavailable

    workers = cpu_workers()
    # The parse time limit is a signal, which only a main thread receives: off it (the daemon's
    # scan jobs) even a few files go to a worker process, whose tasks run on its main thread;
    # where no process can run, they are read here, without the limit.
    here = threading.current_thread() is threading.main_thread()
    if not stamps or (here and (len(stamps) < parallel_min or workers < 2)) or unavailable() is not None:
        for s in stamps:
            yield read_article(root, s, ctx, max_bytes)
        return
    workers = max(1, workers if len(stamps) >= parallel_min else 1)
    chunks = [stamps[i : i + _CHUNK] for i in range(0, len(stamps), _CHUNK)]
    pool = _pool(workers)
    pending: deque = deque()  # (chunk, its future), in order
    try:
        for n, chunk in enumerate(chunks):
            try:
                job = pool.submit(_read_chunk, root, chunk, ctx, max_bytes)
            except BrokenProcessPool:  # broken by a chunk still pending: found below
                job = None
            pending.append((chunk, job))
            while pending and (len(pending) >= workers * IN_FLIGHT or n == len(chunks) - 1):
                _, job = pending[0]
                try:
                    if job is None:
                        raise BrokenProcessPool
                    found = job.result()
                except BrokenProcessPool:
                    # Every chunk in flight died with the pool: read them again, carefully.
                    left = [s for c, _ in pending for s in c]
                    pending.clear()
                    pool = yield from _one_at_a_time(pool, workers, root, left, ctx, max_bytes)
                    continue
                pending.popleft()
                yield from found
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pool(workers: int) -> ProcessPoolExecutor:
    from ..workers import process_pool

    return process_pool(workers, [__name__])


def _one_at_a_time(
    pool: ProcessPoolExecutor, workers: int, root: Path, stamps: list[FileStamp], ctx: ArticleContext, max_bytes: int
):  # fmt: skip
    """Read `stamps` one file per task, waiting for each, on a new pool (and a new one after
    each file that kills its worker, which is rejected); yields the results in order and
    returns the pool to go on with."""
    pool.shutdown(wait=False, cancel_futures=True)
    log.warning("%s: a parser process died; reading %d files one at a time to find the cause", root, len(stamps))
    pool = _pool(workers)
    for s in stamps:
        try:
            found = pool.submit(_read_chunk, root, [s], ctx, max_bytes).result()
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            pool = _pool(workers)
            found = [Rejected(ctx.source, str(root / s.path), DIED)]
        yield from found
    return pool


def _read_chunk(
    root: Path, stamps: list[FileStamp], ctx: ArticleContext, max_bytes: int
) -> list[Entry | Held | Rejected]:
    """A worker's share: parse, and compute dedup's features while the entry is at hand."""
    out = [read_article(root, s, ctx, max_bytes) for s in stamps]
    if ctx.dedup_patterns is None:
        return out
    from ..features import features

    return [
        replace(e, features=features(e.link, e.content_html, ctx.dedup_patterns)) if isinstance(e, Entry) else e
        for e in out
    ]
