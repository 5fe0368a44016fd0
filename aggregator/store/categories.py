"""Categories: created on first sight with a unique slug, remembered by which source brought
them in (`[limits] new_categories_per_day`), counted over the visible entries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.engine import Connection

from ..text import slugify
from .database import insert_ignoring_conflicts
from .entries import BATCH, through_index
from .records import CategoryCount, CategoryRef
from .schema import CATEGORIES, CATEGORY_ORIGINS, VISIBLE_CONDITION

_SLUG_ROUNDS = 5  # a slug lost to a concurrent writer is chosen again, this many times at most
RESERVED_SLUGS = frozenset({"all", "a", "archive", "static", "index"})


def unique_slug(name: str, taken: set[str]) -> str:
    """A slug for `name` not in `taken`: the pinyin/word slug, else one with a short hash of
    the name appended, so the same name always gets the same fallback."""
    base = slugify(name) or "category"
    digest = hashlib.sha1(name.encode()).hexdigest()
    candidates = [base] if base not in RESERVED_SLUGS else []
    candidates += [f"{base}-{digest[:n]}" for n in (6, 10, 40)]
    for c in candidates:
        if c not in taken:
            return c
    raise ValueError(f"cannot find a free slug for category {name!r}")


def _as_utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_BY_NAME = select(CATEGORIES.c.name, CATEGORIES.c.id).where(CATEGORIES.c.name.in_(bindparam("names", expanding=True)))


def _existing(s, names: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    ordered = sorted(names)
    for i in range(0, len(ordered), BATCH):
        found.update(s.execute(_BY_NAME, {"names": ordered[i : i + BATCH]}).all())
    return found


class CategoryStore:
    """Categories (a part of `Store`)."""

    engine: object

    @staticmethod
    def _category_ids(s: Connection, names: set[str], source_id: int, now: datetime) -> dict[str, int]:
        """The ids of `names`, creating the missing ones (in the caller's transaction)."""
        if not names:
            return {}
        found = _existing(s, names)
        created: list[str] = []
        # Another writer may create the same categories meanwhile (the daemon's fetch jobs run
        # side by side, fetch workers on other machines too): insert ignoring conflicts, then
        # read back. A name whose slug was taken by a different name meanwhile goes round again
        # with the taken slugs re-read.
        for _ in range(_SLUG_ROUNDS):
            missing = sorted(names - found.keys())
            if not missing:
                break
            taken = set(s.scalars(select(CATEGORIES.c.slug)))
            table = CATEGORIES
            # RETURNING says whether this insert made the row (rowcount is not reliable here with psycopg).
            q = insert_ignoring_conflicts(s, table).returning(table.c.id)
            for name in missing:
                slug = unique_slug(name, taken)
                taken.add(slug)
                if s.execute(q.values(name=name, slug=slug)).scalar() is not None:
                    created.append(name)
            found.update(_existing(s, set(missing)))
        if names - found.keys():
            raise RuntimeError(f"cannot create categories {sorted(names - found.keys())!r}: their slugs stay taken")
        if created:
            s.execute(
                insert(CATEGORY_ORIGINS),
                [{"category_id": found[n], "source_id": source_id, "created_at": now} for n in created],
            )
        return found

    def existing_categories(self, names: set[str]) -> set[str]:
        """Which of `names` are stored categories."""
        if not names:
            return set()
        with self.engine.connect() as c:
            return set(_existing(c, names))

    def categories_created_since(self, source_id: int, since: datetime) -> int:
        """How many categories entries of this source created after `since`."""
        q = select(func.count()).where(CATEGORY_ORIGINS.c.source_id == source_id, CATEGORY_ORIGINS.c.created_at > since)
        with self.engine.connect() as c:
            return c.scalar(q) or 0

    def categories(self) -> list[CategoryRef]:
        """Every category, by slug."""
        t = CATEGORIES
        with self.engine.connect() as c:
            return [CategoryRef(*r) for r in c.execute(select(t.c.id, t.c.name, t.c.slug).order_by(t.c.slug))]

    def category_counts(self) -> dict[int, CategoryCount]:
        """Per category id: its visible entries and the newest one's date."""
        # Through `ix_entries_visible`: a probe of an index per pairing, not a read of the entry's row.
        sql = (
            "SELECT ec.category_id, count(*), max(entries.sort_date) FROM entry_categories AS ec "
            f"JOIN {through_index(self.engine, 'entries', 'ix_entries_visible')} ON entries.id = ec.entry_id "
            f"WHERE {VISIBLE_CONDITION} GROUP BY ec.category_id"
        )
        with self.engine.connect() as c:
            rows = c.exec_driver_sql(sql).all()
        # SQLite hands back aggregate datetimes as text; normalise through the column type.
        return {cid: CategoryCount(n, _as_utc(newest)) for cid, n, newest in rows}
