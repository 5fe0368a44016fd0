"""The config's sections about running it: `[serve]`, `[alerts]`, `[retention]`, `[workers]`, and
the `Tuning` the code may pass."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator

from .config_base import STRICT, Interval


class _Section(BaseModel):
    model_config = STRICT


class ServeSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_age: Interval = 300.0  # Cache-Control max-age of served files, seconds
    metrics: bool = True  # answer /metrics (Prometheus text format)
    healthz: bool = True  # answer /healthz
    # Serve /metrics and /healthz on this "host:port" instead of beside the feeds (e.g. an
    # address only the monitoring network reaches); the feed server then answers 404 on them.
    ops_listen: str | None = None

    @field_validator("ops_listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$", v):
            raise ValueError("must be 'host:port', e.g. '0.0.0.0:9108'")
        return v


class AlertSettings(_Section):
    urls: list[str] = []  # Apprise URLs: mailto://, json://, tgram://, …
    source_failing_after: Interval = 86400.0  # a source failing this long raises an alert


class RetentionSettings(_Section):
    max_age_days: int | None = Field(default=None, ge=1)  # prune remote entries older than this
    max_entries_per_source: int | None = Field(default=None, ge=1)  # keep the newest N per remote source
    every: Interval = 3600.0  # how often the daemon prunes and runs database upkeep


class WorkersSettings(_Section):
    """`aggregator run --role fetch|publish` on PostgreSQL (`roles`)."""

    lease: Interval = 20.0  # a claim on a source (and the publisher's lease) lapses this long after its last renewal
    batch: int = Field(default=8, ge=1, le=1000)  # sources a fetch worker claims at a time
    lanes: int = Field(default=4, ge=1, le=64)  # batches a fetch worker fetches side by side
    poll: Interval = 2.0  # longest an idle worker (or the publisher) waits before looking again

    @field_validator("lease")
    @classmethod
    def _lease(cls, v: float) -> float:
        if not 3.0 <= v <= 3600.0:
            raise ValueError("must be between 3 s and 1 h (renewed every third of it)")
        return v


class Tuning(_Section):
    """Sizes that trade memory, processes and latency, with defaults measured on the benchmark
    corpora (docs/benchmarks.md). Not read from the config file: the code that builds a
    Settings may pass others (the tests pass small ones to take the worker paths)."""

    read_parallel_min: int = 400  # article files worth starting parse workers for
    parse_seconds: float = 20.0  # wall-clock limit of one article's parse (a crafted file must not hold the run)
    render_parallel_min: int = 3000  # entries to render (feed items plus article pages) worth starting workers for
    render_cache_entries: int = 4000  # entries whose items and elements a renderer keeps (~15 KB each)
    pages_per_task: int = 500  # article pages per render task
    early_hold: int = 4  # page tasks kept back when pages are handed over before dedup
