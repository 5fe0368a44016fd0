"""Writing output files: atomically, only when their bytes change, durably before they are trusted.

Readers' conditional GETs depend on unchanged files keeping their bytes and mtime, and a
crash mid-write must never leave a half feed: write a temp file beside the target, then
`os.replace`, which is atomic on POSIX and Windows. A write that fails (a full disk, any
OSError) removes its temp file and raises `PublishError` naming the path; the old file stays.

A build records what it published (signatures) so the next one can skip it, so the files
must be on disk before the records are: `sync` flushes them once per build, before the
signatures are committed. A process killed mid-write leaves its temp file behind;
`remove_stale_temps` deletes them at the next build. And since records can still outlive
files (a power loss before `sync` on an older version, a hand edit), the build checks the
files it would skip with `looks_whole`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
# The file each format is published as, and its media type. Here, not in `formats` (which loads
# lxml), because the quiet-cycle check and the feed URLs need only the names.
FILENAMES = {"atom": "atom.xml", "rss": "rss.xml", "json": "feed.json"}
CONTENT_TYPES = {"atom": "application/atom+xml", "rss": "application/rss+xml", "json": "application/feed+json"}
_EDGE = 64  # bytes read at each end of a file to tell whether it is whole


class PublishError(Exception):
    """An output file could not be written or flushed; the message is one line naming it."""


def temp_name(name: str, pid: int) -> str:
    return f".{name}.{pid}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """Is `name` one of our temp files (`.<name>.<pid>.tmp`)? Nothing else is ever removed.
    (Split by hand: a regular expression here would backtrack over long names.)"""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return False
    base, dot, pid = name[1 : -len(TEMP_SUFFIX)].rpartition(".")
    return bool(base and dot and pid.isascii() and pid.isdigit())


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` to `path` unless it already holds exactly those bytes. True if written."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as e:  # e.g. a folder in the file's place: reported by the write below
        log.debug("%s: cannot compare: %s", path, e)
    # One writer per output folder (the store's lock), so a pid-named temp file cannot clash.
    tmp = path.with_name(temp_name(path.name, os.getpid()))
    try:
        # No fsync per file: `sync` flushes the whole build at once (see there).
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        except FileNotFoundError:  # a new folder (asking first would cost a call per file)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise PublishError(f"{path}: cannot write: {e.strerror or e}") from e
    except BaseException:
        _discard(tmp)
        raise
    return True


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError as e:  # the next build's clean-up gets it
        log.warning("%s: cannot remove: %s", tmp, e)


def looks_whole(fmt: str, head: bytes, tail: bytes) -> bool:
    """Do a feed file's first and last bytes look like a whole document of its format? What
    a lost or interrupted write leaves (nothing, zeros, a cut-off end) does not; a full parse
    would also catch damage in the middle, which nothing here produces, at 100 times the cost."""
    head, tail = head.lstrip(), tail.rstrip()
    if fmt == "json":
        return head.startswith(b"{") and tail.endswith(b"}")
    end = {"atom": b"</feed>", "rss": b"</rss>"}[fmt]
    return head.startswith(b"<?xml") and tail.endswith(end)


def is_whole(path: Path, fmt: str) -> bool:
    """Is the feed file at `path` there, non-empty and whole (`looks_whole`)?"""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_EDGE)
            f.seek(max(0, size - _EDGE))
            tail = f.read(_EDGE)
    except OSError:
        return False
    return size > 0 and looks_whole(fmt, head, tail)


def remove_stale_temps(root: Path) -> int:
    """Delete the temp files a killed build left anywhere under `root`; returns how many.

    Only names of our temp pattern, only under `root`, never through a symlinked folder.
    Call it holding the writer lock: no other build can be writing one right now."""
    removed = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif is_temp_name(e.name):
                        try:
                            os.unlink(e.path)
                            removed += 1
                        except OSError as err:
                            log.warning("%s: cannot remove a stale temp file: %s", e.path, err)
        except OSError:  # the root does not exist yet, or a folder vanished meanwhile
            continue
    if removed:
        log.info("removed %d temp files left by an interrupted build", removed)
    return removed


def sync(root: Path) -> None:
    """Make everything written under `root` so far durable: files, renames and folders,
    whichever process wrote them. On Linux one syncfs(2) of the output's filesystem: a
    cold build writes ~17,000 files, and an fsync per file and folder cost 0.3-1.6 ms each
    on the benchmark machine, 4-25 s, against 0.1 s for one syncfs. Elsewhere, sync(2)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise PublishError(f"{root}: cannot flush: {e.strerror or e}") from e
    try:
        syncfs = _syncfs()
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:  # since Linux 5.8 this reports write-back errors too
            err = ctypes.get_errno()
            raise PublishError(f"{root}: cannot flush: {os.strerror(err)}")
    finally:
        os.close(fd)


_syncfs_fn: list = []  # [function or None], looked up on first use


def _syncfs():
    if not _syncfs_fn:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).syncfs  # glibc and musl both have it
                fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            except (OSError, AttributeError):
                fn = None
        _syncfs_fn.append(fn)
    return _syncfs_fn[0]
