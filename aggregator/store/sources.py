"""Sources and their fetch state: one row per configured source, created on first sight."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, insert, select, update

from .database import insert_ignoring_conflicts
from .entries import BATCH
from .records import FEED_STATE_FIELDS, SourceRecord
from .schema import DISCOVERED_FEEDS, SOURCES

S = SOURCES
F = DISCOVERED_FEEDS
_COLUMNS = tuple(S.c[f] for f in SourceRecord.__slots__)


def _record(row) -> SourceRecord:
    r = SourceRecord(*row)
    r.error_count, r.moved_count, r.identity = r.error_count or 0, r.moved_count or 0, r.identity or "guid"
    return r


class SourceStore:
    """Sources (a part of `Store`)."""

    engine: object

    def source_id(self, name: str, kind: str, location: str) -> int:
        """The id of a source, created on first sight; an article folder follows its configured path."""
        with self.engine.begin() as c:
            row = c.execute(select(S.c.id, S.c.kind, S.c.location).where(S.c.name == name)).first()
            if row is None:
                # Another process may create it at the same moment: ignore the conflict, read it back.
                values = {"name": name, "kind": kind, "location": location, "error_count": 0, "moved_count": 0}
                c.execute(insert_ignoring_conflicts(c, S).values(**values))
                row = c.execute(select(S.c.id, S.c.kind, S.c.location).where(S.c.name == name)).one()
            if row.kind != kind or (kind == "files" and row.location != location):
                c.execute(update(S).where(S.c.id == row.id).values(kind=kind, location=location))
            return row.id

    def feed_sources(self, urls: dict[str, str]) -> dict[str, SourceRecord]:
        """The remote sources `urls` names (name → configured URL), created on first sight. A
        source whose configured URL was edited starts afresh at the new URL."""
        names = list(urls)
        with self.engine.begin() as c:
            found = self._sources_named(c, names)
            missing = [n for n in names if n not in found]
            if missing:
                # One statement for all of them (a first fetch of 300 feeds made 600 round trips).
                # Fetch workers starting together all create the sources they see first: the
                # rows of whoever wins are read back by the others.
                c.execute(insert_ignoring_conflicts(c, S), [
                    {"name": n, "kind": "feed", "location": urls[n], "config_url": urls[n], "identity": "guid",
                     "error_count": 0, "moved_count": 0}
                    for n in missing
                ])  # fmt: skip
                found.update(self._sources_named(c, missing))
            fresh = {"etag": None, "last_modified": None, "moved_to": None, "disabled": None, "next_due": None,
                     "error_count": 0, "moved_count": 0}  # fmt: skip
            for name, url in urls.items():
                r = found[name]
                if r.kind != "feed" or r.config_url != url:
                    values = {"kind": "feed", "location": url, "config_url": url, **fresh}
                    c.execute(update(S).where(S.c.id == r.id).values(**values))
                    for k, v in values.items():
                        setattr(r, k, v)
        return {name: found[name] for name in urls}

    @staticmethod
    def _sources_named(c, names: Sequence[str]) -> dict[str, SourceRecord]:
        found: dict[str, SourceRecord] = {}
        for i in range(0, len(names), BATCH):
            rows = c.execute(select(*_COLUMNS).where(S.c.name.in_(names[i : i + BATCH])))
            found.update((r.name, r) for r in map(_record, rows))
        return found

    def save_feed_states(self, states: Sequence[dict]) -> None:
        """Several fetch outcomes in one transaction; every dict has "id" and the same fields
        (of `records.FEED_STATE_FIELDS`)."""
        if not states:
            return
        columns = [k for k in states[0] if k != "id"]
        unknown = set(columns) - FEED_STATE_FIELDS
        if unknown:
            raise ValueError(f"not a feed state field: {', '.join(sorted(unknown))}")
        q = update(S).where(S.c.id == bindparam("b_id")).values({k: bindparam(f"b_{k}") for k in columns})
        with self.engine.begin() as c:
            c.execute(q, [{"b_id": st["id"], **{f"b_{k}": st[k] for k in columns}} for st in states])

    def source_rows(self) -> list[SourceRecord]:
        """Every stored source, by name."""
        with self.engine.connect() as c:
            return [_record(r) for r in c.execute(select(*_COLUMNS).order_by(S.c.name))]

    def source_names(self) -> dict[int, str]:
        with self.engine.connect() as c:
            return dict(c.execute(select(S.c.id, S.c.name)).all())

    def due_times(self) -> dict[str, tuple[datetime | None, str | None]]:
        """Per source name: (next_due, why it is disabled)."""
        with self.engine.connect() as c:
            rows = c.execute(select(S.c.name, S.c.next_due, S.c.disabled)).all()
        return {name: (due, disabled) for name, due, disabled in rows}

    def due_time(self, name: str) -> tuple[datetime | None, str | None]:
        """(next_due, why disabled) of one source: the per-fetch read, one indexed row."""
        with self.engine.connect() as c:
            row = c.execute(select(S.c.next_due, S.c.disabled).where(S.c.name == name)).first()
        return (row[0], row[1]) if row else (None, None)

    # ---- feed discovery: the feed found on a source's page

    def save_discovery(self, source_id: int, page: str, feed: str, now: datetime) -> None:
        with self.engine.begin() as c:
            c.execute(delete(F).where(F.c.source_id == source_id))
            c.execute(insert(F).values(source_id=source_id, page=page, feed=feed, found_at=now))

    def forget_discovery(self, source_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(delete(F).where(F.c.source_id == source_id))

    def discoveries(self) -> dict[int, tuple[str, str]]:
        """source id → (page, feed found on it)."""
        with self.engine.connect() as c:
            return {sid: (page, feed) for sid, page, feed in c.execute(select(F.c.source_id, F.c.page, F.c.feed))}

    def failing_sources(self) -> dict[str, str]:
        """name → last error of every remote source whose last fetch failed (backing off) or
        that is disabled (a 410): what alerts and the back-off gauge look at."""
        q = select(S.c.name, S.c.last_error, S.c.disabled).where(
            S.c.kind == "feed", (S.c.error_count > 0) | S.c.disabled.is_not(None)
        )
        with self.engine.connect() as c:
            return {name: (disabled or error or "failing") for name, error, disabled in c.execute(q)}
