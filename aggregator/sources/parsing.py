"""Feed parsing off the event loop, under a wall-clock limit.

A document can be crafted to make a parser slow (the regular expressions of a sanitizer, a
deeply nested structure). Whatever the cause, one feed's parse must not hold up the run: past
`limit` seconds it is abandoned and the source gets an error.

- With many feeds, parsing runs in worker processes. A worker still busy with an abandoned parse
  is killed and the pool replaced, so it costs no more CPU; parses that were in flight on the
  killed pool are retried once on the new one.
- With few feeds (and in the daemon's per-source jobs), in threads: starting processes would cost
  more than the parse. A thread cannot be killed, so each parse runs on a daemon thread: an
  abandoned one finishes (or not) in the background and never keeps the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from . import feeds
from .feeds import FeedContext, FeedError, ParsedFeed

log = logging.getLogger(__name__)


def _in_daemon_thread(fn: Callable, *args) -> Future:
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # handed to the waiting coroutine, which decides
            future.set_exception(e)

    threading.Thread(target=run, name="aggregator-parse", daemon=True).start()
    return future


def parse_with_features(body: bytes, headers: Mapping[str, str], ctx: FeedContext,
                        dedup_patterns: tuple[str, ...] | None) -> ParsedFeed:  # fmt: skip
    """`parse_feed`, then (with dedup on: `dedup_patterns` not None) each entry's dedup
    features, computed in the worker while the entry is at hand rather than by the dedup stage
    in the main process, which would read every body back."""
    parsed = feeds.parse_feed(body, headers, ctx)
    if dedup_patterns is not None and parsed.items:
        from dataclasses import replace

        from ..features import features

        for n, it in enumerate(parsed.items):
            found = features(it.entry.link, it.entry.content_html, dedup_patterns)
            parsed.items[n] = replace(it, entry=replace(it.entry, features=found))
    return parsed


class Parsers:
    """`parse_with_features` with a time limit, in a process pool from `make_pool` (None: threads)."""

    def __init__(self, limit: float, make_pool: Callable[[], ProcessPoolExecutor] | None = None, workers: int = 1,
                 dedup_patterns: tuple[str, ...] | None = None, later=None, later_after: int = 0):  # fmt: skip
        """`later`: with no `make_pool`, the `make_pool` to switch to (its `workers` attribute
        telling how many) once more than `later_after` documents were parsed in threads. A run
        planned for 304s (every source had validators) gets documents from every feed that
        changed, and when they are many, threads parse them one at a time under the GIL, beside
        the writer: a refetch whose every item had changed took twice a cold fetch."""
        self.limit = limit
        self.dedup_patterns = dedup_patterns
        self._make_pool = make_pool
        self._pool = make_pool() if make_pool else None
        self._later, self._later_after, self._threaded = later, later_after, 0
        # Each worker has one parse running and one waiting, so it never idles while the main
        # process, busy storing, hands it the next document (a cold fetch of 300 feeds: each
        # worker was busy only 60-75 % of the time with one). A waiting parse sits behind at
        # most one running parse, itself bounded by the limit: its own clock allows twice that.
        self._workers = workers
        self._running = 0
        self._free = asyncio.Semaphore(workers * 2)
        self.replaced = 0  # pools replaced because a parse ran over the limit

    async def parse(self, body: bytes, headers: Mapping[str, str], ctx: FeedContext) -> ParsedFeed:
        """The parsed feed; FeedError when it is not a feed, crashed its parser or ran over the limit."""
        too_slow = f"parsing took longer than {self.limit:g} s; abandoned"
        if self._pool is None and self._later is not None:
            self._threaded += 1
            if self._threaded > self._later_after:
                self._switch()
        if self._pool is None:
            try:
                thread = _in_daemon_thread(parse_with_features, body, headers, ctx, self.dedup_patterns)
                return await asyncio.wait_for(asyncio.wrap_future(thread), self.limit)
            except TimeoutError:
                raise FeedError(too_slow) from None
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            async with self._free:
                pool = self._pool
                limit = self.limit * (2 if self._running >= self._workers else 1)
                self._running += 1
                job = None
                try:
                    job = loop.run_in_executor(pool, parse_with_features, body, headers, ctx, self.dedup_patterns)
                    return await asyncio.wait_for(job, limit)
                except TimeoutError:
                    self._replace(pool)
                    raise FeedError(too_slow) from None
                except BrokenProcessPool:
                    # Killed because another parse ran over the limit, or crashed (out of memory…).
                    self._replace(pool)
                    if attempt == 2:
                        raise FeedError("cannot parse: the parser process died") from None
                except asyncio.CancelledError:
                    # A waiting parse that replacing its pool cancelled (not this task): retried
                    # on the new pool, as one the replacement killed.
                    task = asyncio.current_task()
                    if job is None or not job.cancelled() or (task is not None and task.cancelling()):
                        raise
                    if attempt == 2:
                        raise FeedError("cannot parse: the parser process died") from None
                finally:
                    self._running -= 1
        raise AssertionError("unreachable")

    def _switch(self) -> None:
        """From threads to the processes of `later`, unless it has fewer than two (the parses
        already in threads finish there)."""
        make, self._later = self._later, None
        workers = getattr(make, "workers", 1)
        if workers < 2:
            return
        self._make_pool, self._workers = make, workers
        self._free = asyncio.Semaphore(workers * 2)
        self._pool = make()
        log.info("more documents than expected: parsing in %d worker processes", workers)

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        if pool is not self._pool or self._make_pool is None:
            return  # replaced already by another parse that saw it break
        # ProcessPoolExecutor cannot stop one task; its processes (a private attribute, stable
        # since Python 3.2) are killed instead. Without it the stuck worker merely runs on.
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        self.replaced += 1
        log.warning("a feed parse ran over %g s: parser processes replaced", self.limit)
        self._pool = self._make_pool()

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
