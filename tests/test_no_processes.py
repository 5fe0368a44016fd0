"""Where worker processes cannot run (no writable /dev/shm for their queues' semaphores, as
on AWS Lambda), `update` does every stage in its own process and publishes the same bytes.

The real CLI in a mount namespace whose /dev/shm is a read-only tmpfs (`unshare`, as root);
skipped where that cannot be set up."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_config

N_FILES = 1100  # over every threshold: parse workers (400 files) and render workers (3,000 entries)
N_FEEDS = 30  # over the 24 documents that start feed parse workers


def _no_shm(cmd: list[str]) -> list[str]:
    return ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o ro tmpfs /dev/shm && exec "$@"', "sh", *cmd]


def _can_hide_shm() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(_no_shm(["sh", "-c", "! touch /dev/shm/probe"]), capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_hide_shm(), reason="cannot make /dev/shm read-only here (unshare, root)")


def _folder(root: Path, feed_urls: list[str]) -> Path:
    articles = root / "articles"
    articles.mkdir(parents=True)
    for i in range(N_FILES):
        (articles / f"2024-05-{1 + i % 28:02d}-post-{i}.md").write_text(
            f"---\ntitle: Post {i}\ndate: 2024-05-{1 + i % 28:02d} 08:{i % 60:02d}:00 +0800\n"
            f"categories: [c{i % 5}]\n---\nBody {i}: 第{i}条消息, {i * 7919 % 100003} units.\n",
            encoding="utf-8",
        )
    feeds = "".join(
        f'[[sources]]\nname = "feed{n}"\nurl = "{u}"\nallow_private = true\ncategories = ["c{n % 5}"]\n'
        for n, u in enumerate(feed_urls)
    )
    return write_config(root, extra_sources=feeds)


def _run(cfg: Path, hide_shm: bool) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "aggregator", "--config", str(cfg), "-v", "update"]
    return subprocess.run(
        _no_shm(cmd) if hide_shm else cmd, capture_output=True, text=True, timeout=300, cwd=cfg.parent,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_without_worker_processes_update_works_in_process_and_publishes_the_same(tmp_path, server):
    for n in range(N_FEEDS):
        items = "".join(
            f"<item><title>Feed {n} item {j}</title><guid>urn:f:{n}:{j}</guid><link>http://example.org/{n}/{j}</link>"
            f"<pubDate>Wed, 0{1 + j} May 2024 10:{n:02d}:00 GMT</pubDate>"
            f"<description>item {j} of feed {n}</description></item>"
            for j in range(2)
        )
        server.expect_request(f"/f{n}.xml").respond_with_data(
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>F{n}</title>{items}</channel></rss>',
            content_type="application/rss+xml",
        )
    urls = [server.url_for(f"/f{n}.xml") for n in range(N_FEEDS)]
    runs = {}
    for hide in (False, True):
        cfg = _folder(tmp_path / ("hidden" if hide else "normal"), urls)
        runs[hide] = (_run(cfg, hide), cfg.parent / "out")

    normal, hidden = runs[False][0], runs[True][0]
    assert normal.returncode == 0, normal.stderr
    assert hidden.returncode == 0, hidden.stderr
    summary = f"{N_FILES} files seen: {N_FILES} new"
    assert summary in normal.stdout and summary in hidden.stdout
    stages = lambda r: [line for line in r.stderr.splitlines() if "aggregator.usage: stage" in line]  # noqa: E731
    # The usage line of a stage names its largest worker process when one ran.
    assert sum("workers" in line for line in stages(normal)) >= 3, normal.stderr  # fetch, ingest, build
    assert not any("workers" in line for line in stages(hidden)), hidden.stderr
    assert "worker processes cannot run here (OSError" in hidden.stderr
    assert f"{N_FEEDS} downloaded" in hidden.stderr or f"{N_FEEDS} feeds" in hidden.stdout + hidden.stderr
    published = _files(runs[False][1])
    assert len(published) > N_FILES
    assert _files(runs[True][1]) == published
