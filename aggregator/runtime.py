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
