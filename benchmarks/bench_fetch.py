"""Remote-fetch benchmark: `aggregator fetch` against PyPI `reader` on the same loopback feeds.

Serves N distinct RSS 2.0 feeds (50 items each by default) from a keep-alive threaded HTTP
server on 127.0.0.1, in a separate process so it does not share a GIL with what is measured.
Then, in one run:

- `reader` (installed from PyPI into its own venv, cached in the temp folder; `--reader-version`)
  runs `update_feeds(workers=16)` cold (every feed 200) then warm (every feed 304) in one
  process; each figure includes its import and `make_reader` (a cron job pays them each time);
- `aggregator fetch` runs as whole processes: cold, warm, and once with no sources at all
  (its start-up and empty cycle, taken out for the "work alone" figure); with `--changed`, once
  more after the warm run, the server now changing every item of every feed (15,000 changed
  versions to store);
- with `--floor`, the HTTP client's own floor: a bare aiohttp program (aiohttp imported the way
  the aggregator imports it, then every feed revalidated with its ETag, 4 connections, nothing
  else) against an empty interpreter. What is left of the aggregator's warm work above it is the
  aggregator's own per-feed cost.

Rounds alternate reader, aggregator, aggregator, reader, …; each side's fastest figure counts.
Prints each run, the ratios (reader / aggregator, > 1 means the aggregator is faster), peak RSS,
and how many requests each side made (every feed must be requested cold and revalidated warm).

    .venv/bin/python benchmarks/bench_fetch.py [--feeds 300] [--items 50] [--per-host 16] [--rounds 2]
                                               [--no-reader] [--changed] [--floor] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
ROOT = Path(__file__).resolve().parent.parent


def feed(n: int, items: int, edition: int = 0) -> bytes:
    rng = random.Random(n)
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        f"<title>Feed {n}</title><link>http://site{n}.example.com/</link><description>feed {n}</description>",
    ]
    for i in range(items):
        paras = "".join(
            "<p>" + "".join("".join(rng.choices(HANZI, k=rng.randint(1, 3))) for _ in range(40)) + "。</p>"
            for _ in range(4)
        )
        day = 1 + (i % 28)
        parts.append(
            f"<item><title>Feed {n} story {i}</title><link>http://site{n}.example.com/{i}.html</link>"
            f'<guid isPermaLink="false">f{n}-{i}</guid><pubDate>Mon, {day:02d} Aug 2022 09:00:00 +0800</pubDate>'
            f"<category>topic {n % 20}</category>"
            f"<description><![CDATA[{paras}<img src='/img/{i}.jpg'>{f'<p>edition {edition}</p>' if edition else ''}]]>"
            "</description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


def serve(port_box, counts, n: int, items: int, keep_alive: bool = False, edition=None) -> None:
    """counts[0]: requests answered 200, counts[1]: requests answered 304. Without `keep_alive`
    the server speaks HTTP/1.0 and closes each connection after one response (as the acceptance
    check's server does), so every request pays a TCP connect. `edition` (a shared int): while it
    is 1, every feed is served with every item's content changed."""
    editions = [{f"/feed/{i}.xml": feed(i, items, e) for i in range(n)} for e in ((0, 1) if edition else (0,))]
    tags = [{p: '"' + hashlib.sha1(b).hexdigest()[:16] + '"' for p, b in e.items()} for e in editions]

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
        # Headers and body go out in two writes; with Nagle on, the body's last segment waits
        # for the client's delayed ACK (40 ms) and the benchmark would measure that instead.
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_GET(self):
            now = edition.value if edition else 0
            bodies, etags = editions[now], tags[now]
            body = bodies.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("If-None-Match") == etags[self.path]:
                with counts.get_lock():
                    counts[1] += 1
                self.send_response(304)
                self.send_header("ETag", etags[self.path])
                if keep_alive:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with counts.get_lock():
                counts[0] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", etags[self.path])
            self.send_header("Last-Modified", "Mon, 05 Sep 2022 08:00:00 GMT")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    port_box.put(srv.server_address[1])
    srv.serve_forever()


# Children may write bytecode caches: an installed package has them (pip compiles on install), an
# editable checkout run with PYTHONDONTWRITEBYTECODE would compile every module on every run.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measured(cmd: list[str], cwd: Path) -> dict:
    """Run cmd as a child: wall seconds, CPU seconds and peak RSS (MB, of the child or any process
    it reaped), its output."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=CHILD_ENV
    )
    out = p.stdout.read().decode("utf-8", "replace") if p.stdout else ""
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc:
        raise SystemExit(f"{' '.join(cmd)} exited {rc}:\n{out}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss": ru.ru_maxrss / 1024, "out": out}


# reader's side, timed the way a cron job pays for it: import and open included in each figure
READER = """
import time
t0 = time.perf_counter()
import json, sys
import reader
r = reader.make_reader(sys.argv[1])
boot = time.perf_counter() - t0
for u in open(sys.argv[2]).read().split():
    r.add_feed(u, exist_ok=True)
t = time.perf_counter(); r.update_feeds(workers=16); cold = time.perf_counter() - t
n = r.get_entry_counts().total
t = time.perf_counter(); r.update_feeds(workers=16, scheduled=False); warm = time.perf_counter() - t
print("READER " + json.dumps({"version": reader.__version__, "cold": boot + cold, "warm": boot + warm,
                              "boot": boot, "entries": n}))
"""


# The HTTP client's floor: aiohttp imported as the aggregator imports it (`tls.import_aiohttp`,
# which skips loading CAs into two contexts no request uses), then one conditional GET per feed.
# 4 connections: the aggregator's start per host (`remote.HOST_START`); 16 at once overflow the
# accept backlog of Python's http.server and every dropped SYN costs a second.
BARE = """
import asyncio, json, sys
if sys.argv[1] == "fetch":
    from aggregator.sources.tls import import_aiohttp
    aiohttp = import_aiohttp()
    etags = json.load(open(sys.argv[2]))

    async def main():
        conn = aiohttp.TCPConnector(limit=4, limit_per_host=0)
        async with aiohttp.ClientSession(connector=conn, cookie_jar=aiohttp.DummyCookieJar()) as s:
            async def one(url):
                async with s.get(url, headers={"If-None-Match": etags[url]}) as r:
                    await r.read()
                    return r.status
            return await asyncio.gather(*(one(u) for u in etags))

    statuses = asyncio.run(main())
    assert set(statuses) == {304}, set(statuses)
"""


def reader_python(version: str) -> Path:
    """A venv with PyPI `reader` (cached between runs in the temp folder)."""
    venv = Path(tempfile.gettempdir()) / f"bench-fetch-reader-{version}"
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import reader"], capture_output=True).returncode == 0:
        return py
    print(f"installing reader=={version} into {venv} …", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # sgmllib3k: feedparser's optional dependency that reader's own install pulls in on some versions
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"reader=={version}", "sgmllib3k"], check=True)
    return py


def config(folder: Path, urls: list[str], per_host: int, concurrency: int) -> Path:
    (folder / "db").mkdir(parents=True, exist_ok=True)
    lines = [
        '[database]\nurl = "sqlite:///db/bench.sqlite3"',
        '[output]\ndir = "out"',
        f"[fetch]\nconcurrency = {concurrency}\nper_host = {per_host}\ntimeout = 60\nallow_private = true",
    ]
    lines += [f'[[sources]]\nname = "feed{i}"\nurl = "{u}"' for i, u in enumerate(urls)]
    cfg = folder / "config.toml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feeds", type=int, default=300)
    ap.add_argument("--items", type=int, default=50)
    ap.add_argument("--per-host", type=int, default=16, help="[fetch] per_host (all feeds are on one host here)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--keep-alive", action="store_true", help="HTTP/1.1 keep-alive server (default: HTTP/1.0)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of reader and aggregator, alternating")
    ap.add_argument("--reader-version", default="3.26")
    ap.add_argument("--no-reader", action="store_true", help="measure the aggregator alone")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    ap.add_argument("--changed", action="store_true",
                    help="after each warm run, one more fetch with every item of every feed changed")
    ap.add_argument("--floor", action="store_true",
                    help="also time a bare aiohttp revalidation of every feed (the HTTP client's floor)")
    a = ap.parse_args()

    box: multiprocessing.Queue = multiprocessing.Queue()
    counts = multiprocessing.Array("i", 2)
    edition = multiprocessing.Value("i", 0) if a.changed else None
    server = multiprocessing.Process(target=serve, args=(box, counts, a.feeds, a.items, a.keep_alive, edition),
                                     daemon=True)  # fmt: skip
    server.start()
    port = box.get(timeout=120)
    urls = [f"http://127.0.0.1:{port}/feed/{i}.xml" for i in range(a.feeds)]
    work = a.keep or Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "urls.txt").write_text("\n".join(urls), encoding="utf-8")
    (work / "reader_run.py").write_text(READER, encoding="utf-8")
    rpy = None if a.no_reader else reader_python(a.reader_version)
    aggregator = [str(Path(sys.executable)), "-m", "aggregator", "-q"]

    def requests() -> tuple[int, int]:
        with counts.get_lock():
            return counts[0], counts[1]

    def delta(before: tuple[int, int]) -> tuple[int, int]:
        now = requests()
        return now[0] - before[0], now[1] - before[1]

    readers: list[dict] = []
    aggs: list[dict] = []
    floors: list[float] = []
    if a.floor:
        (work / "bare.py").write_text(BARE, encoding="utf-8")
        tags = {u: '"' + hashlib.sha1(feed(i, a.items)).hexdigest()[:16] + '"' for i, u in enumerate(urls)}
        (work / "etags.json").write_text(json.dumps(tags), encoding="utf-8")

    def floor_round() -> None:
        python = str(Path(sys.executable))
        before = requests()
        bare = measured([python, str(work / "bare.py"), "fetch", str(work / "etags.json")], work)
        assert delta(before)[1] == a.feeds, delta(before)
        empty = measured([python, str(work / "bare.py"), "none"], work)
        floors.append(bare["wall"] - empty["wall"])
        print(f"bare aiohttp   {a.feeds} revalidations {bare['wall']:5.2f} s, {bare['cpu']:.2f} CPU-s "
              f"(empty interpreter {empty['wall']:.2f} s): work {floors[-1]:.2f} s", flush=True)  # fmt: skip

    def reader_round(i: int) -> None:
        folder = work / f"reader{i}"
        folder.mkdir(exist_ok=True)
        before = requests()
        r = measured([str(rpy), str(work / "reader_run.py"), str(folder / "reader.sqlite"), str(work / "urls.txt")],
                     folder)  # fmt: skip
        got = json.loads(next(x for x in r["out"].splitlines() if x.startswith("READER "))[7:])
        got.update(rss=r["rss"], requests=delta(before))
        readers.append(got)
        print(f"reader {got['version']}   cold {got['cold']:6.2f} s  warm {got['warm']:5.2f} s  "
              f"(import+open {got['boot']:.2f} s)  {got['entries']} entries  peak RSS {r['rss']:.0f} MB  "
              f"requests 200/304 {got['requests']}", flush=True)  # fmt: skip

    def agg_round(i: int) -> None:
        folder = work / f"agg{i}"
        cfg = config(folder, urls, a.per_host, a.concurrency)
        before = requests()
        cold = measured([*aggregator, "--config", str(cfg), "fetch"], folder)
        cold_req = delta(before)
        before = requests()
        warm = measured([*aggregator, "--config", str(cfg), "fetch"], folder)
        warm_req = delta(before)
        idle_cfg = config(work / f"idle{i}", [], a.per_host, a.concurrency)
        idle = measured([*aggregator, "--config", str(idle_cfg), "fetch"], idle_cfg.parent)
        aggs.append({"cold": cold, "warm": warm, "idle": idle})
        if edition is not None:  # every item changed: 15,000 changed versions to store
            edition.value = 1
            changed = aggs[-1]["changed"] = measured([*aggregator, "--config", str(cfg), "fetch"], folder)
            edition.value = 0
            print(f"aggregator     every item changed {changed['wall']:5.2f} s: "
                  f"{changed['out'].strip().splitlines()[-1]}", flush=True)  # fmt: skip
        print(f"aggregator     cold {cold['wall']:6.2f} s  warm {warm['wall']:5.2f} s  "
              f"(no sources {idle['wall']:.2f} s)  peak RSS cold {cold['rss']:.0f} MB, warm {warm['rss']:.0f} MB  "
              f"requests 200/304 cold {cold_req}, warm {warm_req}", flush=True)  # fmt: skip
        print(f"    cold: {cold['out'].strip().splitlines()[-1]}\n    warm: {warm['out'].strip().splitlines()[-1]}")

    print(f"{a.feeds} feeds x {a.items} items on 127.0.0.1, concurrency {a.concurrency}, per_host {a.per_host}, "
          f"in {work}; load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    # Not timed: writes the bytecode caches, and loads both programs' files into the page cache.
    measured([*aggregator, "--config", str(config(work / "warmup", [], a.per_host, a.concurrency)), "fetch"], work)
    if rpy is not None:
        measured([str(rpy), "-c", "import reader"], work)
    for i in range(a.rounds):
        first, second = (reader_round, agg_round) if i % 2 == 0 else (agg_round, reader_round)
        for step in (first, second):
            if step is reader_round and rpy is None:
                continue
            step(i)
        if a.floor:
            floor_round()
    server.terminate()

    a_cold = min(r["cold"]["wall"] for r in aggs)
    a_warm = min(r["warm"]["wall"] for r in aggs)
    a_work = min(r["warm"]["wall"] - r["idle"]["wall"] for r in aggs)
    print(f"\naggregator (best of {len(aggs)}): cold {a_cold:.2f} s ({a.feeds / a_cold:.0f} feeds/s), "
          f"warm {a_warm:.2f} s, warm work alone {a_work:.2f} s ({1000 * a_work / a.feeds:.2f} ms per feed), "
          f"no-source run {min(r['idle']['wall'] for r in aggs):.2f} s"
          + (f", every item changed {min(r['changed']['wall'] for r in aggs):.2f} s" if a.changed else ""))  # fmt: skip
    if floors:
        print(f"bare aiohttp (best of {len(floors)}): warm work alone {min(floors):.2f} s: the aggregator's own "
              f"per-feed cost above it is {1000 * (a_work - min(floors)) / a.feeds:+.2f} ms")  # fmt: skip
    if readers:
        r_cold = min(r["cold"] for r in readers)
        r_warm = min(r["warm"] for r in readers)
        r_work = min(r["warm"] - r["boot"] for r in readers)
        print(f"reader {readers[0]['version']} (best of {len(readers)}): cold {r_cold:.2f} s, warm {r_warm:.2f} s, "
              f"warm work alone {r_work:.2f} s")  # fmt: skip
        print(
            f"ratios (reader / aggregator): cold {r_cold / a_cold:.2f}x (target >= 2.5), "
            f"warm {r_warm / a_warm:.2f}x (>= 1.2), warm work alone {r_work / max(a_work, 1e-9):.2f}x (>= 3)"
        )


if __name__ == "__main__":
    main()
