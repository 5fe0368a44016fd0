"""Watching article folders for changes (watchdog), so a saved file is published within seconds.

Each change pokes the folder's scan job (`Daemon.poke`), which debounces bursts; a folder that
cannot be watched (the inotify limit) is still rescanned on its interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("aggregator.daemon")


class FolderWatcher:
    """One watchdog observer over every article folder; `poke(job id)` on each change."""

    def __init__(self, poke: Callable[[str], None]):
        from watchdog.observers import Observer

        self.poke = poke
        self.observer = Observer()
        self.observer.daemon = True
        self._watches: dict[str, tuple[Path | None, Any]] = {}

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()

    def join(self, timeout: float) -> None:
        self.observer.join(timeout=timeout)

    def sync(self, wanted: dict[str, Path | None]) -> None:
        """Watch exactly these folders (source name → path)."""
        from watchdog.events import FileSystemEventHandler

        poke = self.poke

        class Changes(FileSystemEventHandler):
            def __init__(self, job_id: str):
                self.job_id = job_id

            def on_any_event(self, event: Any) -> None:
                if event.event_type in ("opened", "closed_no_write") or (
                    event.is_directory and event.event_type == "modified"
                ):
                    return
                poke(self.job_id)

        for name in list(self._watches):
            if name not in wanted or self._watches[name][0] != wanted[name]:
                self.observer.unschedule(self._watches.pop(name)[1])
        for name, path in wanted.items():
            if name in self._watches or path is None:
                continue
            try:
                watch = self.observer.schedule(Changes(f"scan:{name}"), str(path), recursive=True)
            except OSError as e:  # e.g. inotify watch limit: the interval rescan still works
                log.warning("cannot watch %s (%s); it is rescanned on its interval only", path, e)
                continue
            self._watches[name] = (path, watch)
