"""How a long-running process (the daemon, the publisher, a fetch worker) stops: on SIGTERM or
SIGINT it lets in-flight work finish for `SHUTDOWN_GRACE`, and is gone by `STOP_DEADLINE`
whatever hangs; SIGHUP reloads the config."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

log = logging.getLogger("aggregator.daemon")

SHUTDOWN_GRACE = 8.0  # seconds in-flight jobs get after SIGTERM
STOP_DEADLINE = SHUTDOWN_GRACE + 4.0  # after SIGTERM the process is gone by then, whatever hangs


def _leave_now(started: float) -> None:
    log.warning("stop took over %.0f s; leaving now", time.monotonic() - started)
    logging.shutdown()
    os._exit(0)


def install_signals(
    stopping: threading.Event, stop: Callable[[], None], reload: Callable[[], None], logger: logging.Logger = log
) -> None:
    """SIGTERM and SIGINT call `stop`, SIGHUP calls `reload`; both run in the signal handler, so
    they only set flags. `stopping` is set once a stop began: only the first stop signal arms the
    deadline.

    The shutdown grace covers jobs; the deadline covers everything else on the way out (the HTTP
    server, the folder watcher, closing the store, the interpreter joining threads), so a
    supervisor's stop never has to escalate to SIGKILL. Leaving is safe at any point: an open
    transaction rolls back when the process ends and files are only ever replaced whole."""

    def on_stop(signum: int, _frame: object) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        if not stopping.is_set():
            deadline = threading.Timer(STOP_DEADLINE, _leave_now, args=(time.monotonic(),))
            deadline.daemon = True
            deadline.start()
        stop()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: reload())
