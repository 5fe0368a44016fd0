"""Fetch workers against one PostgreSQL: 1, 2 and 4 `aggregator run --role fetch` processes share
N sources (default 2,000) served from 127.0.0.2… (one server per host, each response delayed
50–200 ms at random), every source due once in the run (`every = "1h"`).

Per worker count: seconds from starting the workers until every source was fetched once,
sources/s, double fetches (sources requested more than once: must be 0), and PostgreSQL
transactions per source (from pg_stat_database: each statement outside a transaction counts
as one, so it is a floor on round trips; the per-host slots' lock and unlock are two each).

    .venv/bin/python benchmarks/bench_workers.py --pg postgresql+psycopg://postgres@127.0.0.1:5432/aggbench
        [--sources 2000] [--hosts 20] [--per-host 4] [--workers 1,2,4]

The database named by --pg is emptied (schema public dropped) before each run.
"""

from __future__ import annotations

import argparse
import http.server
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine

from aggregator.store.database import drop_everything

ROOT = Path(__file__).resolve().parent.parent
LOG: list[str] = []
LOCK = threading.Lock()


def feed(i: int) -> bytes:
    items = "".join(f"<item><title>Source {i} story {j}</title><guid>urn:b:{i}:{j}</guid>"
                    f"<link>http://s{i}.example.org/{j}</link><description>text {j}</description></item>"
                    for j in range(5))  # fmt: skip
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>S{i}</title>{items}</channel></rss>'.encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a) -> None:
        pass

    def do_GET(self) -> None:
        with LOCK:
            LOG.append(self.path)
        time.sleep(random.uniform(0.05, 0.2))
        body = feed(int(self.path.strip("/").split(".")[0]))
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def start_servers(hosts: int) -> list[tuple[str, int]]:
    out = []
    for h in range(hosts):
        srv = Server((f"127.0.0.{h + 2}", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        out.append(srv.server_address[:2])
    return out


def transactions(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as c:
        n = c.exec_driver_sql("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                              "WHERE datname = current_database()").scalar()  # fmt: skip
    engine.dispose()
    return int(n)


def write_config(folder: Path, url: str, servers, n: int, per_host: int) -> Path:
    lines = ["[database]", f'url = "{url}"', "[output]", 'dir = "out"', 'base_url = "http://b.example.org/"',
             "[fetch]", 'every = "1h"', f"per_host = {per_host}", "allow_private = true", 'timeout = "10s"']
    for i in range(n):
        host, port = servers[i % len(servers)]
        lines += ["[[sources]]", f'name = "s{i:05d}"', f'url = "http://{host}:{port}/{i}.xml"']
    cfg = folder / "config.toml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


def one_run(url: str, servers, n: int, per_host: int, workers: int) -> dict:
    drop_everything(url)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        cfg = write_config(Path(tmp), url, servers, n, per_host)
        # The schema is made once, before the clock starts, as in a deployment.
        subprocess.run([sys.executable, "-m", "aggregator", "--config", str(cfg), "db", "current"], check=True,
                       capture_output=True, cwd=tmp)  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with LOCK:
            LOG.clear()
        before = transactions(url)
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "aggregator", "--config", str(cfg), "run", "--role", "fetch"]
        procs = [subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(workers)]  # fmt: skip
        while True:
            with LOCK:
                seen = len(set(LOG))
            if seen >= n or time.monotonic() - t0 > 900:
                break
            time.sleep(0.05)
        took = time.monotonic() - t0
        time.sleep(2.0)  # let the last batches record their state and release their claims
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        time.sleep(1.5)  # PostgreSQL flushes its statistics about once a second
        xacts = transactions(url) - before
        with LOCK:
            requests = list(LOG)
    counts: dict[str, int] = {}
    for path in requests:
        counts[path] = counts.get(path, 0) + 1
    return {"workers": workers, "seconds": took, "per_s": n / took, "fetched": len(counts),
            "doubles": sum(1 for c in counts.values() if c > 1), "xact_per_source": xacts / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", required=True)
    ap.add_argument("--sources", type=int, default=2000)
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--per-host", type=int, default=4)
    ap.add_argument("--workers", default="1,2,4")
    a = ap.parse_args()
    servers = start_servers(a.hosts)
    print(f"{a.sources} sources on {a.hosts} hosts (per_host {a.per_host}), 50–200 ms per response")
    print("| fetch workers | seconds to fetch all | sources/s | fetched | double fetches | transactions/source |")
    print("|---|---|---|---|---|---|")
    for w in [int(x) for x in a.workers.split(",")]:
        r = one_run(a.pg, servers, a.sources, a.per_host, w)
        print(f"| {r['workers']} | {r['seconds']:.1f} | {r['per_s']:.0f} | {r['fetched']} | {r['doubles']} | "
              f"{r['xact_per_source']:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
