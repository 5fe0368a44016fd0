"""Remote-fetch benchmark: `aggregator fetch` of N distinct feeds (50 items each) from a local server.

Serves the feeds from a threaded HTTP server on 127.0.0.1 (in a separate process, so it does
not share a GIL with the measurement), then runs the real CLI twice: cold (every feed 200,
parsed and stored) and warm (every feed 304). Prints feeds/s and the peak RSS of the CLI
process and of its parse workers.

    .venv/bin/python benchmarks/bench_fetch.py [--feeds 500] [--items 50] [--per-host 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import multiprocessing
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def feed(n: int, items: int) -> bytes:
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
            f"<description><![CDATA[{paras}<img src='/img/{i}.jpg'>]]></description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


def serve(port_box, n: int, items: int) -> None:
    bodies = {f"/feed/{i}.xml": feed(i, items) for i in range(n)}
    etags = {p: '"' + hashlib.sha1(b).hexdigest()[:16] + '"' for p, b in bodies.items()}

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        # Headers and body go out in two writes; with Nagle on, the body's last segment waits
        # for the client's delayed ACK (40 ms) and the benchmark would measure that instead.
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_GET(self):
            body = bodies.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("If-None-Match") == etags[self.path]:
                self.send_response(304)
                self.send_header("ETag", etags[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", etags[self.path])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    port_box.put(srv.server_address[1])
    srv.serve_forever()


def run(cfg: Path, *args: str) -> tuple[float, str, int]:
    """Run the CLI; (seconds, summary line, peak RSS in MB of the CLI or any process it waited for)."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "took = time.perf_counter() - t\n"
        "if r.returncode: sys.exit(r.stderr)\n"
        "print(took, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, sep='\\t')\n"
        "print(r.stdout.strip().splitlines()[-1])\n"
    )
    cmd = [sys.executable, "-m", "aggregator", "-q", "--config", str(cfg), *args]
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, cwd=cfg.parent)
    if out.returncode:
        raise SystemExit(out.stderr)
    first, summary = out.stdout.strip().splitlines()
    took, rss = first.split("\t")
    return float(took), summary, int(rss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=500)
    ap.add_argument("--items", type=int, default=50)
    ap.add_argument("--per-host", type=int, default=2, help="[fetch] per_host (all feeds are on one host here)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    a = ap.parse_args()

    box: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(box, a.feeds, a.items), daemon=True)
    server.start()
    port = box.get(timeout=120)
    work = a.keep or Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    work.mkdir(parents=True, exist_ok=True)
    lines = [
        '[database]\nurl = "sqlite:///db/bench.sqlite3"',
        '[output]\ndir = "out"',
        f"[fetch]\nconcurrency = {a.concurrency}\nper_host = {a.per_host}\ntimeout = 60",
        "[dedup]\nenabled = false",
    ]
    lines += [f'[[sources]]\nname = "feed{i}"\nurl = "http://127.0.0.1:{port}/feed/{i}.xml"' for i in range(a.feeds)]
    cfg = work / "config.toml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")

    print(f"{a.feeds} feeds x {a.items} items, concurrency {a.concurrency}, per_host {a.per_host}, in {work}")
    for label in ("cold (all 200)", "warm (all 304)"):
        took, summary, rss = run(cfg, "fetch")
        print(f"{label:15s} {took:7.2f} s  {a.feeds / took:7.1f} feeds/s  peak RSS {rss} MB  | {summary}")
    server.terminate()


if __name__ == "__main__":
    main()
