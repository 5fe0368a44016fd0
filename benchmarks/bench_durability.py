"""What the build's durability steps cost on a real output folder, each timed on its own.

Run `bench_ingest.py --keep DIR` first, then:

    .venv/bin/python benchmarks/bench_durability.py DIR/out

Times the stale-temp walk, the whole-file check of the current feeds (and a full parse, for
comparison), the page listing with and without sizes, and the flush: one syncfs after
rewriting a copy of the whole output, against an fsync per file and folder.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from lxml import etree

from aggregator.publish import files, pages

FORMATS = {"atom.xml": "atom", "rss.xml": "rss", "feed.json": "json"}


def timed(fn, runs: int = 5) -> str:
    times = sorted(_once(fn) for _ in range(runs))
    return f"min {times[0] * 1000:.1f} ms, median {times[len(times) // 2] * 1000:.1f} ms"


def _once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def fsync_each(root: Path) -> int:
    n = 0
    for folder, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            n += 1
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return n


def main() -> None:
    out = Path(sys.argv[1])
    feeds = [(p, FORMATS[p.name]) for p in out.glob("*/*") if p.name in FORMATS]
    size = sum(p.stat().st_size for p, _ in feeds)
    print(f"{sum(len(n) for _, _, n in os.walk(out))} files; {len(feeds)} current feed files, {size / 1e6:.1f} MB")
    print("stale-temp walk:           ", timed(lambda: files.remove_stale_temps(out)))
    print("is_whole of current feeds: ", timed(lambda: [files.is_whole(p, f) for p, f in feeds]))
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    xml = [p for p, f in feeds if f != "json"]
    print("full parse instead:        ", timed(lambda: [etree.parse(str(p), parser) for p in xml]))
    print("page folder, names only:   ", timed(lambda: pages._files(out / pages.PAGE_DIR, False)))
    print("page folder, with sizes:   ", timed(lambda: pages._files(out / pages.PAGE_DIR, True)))
    copy = out.parent / f"{out.name}-durability-copy"
    for flush in ("syncfs", "fsync each"):
        for _ in range(2):
            shutil.rmtree(copy, ignore_errors=True)
            os.sync()
            shutil.copytree(out, copy)  # every file freshly written and dirty, as after a cold build
            t = time.perf_counter()
            files.sync(copy) if flush == "syncfs" else fsync_each(copy)
            print(f"{flush} after rewriting the whole output: {time.perf_counter() - t:.2f} s")
    shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    main()
