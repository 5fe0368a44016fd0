"""Article-ingest benchmark: cold, no-change and one-file-changed `aggregator update`.

Generates N synthetic articles (~3 KB each, mixed front-matter dialects and body formats,
50 categories), then runs the real CLI three times and prints files/s and peak memory.

    .venv/bin/python benchmarks/bench_ingest.py [--n 20000] [--keep DIR]
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


def generate(root: Path, n: int, dedup: bool = True) -> None:
    rng = random.Random(42)
    arts = root / "articles"
    for i in range(n):
        name, text = article(i, rng)
        sub = arts / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / name).write_text(text, encoding="utf-8")
    (root / "config.toml").write_text(
        '[database]\nurl = "sqlite:///db/bench.sqlite3"\n[output]\ndir = "out"\n'
        f"[dedup]\nenabled = {'true' if dedup else 'false'}\n"
        '[[sources]]\nname = "bench"\npath = "articles"\n',
        encoding="utf-8",
    )


def run(root: Path, label: str, n: int) -> None:
    cmd = [sys.executable, "-m", "aggregator", "-q", "--config", str(root / "config.toml"), "update"]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--keep", type=Path, help="use (and keep) this folder instead of a temp one")
    ap.add_argument("--no-dedup", action="store_true", help="run with [dedup] enabled = false")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="agg-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    for old in ("articles", "db", "out"):  # a kept folder starts cold too
        shutil.rmtree(root / old, ignore_errors=True)
    (root / "db").mkdir()
    t0 = time.perf_counter()
    generate(root, args.n, dedup=not args.no_dedup)
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
