"""Each stage's cost (`usage`): measured per stage, reported by `update -v`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import run_cli

from aggregator.config import load_config
from aggregator.pipeline import update
from aggregator.store import Store
from aggregator.usage import Meter

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-stage peaks need /proc (Linux)")


@linux
def test_a_stage_peak_is_its_own_not_the_largest_so_far():
    meter = Meter()
    with meter.stage("big"):
        block = bytearray(120 * 1024 * 1024)  # zero pages: written to, so they are resident
        block[:: 4096] = b"x" * len(block[:: 4096])
        del block  # a big block is its own mapping: freed at once
    with meter.stage("small"):
        small = bytearray(1024)
        del small
    big, small = meter.stages
    assert (big.name, small.name) == ("big", "small")
    assert big.exact and small.exact
    assert big.peak_mb - small.peak_mb > 100, (big, small)
    assert big.cpu_seconds >= 0 and big.seconds >= 0


def test_stage_usage_reads_as_one_line():
    meter = Meter()
    with meter.stage("dedup"):
        sum(range(100_000))
    (u,) = meter.stages
    assert u.line().startswith("dedup: ") and "CPU-s" in u.line() and "MB" in u.line()


def test_update_reports_each_stage(site: Path):
    settings = load_config(site / "config.toml")
    store = Store(settings.database.url)
    report = update(store, settings)
    assert [s.name for s in report.stages] == ["fetch", "ingest", "dedup", "build"]
    assert all(s.peak_mb > 0 and s.seconds >= 0 for s in report.stages)
    assert sum(s.seconds for s in report.stages) <= report.seconds + 0.01


def test_update_verbose_logs_each_stage(site: Path):
    r = run_cli(site / "config.toml", "-v", "update")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "aggregator.usage" in line]
    assert [line.split("stage ", 1)[1].split(":")[0] for line in lines] == ["fetch", "ingest", "dedup", "build"]
    assert all("peak" in line for line in lines)


def _spin(seconds: float) -> int:
    import time

    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n


@linux
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_worker_processes_count_in_their_stage(method: str):
    """Workers started in a stage, whether this process's children (fork) or a forkserver's
    (which collects them itself), count in that stage's CPU time and not in the next one's."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    meter = Meter()
    with meter.stage("work"), ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
        list(pool.map(_spin, [0.4, 0.4]))
    with meter.stage("after"):
        pass
    work, after = meter.stages
    assert work.cpu_seconds >= 0.75, work
    assert after.cpu_seconds < 0.2, after
    assert work.workers_peak_mb is None or work.workers_peak_mb > 1
