"""Update benchmark: cold, no-change and one-file-changed `aggregator update`.

Generates N synthetic articles (~3 KB each, mixed front-matter dialects and body formats,
50 categories) and, with `--feeds`, serves that many RSS feeds on 127.0.0.1 as remote sources
(`--items` each), then runs the real CLI three times and prints files/s and peak memory.
`max_items = 100`.

Two corpora: `diverse` (bodies of words drawn from ~3,000 characters: unrelated articles share
little) and `boilerplate` (corpora.py: report formats from a shared template pool with the facts
filled in, a shared disclaimer on a third, mixed Chinese and English; feed items carrying a long
fixed footer). The cost of dedup must not depend on which.

    .venv/bin/python benchmarks/bench_ingest.py [--n 20000] [--corpus boilerplate] [--feeds 300 --items 50]
                                                [--cache-mb MB] [--keep DIR] [--no-dedup]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CATEGORIES = [f"类别{i}" if i % 2 else f"Topic {i}" for i in range(50)]
WORDS = "市场 经济 公司 投资 增长 政策 银行 股票 基金 利率 发布 数据 报告 分析 预期 季度 收入 利润".split()
# Body text must look like real text to the dedup stage: words of 1-3 characters drawn from
# ~3,000 CJK characters, so unrelated articles share few character shingles, as real ones do.
HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def paragraph(rng: random.Random, n: int) -> str:
    return "".join("".join(rng.choices(HANZI, k=rng.randint(1, 3))) for _ in range(n)) + "。"


def article(i: int, rng: random.Random) -> tuple[str, str]:
    cats = rng.sample(CATEGORIES, 2)
    body_paras = [paragraph(rng, 60) for _ in range(8)]
    kind = i % 4
    if kind == 0:  # Jekyll, HTML body, string category, trailing URL line
        fm = (
            f'---\nlayout: post\ntitle: "第{i}号文章 {rng.choice(WORDS)}"\n'
            f"date: 2022-02-16 20:47:24 +0800\ncategories: {cats[0]}\ntags: 新闻\n---\n"
        )
        body = "\n".join(f"<p>{p}</p>" for p in body_paras) + f"\n\n<http://example.com/news/{i}.html>\n"
        return f"{i:06d}.txt", fm + body
    if kind == 1:  # Hexo, list categories, RFC 822 date, Markdown body
        fm = (
            f"\n---\ntitle: '文章 {i}'\ncategories:\n - {cats[0]}\n - {cats[1]}\n"
            f"author: 记者{i % 7}\ndate: Fri, 02 Sep 2022 20:08:00 GMT\nthumbnail: 'https://img.example.com/{i}.jpg'\n---\n"
        )
        body = "\n\n".join(body_paras) + f"\n\n[链接](/news/{i})\n"
        return f"{i:06d}.md", fm + body
    if kind == 2:  # TOML front matter, ISO date
        fm = (
            f'+++\ntitle = "TOML article {i}"\ndate = "2023-05-0{1 + i % 9}T08:00:00+08:00"\n'
            f'categories = ["{cats[0]}"]\n+++\n'
        )
        return f"{i:06d}.md", fm + "\n\n".join(body_paras) + "\n"
    fm = f"---\ntitle: HTML article {i}\ndate: 2021-11-{1 + i % 28:02d}\ncategories: [{cats[0]}, {cats[1]}]\n---\n"
    return f"{i:06d}.html", fm + "<div>" + "".join(f"<p>{p}</p>" for p in body_paras) + "</div>\n"


def boilerplate_article(i: int, rng: random.Random) -> tuple[str, str]:
    from corpora import report_body

    title, body, _ = report_body(i, rng)
    cats = rng.sample(CATEGORIES, 2)
    day = 1 + i % 28
    fm = f'---\ntitle: "{title}"\ndate: 2023-{1 + i % 12:02d}-{day:02d} {i % 24:02d}:{i % 60:02d}:00 +0800\n'
    return f"{i:06d}.md", fm + f"categories: [{cats[0]}, {cats[1]}]\n---\n{body}\n"


def generate(root: Path, n: int, dedup: bool = True, corpus: str = "diverse", feed_urls: list[str] = (),
             cache_mb: int | None = None) -> None:
    rng = random.Random(42)
    arts = root / "articles"
    make = boilerplate_article if corpus == "boilerplate" else article
    for i in range(n):
        name, text = make(i, rng)
        sub = arts / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / name).write_text(text, encoding="utf-8")
    remote = "".join(
        f'[[sources]]\nname = "feed{k}"\nurl = "{url}"\nallow_private = true\ncategories = ["{CATEGORIES[k % 50]}"]\n'
        for k, url in enumerate(feed_urls)
    )
    (root / "config.toml").write_text(
        '[database]\nurl = "sqlite:///db/bench.sqlite3"\n'
        + (f"cache_mb = {cache_mb}\n" if cache_mb else "")
        + '[output]\ndir = "out"\nmax_items = 100\n'
        f"[dedup]\nenabled = {'true' if dedup else 'false'}\n[fetch]\nper_host = 16\n"
        '[[sources]]\nname = "bench"\npath = "articles"\n' + remote,
        encoding="utf-8",
    )


def serve_feeds(n: int, items: int, corpus: str) -> tuple[list[str], object]:
    """`n` RSS feeds of `items` items on 127.0.0.1 (ETag and 304), in a thread. → (URLs, server)."""
    import hashlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from xml.sax.saxutils import escape

    from corpora import footer_item_html

    rng = random.Random(7)
    docs: dict[str, bytes] = {}
    for k in range(n):
        parts = []
        for j in range(items):
            lead = paragraph(rng, 40)
            if corpus == "boilerplate":
                body = footer_item_html(lead, f"feed {k}")
            else:
                body = f"<p>{lead}</p><p>{paragraph(rng, 80)}</p>"
            parts.append(
                f"<item><title>Feed {k} item {j} {rng.choice(WORDS)}</title><link>http://news.example.org/{k}/{j}.html</link>"
                f"<guid>feed-{k}-{j}</guid><pubDate>Mon, 0{1 + j % 9} Jan 2024 {j % 24:02d}:00:00 +0000</pubDate>"
                f"<description>{escape(body)}</description></item>"
            )
        docs[f"/feed/{k}.xml"] = (
            f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {k}</title>'
            f"<link>http://news.example.org/{k}/</link><description>d</description>{''.join(parts)}</channel></rss>"
        ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = docs.get(self.path)
            if body is None:
                self.send_error(404)
                return
            tag = '"' + hashlib.md5(body).hexdigest() + '"'
            if self.headers.get("If-None-Match") == tag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", tag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return [f"http://127.0.0.1:{server.server_address[1]}/feed/{k}.xml" for k in range(n)], server


def run(root: Path, label: str, n: int) -> None:
    # -v: the log carries each stage's wall time, CPU time and peak memory (`aggregator.usage`).
    cmd = [sys.executable, "-m", "aggregator", "-v", "--config", str(root / "config.toml"), "update"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{label}: exit {r.returncode}: {r.stderr[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss of children is the largest child so far, in KiB on Linux.
    print(
        f"{label:>22}: {took:6.2f} s wall, {cpu:6.2f} s CPU, {n / took:8.0f} files/s, "
        f"peak RSS so far {after.ru_maxrss / 1024:.0f} MB | {r.stdout.strip()}"
    )
    for line in r.stderr.splitlines():
        if "aggregator.usage: stage " in line:
            print(f"{'':>24}{line.split('stage ', 1)[1]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--keep", type=Path, help="use (and keep) this folder instead of a temp one")
    ap.add_argument("--no-dedup", action="store_true", help="run with [dedup] enabled = false")
    ap.add_argument("--corpus", choices=("diverse", "boilerplate"), default="diverse")
    ap.add_argument("--feeds", type=int, default=0, help="remote RSS feeds served on 127.0.0.1")
    ap.add_argument("--items", type=int, default=50, help="items per feed")
    ap.add_argument("--cache-mb", type=int, help="[database] cache_mb (default: the config's default)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="agg-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    for old in ("articles", "db", "out"):  # a kept folder starts cold too
        shutil.rmtree(root / old, ignore_errors=True)
    (root / "db").mkdir()
    t0 = time.perf_counter()
    urls, _server = serve_feeds(args.feeds, args.items, args.corpus) if args.feeds else ([], None)
    generate(root, args.n, dedup=not args.no_dedup, corpus=args.corpus, feed_urls=urls, cache_mb=args.cache_mb)
    size = sum(p.stat().st_size for p in (root / "articles").rglob("*") if p.is_file())
    print(
        f"generated {args.n} articles, {size / args.n / 1024:.1f} KB each, in {time.perf_counter() - t0:.1f} s: {root}"
    )
    run(root, "cold update", args.n)
    run(root, "no-change update", args.n)
    target = next((root / "articles").rglob("*.md"))
    target.write_text(target.read_text(encoding="utf-8") + "\n\nOne more paragraph.\n", encoding="utf-8")
    os.utime(target)
    run(root, "one-file-changed update", args.n)


if __name__ == "__main__":
    main()
