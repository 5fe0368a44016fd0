"""The signals of a long-running process (`stopping.install_signals`), in a real child process:
SIGHUP reloads, SIGTERM stops, and a stop that hangs is cut short at the deadline."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

from conftest import ROOT

# A process whose stop never finishes: only the deadline (made short here) ends it.
CHILD = textwrap.dedent("""
    import logging, sys, threading, time
    from aggregator import stopping

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    stopping.STOP_DEADLINE = 0.5
    stopped = threading.Event()

    def stop():
        print("stop", flush=True)
        stopped.set()

    stopping.install_signals(stopped, stop, lambda: print("reload", flush=True))
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
""")


def _line(p: subprocess.Popen, limit: float = 20) -> str:
    ready, _, _ = select.select([p.stdout], [], [], limit)
    assert ready, "the child said nothing"
    return p.stdout.readline().decode().strip()


def test_sighup_reloads_and_a_hanging_stop_ends_at_the_deadline() -> None:
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert _line(p) == "ready"
        p.send_signal(signal.SIGHUP)
        assert _line(p) == "reload"
        assert p.poll() is None  # a reload is not a stop
        p.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert _line(p) == "stop"
        p.send_signal(signal.SIGINT)  # a second stop signal is handled too, not a KeyboardInterrupt
        assert _line(p) == "stop"
        assert p.wait(20) == 0
        took = time.monotonic() - sent
        err = p.stderr.read().decode()
        assert 0.5 <= took < 10, took
        assert "received SIGTERM" in err and "received SIGINT" in err
        assert err.count("leaving now") == 1 and "Traceback" not in err, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
