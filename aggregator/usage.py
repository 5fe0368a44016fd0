"""What each stage of a run costs: wall time, CPU time and peak memory.

`update` measures its stages (fetch, ingest, dedup, build) with a `Meter`; `update -v` logs one
line per stage, and the benchmarks read them, so that "memory is bounded by the batch, not the
corpus" can be checked stage by stage rather than for the run as a whole.

- **Peak memory of this process, per stage.** On Linux the kernel's high-water mark (VmHWM)
  is reset at the start of each stage (writing 5 to /proc/self/clear_refs), so a stage's peak
  is its own, not the largest of the stages before it. Where that is not possible, the
  process's peak so far (`ru_maxrss`) stands in, marked as such.
- **Worker processes.** CPU time counts every process this one started, directly or not
  (parse and render workers, the forkserver's children), from /proc: what each still running
  used during the stage, and what the ended ones used, as their parents collected it. Their
  peak memory shows when it is known: the largest worker still running at the end of the
  stage, or the largest that ended during it (the kernel's figure for the processes this one
  waited for, when it rose during the stage).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("aggregator.usage")


@dataclass(frozen=True, slots=True)
class StageUsage:
    name: str
    seconds: float  # wall time
    cpu_seconds: float  # this process and every worker process, those still running included
    peak_mb: float  # the largest resident size of this process during the stage
    exact: bool  # False: `peak_mb` is the process's peak so far (the stage's could not be told apart)
    workers_peak_mb: float | None  # the largest worker process, when it is known (see the module's notes)

    def line(self) -> str:
        peak = f"{self.peak_mb:.0f} MB" if self.exact else f"≤ {self.peak_mb:.0f} MB"
        workers = f", workers {self.workers_peak_mb:.0f} MB" if self.workers_peak_mb is not None else ""
        return f"{self.name}: {self.seconds:.2f} s, {self.cpu_seconds:.2f} CPU-s, peak {peak}{workers}"


@dataclass(slots=True)
class Meter:
    """The usage of each stage measured with `stage`, in order."""

    stages: list[StageUsage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        exact = _reset_peak()
        me, kids = _rusage()
        before = _descendants()
        started = time.monotonic()
        try:
            yield
        finally:
            me2, kids2 = _rusage()
            after = _descendants()
            cpu = me2.cpu - me.cpu + kids2.cpu - kids.cpu
            # Those running now: what they used since the start. Those that ended: their whole
            # use is in their parent's (or this process's) collected figure, so what they had
            # used before the stage comes off.
            cpu += sum(c - before.get(p, (0.0, 0))[0] for p, (c, _) in after.items())
            cpu -= sum(c for p, (c, _) in before.items() if p not in after)
            workers = [kb / 1024 for _, kb in after.values() if kb]
            if kids2.maxrss > kids.maxrss:
                workers.append(_mb(kids2.maxrss))
            peak = _peak_mb() if exact else None
            usage = StageUsage(
                name,
                time.monotonic() - started,
                cpu,
                peak if peak is not None else _mb(me2.maxrss),
                peak is not None,
                max(workers) if workers else None,
            )
            self.stages.append(usage)
            log.info("stage %s", usage.line())


@dataclass(frozen=True, slots=True)
class _Usage:
    cpu: float  # seconds, user and system
    maxrss: int  # in the platform's unit (`_mb`)


def _rusage() -> tuple[_Usage, _Usage]:
    """(this process, its ended and collected children); where `resource` is missing (Windows),
    this process's CPU time alone."""
    try:
        import resource
    except ImportError:
        return _Usage(time.process_time(), 0), _Usage(0.0, 0)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (_Usage(me.ru_utime + me.ru_stime, me.ru_maxrss), _Usage(kids.ru_utime + kids.ru_stime, kids.ru_maxrss))


def _mb(maxrss: int) -> float:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def _reset_peak() -> bool:
    """Reset this process's peak resident size to its current one (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float | None:
    kb = _hwm_kb("self")
    return kb / 1024 if kb else None


def _descendants() -> dict[tuple[int, int], tuple[float, int]]:
    """Every running process this one started, directly or not: (pid, start time) → (CPU
    seconds, its own and its collected children's; peak resident kB, 0 when unknown). The
    start time tells a pid reused during a stage from the process it named before. Empty
    without /proc."""
    import os

    try:
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return {}
    found: dict[tuple[int, int], tuple[float, int]] = {}
    todo = _children(os.getpid())
    while todo:  # a few levels at most: workers, and a forkserver's children
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        # After the command name (fields 1-2): utime, stime, cutime, cstime are fields 14-17,
        # the start time field 22.
        found[(pid, int(fields[19]))] = (sum(int(x) for x in fields[11:15]) / tick, _hwm_kb(pid))
        todo += _children(pid)
    return found


def _children(pid: int) -> list[int]:
    """The children of `pid`, from each of its threads' list (Linux ≥ 3.5; a thread such as
    the pool's manager may have started some)."""
    import os

    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids += [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        pass
    return kids


def _hwm_kb(pid: int | str) -> int:
    """The peak resident size of process `pid` ("self": this one) in kB; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
