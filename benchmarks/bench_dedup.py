"""Dedup speed: per-entry cost of the dedup stage as the store grows to 100,000 entries.

Synthetic entries (~1,000-character Chinese or ~2,500-character English bodies; about one in
eight a planted duplicate: copy, tracking URL or reprint with an edited paragraph) are saved
in batches through the real store, and `dedup.run` is timed on each batch, as `update` runs it.
The cost per entry of the first and the last 10,000 should be the same within noise: lookups
are indexed (URL key, fingerprint, LSH bands), never a scan of what is stored. The first
window's batches are replayed into a new store alongside the last window's, which compares the
two sizes at the same moment: the machine's speed drifts by 10 % and more within a run.

    .venv/bin/python benchmarks/bench_dedup.py [--n 100000] [--batch 1000] [--db FILE] [--cache-mb 32]
"""

from __future__ import annotations

import argparse
import itertools
import random
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator import dedup
from aggregator.config import DatabaseSettings, Settings
from aggregator.model import Entry
from aggregator.store import Store

# 3,000 common-range CJK characters: unrelated synthetic articles share few 5-grams, as real ones do.
HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
# English: the commonest words of real text, then 5,000 made-up ones, drawn with Zipf's law
# (the n-th most frequent word 1/n as often), so that unrelated articles share the letter groups
# of "the", "of the", "and" as real ones do: with made-up words alone they looked unrelated
# to 4-letter shingles, and hid how many false candidates those gave.
COMMON = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an had "
    "they you were their one all we can her has there been if more when will would who so no its into than them "
    "only some could new these two may first then do any like my now over such our man me even most made after "
    "also did many before must through back years where much your way well down should because each just those "
    "people how too little state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come since against go came "
    "right used take three market company government percent said billion million report growth prices"
).split()
WORDS = COMMON + [
    "".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=random.Random(-i).randint(3, 9)))
    for i in range(5000)
]
ZIPF = list(itertools.accumulate(1 / n for n in range(1, len(WORDS) + 1)))


def zh_para(rng: random.Random) -> str:
    return "".join(rng.choices(HAN, k=rng.randint(100, 160))) + "。"


def en_para(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, cum_weights=ZIPF, k=rng.randint(45, 70))).capitalize() + "."


def make(i: int, rng: random.Random, originals: list[Entry], t0: datetime) -> Entry:
    """Entry number i: a new story, or (one in eight, once there are some) a duplicate of an earlier one."""
    when = t0 + timedelta(minutes=i)
    if originals and rng.random() < 0.125:
        o = rng.choice(originals)
        kind = rng.randrange(3)
        if kind == 0:  # copy from another source
            return Entry("wire", f"copy-{i}", o.title, o.content_html, "", o.link, when)
        if kind == 1:  # same story, tracking parameters
            link = f"{o.link}?utm_source=feed&spm=a.{i}" if o.link else None
            return Entry("wire", f"trk-{i}", o.title, o.content_html + "<p>（文章来源：通讯社）</p>", "", link, when)
        paras = o.content_html.split("</p>")
        paras[rng.randrange(len(paras) - 1)] = "<p>" + (zh_para(rng) if rng.random() < 0.5 else en_para(rng))
        return Entry("wire", f"re-{i}", "【转载】" + o.title, "</p>".join(paras), "", None, when)
    zh = i % 2 == 0
    paras = [zh_para(rng) if zh else en_para(rng) for _ in range(rng.randint(6, 9))]
    title = "".join(rng.choices(HAN, k=14)) if zh else " ".join(rng.choices(WORDS, cum_weights=ZIPF, k=8))
    e = Entry(
        "files",
        f"{i:06d}.md",
        title,
        "".join(f"<p>{p}</p>" for p in paras),
        "",
        f"http://news.example.cn/{i}.html",
        when,
    )
    originals.append(e)
    if len(originals) > 2000:  # duplicates arrive close to their original, as in real feeds
        originals.pop(0)
    return e


def dedup_batch(store: Store, sources: dict[str, int], batch: list[Entry], now: datetime) -> tuple[float, float, int]:
    """Save one batch and run the dedup stage on it: (store seconds, dedup CPU seconds, duplicates)."""
    s0 = time.monotonic()
    touched: list[int] = []
    for name, sid in sources.items():
        _, t = store.save_entries(sid, [e for e in batch if e.source == name], {}, now)
        touched += t
    saved = time.monotonic() - s0
    # CPU time of this process: the machine is shared, wall time measures the neighbours too.
    d0 = time.process_time()
    report = dedup.run(store, Settings(), touched)
    return saved, time.process_time() - d0, report.duplicates


def new_store(path: Path, cache_mb: int) -> tuple[Store, dict[str, int]]:
    store = Store(f"sqlite:///{path}", cache_mb=cache_mb)
    return store, {name: store.source_id(name, "files", f"/{name}") for name in ("files", "wire")}


def report(name: str, per_entry: list[float]) -> float:
    mean, median = statistics.mean(per_entry) * 1000, statistics.median(per_entry) * 1000
    print(f"dedup CPU per entry, {name}: {mean:.3f} ms (median batch {median:.3f} ms)")
    return mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="entries per dedup run (one update cycle)")
    ap.add_argument("--window", type=int, default=10_000, help="size of the first/last windows compared")
    ap.add_argument("--db", help="SQLite file to use (default: a temporary one)")
    ap.add_argument("--cache-mb", type=int, default=DatabaseSettings().cache_mb,
                    help="SQLite page cache, as [database] cache_mb (default: its default)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    db = Path(args.db) if args.db else Path(tmp.name) / "bench.sqlite3"
    store, sources = new_store(db, args.cache_mb)
    rng = random.Random(42)
    t0 = datetime(2022, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC).replace(microsecond=0)
    originals: list[Entry] = []
    batches: list[list[Entry]] = []  # the first window's, replayed at the end
    per_entry: list[float] = []  # dedup CPU seconds per entry, one value per batch
    replayed: list[float] = []
    w = max(1, args.window // args.batch)
    replay, replay_sources = new_store(Path(tmp.name) / "replay.sqlite3", args.cache_mb)
    n_batches = -(-args.n // args.batch)
    duplicates = 0
    save_seconds = 0.0
    started = time.monotonic()
    for k, start in enumerate(range(0, args.n, args.batch)):
        batch = [make(i, rng, originals, t0) for i in range(start, min(args.n, start + args.batch))]
        if k < w:
            batches.append(batch)
        saved, cpu, dups = dedup_batch(store, sources, batch, now)
        per_entry.append(cpu / len(batch))
        save_seconds += saved
        duplicates += dups
        # The last window alternates with a replay of the first window's batches into a new,
        # empty store: the two are then measured at the same time, so a machine that got faster
        # or slower in between (it does, by 10 % and more) does not pass for a change in cost.
        j = k - (n_batches - w)
        if 0 <= j < len(batches):
            replayed.append(dedup_batch(replay, replay_sources, batches[j], now)[1] / len(batches[j]))
        done = start + len(batch)
        if done % args.window == 0:
            block = statistics.mean(per_entry[-w:]) * 1000
            print(f"  {done:>9,} entries: dedup {block:.3f} ms/entry over the last {args.window:,}", flush=True)
    total = time.monotonic() - started
    print(f"entries: {args.n:,} in batches of {args.batch:,}; duplicates linked: {duplicates:,}")
    first = report(f"first {args.window:,}", per_entry[:w])
    last = report(f"last  {args.window:,}", per_entry[-w:])
    print(f"ratio last/first: {last / first:.2f}")
    if replayed:
        again = report(f"first {args.window:,} again, replayed alongside the last", replayed)
        print(f"ratio last/first measured together: {last / again:.2f}")
    cpu = sum(per_entry) * args.batch
    print(f"dedup {cpu:.1f} s CPU; store writes {save_seconds:.1f} s; whole run {total:.1f} s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"database {db.stat().st_size / 1e6:.0f} MB; peak memory {rss:.0f} MB")
    store.close()
    replay.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
