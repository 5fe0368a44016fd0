"""Text for the `sources` command's tables: ages, rule counts, the article folders' table."""

from __future__ import annotations

from .config import Settings


def ago(when, now) -> str:
    if when is None:
        return "-"
    seconds = (when - now).total_seconds()
    span = abs(seconds)
    text = f"{span:.0f}s" if span < 90 else f"{span / 60:.0f}m" if span < 5400 else f"{span / 3600:.1f}h"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def _rules(counts, what: str, examples: dict[str, list[str]] | None = None) -> str:
    parts = sorted(((n, rule) for (w, rule), n in counts.items() if w == what), key=lambda x: (-x[0], x[1]))
    shown = examples or {}
    return "; ".join(
        f"{n} {rule}" + (f" ({', '.join(shown[rule])}{', …' if n > len(shown[rule]) else ''})" if rule in shown else "")
        for n, rule in parts
    )


def folder_table(settings: Settings, rows, counts):
    """Article folders: the layout recognized, what its rules took and skipped, entries stored."""
    from rich.table import Table

    from .pipeline import scan_source
    from .sources.sites import describe

    table = Table("name", "path", "layout", "files taken", "skipped", "entries", box=None, pad_edge=False)
    for s in settings.file_sources:
        found = scan_source(s)
        r = rows.get(s.name)
        taken = f"{found.taken()} ({_rules(found.counts, 'taken')})" if found.taken() else "0"
        skipped = f"{found.skipped()}: {_rules(found.counts, 'skipped', found.examples)}" if found.skipped() else "0"
        table.add_row(s.name, str(s.path), describe(found.site), taken, skipped, str(counts.get(r.id, 0) if r else 0))
    return table
