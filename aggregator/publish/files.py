"""Writing output files: atomically, and only when their bytes change.

Readers' conditional GETs depend on unchanged files keeping their bytes and mtime, and a
crash mid-write must never leave a half feed: write a temp file beside the target, then
`os.replace`, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` to `path` unless it already holds exactly those bytes. True if written."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    # One writer per output folder (the store's lock), so a pid-named temp file cannot clash.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # No fsync: the rename is what makes a reader (or a process killed mid-write) see the
        # old file or the new one, never half of one. fsync per file only adds power-loss
        # durability for files the next build rewrites anyway, and costs ~0.4 ms each, which
        # dominated a cold build of thousands of article pages.
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:  # a new folder (asking first would cost a call per file)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True
