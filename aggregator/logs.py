"""The daemon's log lines: one per job (kind, source, outcome, counts, seconds), as text
`key=value` pairs or JSON lines (`--json-logs`)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("aggregator.daemon")


def counts(report: object) -> dict[str, int]:
    """The integer fields of a pipeline report, plus the lengths of its list fields."""
    out: dict[str, int] = {}
    if not is_dataclass(report):
        return out
    for f in fields(report):
        value = getattr(report, f.name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            out[f.name] = value
        elif isinstance(value, list):
            out[f.name] = len(value)
    return out


def format_fields(values: dict[str, Any]) -> str:
    """`key=value` pairs for the text log; values with spaces are quoted."""
    parts = []
    for k, v in values.items():
        if isinstance(v, float):
            v = f"{v:.2f}"
        text = str(v)
        if not text or any(c in text for c in ' ="'):
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{k}={text}")
    return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the job's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


# The jobs whose skipped runs the daemon runs again shortly itself (`schedule.Daemon._skipped`).
RETRIED_WHEN_SKIPPED = ("build", "scan:")


class ExpectedSkips(logging.Filter):
    """APScheduler logs at WARNING every run it skips because the job's previous run is still
    going. For a build (changes arrived while one runs, as on every cold start) or a folder scan
    the daemon expects that and runs the job again shortly: a warning there would teach an
    operator to ignore warnings. Those lines are kept for `-vv` only; other jobs' skips stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = record.args[0] if isinstance(record.args, tuple) and record.args else None
        expected = (
            "maximum number of running instances" in str(record.msg)
            and str(getattr(job, "id", "")).startswith(RETRIED_WHEN_SKIPPED)
        )
        return not expected or logging.getLogger("apscheduler").isEnabledFor(logging.DEBUG)


def configure_logging(json_logs: bool, verbosity: int) -> None:
    """The daemon logs its job lines at INFO by default (the CLI's default level is WARNING)."""
    root = logging.getLogger()
    fmt: logging.Formatter = (
        JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for h in root.handlers:
        h.setFormatter(fmt)
    if verbosity >= 0:
        logging.getLogger("aggregator").setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    # APScheduler's own "Running job…" lines, and the stages' per-source lines, would double ours
    # (one line per job); -v brings them back.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)
    scheduler = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, ExpectedSkips) for f in scheduler.filters):
        scheduler.addFilter(ExpectedSkips())
    for stage in ("aggregator.pipeline", "aggregator.dedup"):
        logging.getLogger(stage).setLevel(logging.NOTSET if verbosity > 0 else logging.WARNING)


def job_log(level: int, kind: str, source: str | None, outcome: str, seconds: float, **extra: Any) -> None:
    values: dict[str, Any] = {"job": kind}
    if source is not None:
        values["source"] = source
    values["outcome"] = outcome
    values.update(extra)
    values["seconds"] = round(seconds, 3)
    log.log(level, format_fields(values), extra={"fields": values})
