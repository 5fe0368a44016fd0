"""aggregator: ingest article files and remote feeds, deduplicate, publish per-category feeds."""

__version__ = "0.2.0"
