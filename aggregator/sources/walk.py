"""Walking an article folder: which files are posts, which are skipped and why.

The walk never hangs or dies on what a file system can hold: symbolic links are not followed
unless the source allows it (and then a loop is entered once), FIFOs, sockets and devices are
reported and never opened, a name that is not UTF-8 is reported and skipped, and an unreadable
folder is reported. Opening a file safely is `read_regular_file`'s job.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..model import FileStamp, Rejected
from .sites import DRAFT, HUGO, JEKYLL, PAGE, PLAIN, PLAIN_BUILT, SKIP, Site, classify, hugo_headless

EXTENSIONS = frozenset({".md", ".markdown", ".html", ".htm", ".txt"})
REPORTED_EXTENSIONS = frozenset({".rst", ".rest"})  # articles we have no reader for: counted, not read


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """A source's say over the layout's defaults."""

    include: tuple[str, ...] = ()  # gitignore-style patterns; when given, only matching files
    exclude: tuple[str, ...] = ()  # gitignore-style patterns; matching files and folders are left out
    drafts: bool = False  # take drafts (`_drafts/`) too
    follow_symlinks: bool = False


@dataclass(slots=True)
class ScanResult:
    site: Site
    files: list[FileStamp] = field(default_factory=list)  # the article files to read, sorted by path
    counts: Counter = field(default_factory=Counter)  # (taken | skipped, rule) → files
    rejected: list[Rejected] = field(default_factory=list)  # what could not be looked at, with the reason
    decisions: list[tuple[str, str, str]] | None = None  # (path, taken | skipped, rule), when explained
    examples: dict[str, list[str]] = field(default_factory=dict)  # rule → the first few paths it skipped

    def taken(self) -> int:
        return sum(n for (what, _), n in self.counts.items() if what == "taken")

    def skipped(self) -> int:
        return sum(n for (what, _), n in self.counts.items() if what == "skipped")


def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool] | None:
    if not patterns:
        return None
    import pathspec

    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    return spec.match_file


def display(path: str) -> str:
    """A path as text, with bytes that are not UTF-8 shown as escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _valid_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


# Over 60 lines: one loop with each file's decisions inline. It runs for every file of every
# scan, the bulk of a no-change cycle, so it stays one loop; `note` and `reject` record into the result.
def scan(
    root: Path, site: Site | None = None, options: ScanOptions = ScanOptions(), source: str = "", explain: bool = False
) -> ScanResult:
    """Every article file under `root` the layout (plain by default) and the options take, in path order."""
    site = site or Site(PLAIN)
    result = ScanResult(site, decisions=[] if explain else None)
    include, exclude = _matcher(options.include), _matcher(options.exclude)
    root_str = str(root)
    try:
        top = os.stat(root_str)
    except OSError as e:
        result.rejected.append(Rejected(source, root_str, e.strerror or str(e)))
        return result
    seen_dirs = {(top.st_dev, top.st_ino)}

    def note(rel: str, what: str, rule: str) -> None:
        result.counts[(what, rule)] += 1
        if what == "skipped":
            shown = result.examples.setdefault(rule, [])
            if len(shown) < 3:
                shown.append(display(rel))
        if result.decisions is not None:
            result.decisions.append((display(rel), what, rule))

    def reject(rel: str, reason: str) -> None:
        result.rejected.append(Rejected(source, display(os.path.join(root_str, rel)), reason))
        note(rel, "skipped", reason)

    stack = [""]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(os.path.join(root_str, folder) if folder else root_str) as it:
                items = sorted(it, key=lambda d: d.name)
        except OSError as e:
            reject(folder or ".", f"cannot list the folder: {e.strerror or e}")
            continue
        for item in items:
            name = item.name
            rel = f"{folder}/{name}" if folder else name
            if name.startswith((".", "~")) or name.endswith("~"):
                continue
            try:
                is_link = item.is_symlink()
                is_dir = item.is_dir(follow_symlinks=options.follow_symlinks)
            except OSError:
                is_link, is_dir = False, False
            if not _valid_name(name):
                reject(rel + ("/" if is_dir else ""), "the name is not valid UTF-8")
                continue
            if is_link and not options.follow_symlinks:
                if is_dir or os.path.splitext(name)[1].lower() in EXTENSIONS:
                    note(rel, "skipped", "symbolic link (follow_symlinks = false)")
                continue
            if is_dir:
                rule = _skip_folder(site, rel, name, item.path)
                if rule is None and exclude is not None and exclude(rel + "/"):
                    rule = "folder excluded by a pattern"
                if rule is not None:
                    note(rel + "/", "skipped", rule)
                    continue
                try:
                    st = item.stat(follow_symlinks=True)
                except OSError as e:
                    reject(rel + "/", e.strerror or str(e))
                    continue
                if (st.st_dev, st.st_ino) in seen_dirs:
                    note(rel + "/", "skipped", "folder already scanned (a link loop)")
                    continue
                seen_dirs.add((st.st_dev, st.st_ino))
                stack.append(rel)
                continue
            ext = os.path.splitext(name)[1].lower()
            if ext not in EXTENSIONS and not (ext in REPORTED_EXTENSIONS and site.generator != PLAIN):
                continue
            try:
                st = item.stat(follow_symlinks=True)
            except OSError as e:
                # A dangling link or a file deleted under our feet: nothing to read.
                if e.errno != errno.ENOENT:
                    reject(rel, e.strerror or str(e))
                continue
            if not stat.S_ISREG(st.st_mode):
                reject(rel, f"not a regular file ({_KINDS.get(stat.S_IFMT(st.st_mode), 'a special file')})")
                continue
            kind, rule = classify(site, rel)
            if kind in (SKIP, PAGE):
                note(rel, "skipped", rule)
                continue
            if kind == DRAFT and not options.drafts:
                note(rel, "skipped", f"draft ({rule}; drafts = false)")
                continue
            if include is not None and not include(rel):
                note(rel, "skipped", "not matched by include")
                continue
            if exclude is not None and exclude(rel):
                note(rel, "skipped", "excluded by a pattern")
                continue
            note(rel, "taken", rule)
            result.files.append(FileStamp(rel, st.st_mtime_ns, st.st_size))
    result.files.sort(key=lambda s: s.path)
    if result.decisions is not None:
        result.decisions.sort()
    return result


def _skip_folder(site: Site, rel: str, name: str, path: str) -> str | None:
    """Why the folder at `rel` is never entered, or None."""
    if name in site.skip_dirs:
        return "build output or tooling folder" if site.generator != PLAIN else "generator or tooling folder"
    if site.generator == HUGO and hugo_headless(Path(path)):
        return "headless bundle (its pages are never rendered)"
    if rel in site.skip_paths:
        return "build output folder, or excluded by the site config"
    if site.generator == PLAIN and name in PLAIN_BUILT and os.path.isfile(os.path.join(path, "index.html")):
        return "a built site (has an index.html)"
    # Jekyll keeps posts in any `_posts/` folder, so its tree is walked whole (less the skips).
    if site.generator not in (PLAIN, JEKYLL) and not any(
        not p or p == rel or p.startswith(rel + "/") or rel.startswith(p + "/") for p in (*site.posts, *site.drafts)
    ):
        return "folder outside the post folders"
    return None


class FileReadError(OSError):
    """The file cannot be read as an article; the message says why."""


def read_regular_file(path: Path, max_bytes: int, follow_symlinks: bool = False) -> bytes:
    """At most `max_bytes` of the regular file at `path`.

    Opened non-blocking (a FIFO put there since the scan cannot hang us) and without following
    a final symbolic link unless allowed; the opened descriptor must be a regular file, and it is
    read up to `max_bytes + 1`, so a file that grew past the limit (or /dev/zero) is refused
    after a bounded read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileReadError(e.errno, "a symbolic link (follow_symlinks = false)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileReadError(errno.EINVAL, f"not a regular file ({_KINDS.get(stat.S_IFMT(st.st_mode), 'special')})")
        if st.st_size > max_bytes:
            raise FileReadError(errno.EFBIG, f"file is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise FileReadError(errno.EFBIG, f"file grew past the {max_bytes:,}-byte limit while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)
