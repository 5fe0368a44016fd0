"""Fetch workers share the remote sources through their rows: a worker claims a few due
sources at a time by writing its name and a lease expiry into them, fetches them, records
their new state (which moves `next_due` on) and then clears its claim.

On PostgreSQL the claim is `SELECT … FOR UPDATE SKIP LOCKED` inside an `UPDATE`, so workers
claiming at the same moment take different rows and never wait on each other. A worker that
dies leaves its claims behind; they lapse at their expiry and the sources are claimed again.
A live worker renews its claims' expiry well before it passes.

`claimable` is the rule; the claim's SQL states the same rule, and the tests hold the two together.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import and_, bindparam, func, or_, select, update

from .schema import SOURCES

S = SOURCES


def lease_lapsed(expires: datetime | None, now: datetime) -> bool:
    """Is a claim with this expiry over (or was there none)?"""
    return expires is None or expires <= now


def claimable(next_due: datetime | None, disabled: str | None, lease_expires: datetime | None, now: datetime) -> bool:
    """May a worker claim this remote source now? When it is enabled, due (never fetched, or
    its next fetch time has come) and nobody's claim on it is still running."""
    return disabled is None and (next_due is None or next_due <= now) and lease_lapsed(lease_expires, now)


def _claimable_sql(now):
    return and_(
        S.c.kind == "feed",
        S.c.disabled.is_(None),
        or_(S.c.next_due.is_(None), S.c.next_due <= now),
        or_(S.c.lease_expires.is_(None), S.c.lease_expires <= now),
    )


class LeaseStore:
    """Claims on remote sources (a part of `Store`)."""

    engine: object

    def claim_sources(self, names: Iterable[str], holder: str, now: datetime, until: datetime, most: int) -> list[str]:
        """Claim up to `most` claimable sources among `names` for `holder` until `until`, the
        longest-due first; their names. Sources another transaction is claiming are skipped."""
        names = list(names)
        if not names or most < 1:
            return []
        pick = (
            select(S.c.id)
            .where(_claimable_sql(now), S.c.name.in_(bindparam("names", expanding=True)))
            .order_by(S.c.next_due.asc().nulls_first(), S.c.id)
            .limit(most)
            .with_for_update(skip_locked=True)
        )
        q = update(S).where(S.c.id.in_(pick.scalar_subquery())).values(lease_holder=holder, lease_expires=until)
        with self.engine.begin() as c:
            return list(c.scalars(q.returning(S.c.name), {"names": names}))

    def renew_claims(self, holder: str, until: datetime) -> int:
        """Push the expiry of every claim `holder` still has; how many it has."""
        with self.engine.begin() as c:
            return c.execute(update(S).where(S.c.lease_holder == holder).values(lease_expires=until)).rowcount

    def release_claims(self, holder: str, names: Iterable[str] | None = None) -> None:
        """Clear `holder`'s claims (on `names` only, when given); another's are left alone."""
        q = update(S).where(S.c.lease_holder == holder).values(lease_holder=None, lease_expires=None)
        if names is not None:
            names = list(names)
            if not names:
                return
            q = q.where(S.c.name.in_(names))
        with self.engine.begin() as c:
            c.execute(q)

    def next_claimable(self, names: Iterable[str], now: datetime) -> datetime | None:
        """The earliest moment one of `names` may become claimable (`now` if one is already):
        its next fetch time, or the end of another worker's claim. None when none ever will
        (all disabled, or none stored)."""
        names = list(names)
        if not names:
            return None
        mine = and_(S.c.kind == "feed", S.c.disabled.is_(None), S.c.name.in_(bindparam("names", expanding=True)))
        free = or_(S.c.lease_expires.is_(None), S.c.lease_expires <= now)
        q = select(
            select(func.count()).where(mine, free).scalar_subquery(),
            select(func.count(S.c.next_due)).where(mine, free).scalar_subquery(),
            select(func.min(S.c.next_due)).where(mine, free).scalar_subquery(),
            select(func.min(S.c.lease_expires)).where(mine, S.c.lease_expires > now).scalar_subquery(),
        )
        with self.engine.connect() as c:
            free_n, dated_n, due, lease_end = c.execute(q, {"names": names}).one()
        if free_n > dated_n:  # a free source never fetched: due now
            return now
        found = [_as_utc(d) for d in (due, lease_end) if d is not None]
        return min(found) if found else None

    def claims(self) -> dict[str, tuple[str, datetime]]:
        """name → (holder, expiry) of every claimed source: for `status` and the tests."""
        q = select(S.c.name, S.c.lease_holder, S.c.lease_expires).where(S.c.lease_holder.is_not(None))
        with self.engine.connect() as c:
            return {name: (holder, until) for name, holder, until in c.execute(q)}


def _as_utc(value: datetime | str) -> datetime:
    """An aggregate's datetime: SQLite hands it back as text, without its column's type."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
