"""The daemon's small named records in `daemon_state`: its last cycle (for `aggregator status`)
and, on a server database, the writer lease (holder, expiry, who it is)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .schema import DAEMON_STATE

LAST_CYCLE = "last_cycle"
ALERTS = "alerts"  # the open alerts and when each source began failing (`ops`)
# What the published files were last built from (`publish.stamp`); cleared before anything that
# changes them, so a cycle finding it unchanged (and nothing new stored) need not build.
PUBLISHED = "published"
D = DAEMON_STATE


def lease_free(expires_at: datetime | None, holder: str | None, me: str, now: datetime) -> bool:
    """May `me` take (or keep) the lease? Free when nobody holds it, it is ours, or it lapsed."""
    return holder is None or holder == me or expires_at is None or expires_at <= now


class DaemonStore:
    """The daemon's records (a part of `Store`)."""

    engine: object

    def record_cycle(self, values: dict[str, Any]) -> None:
        text = json.dumps(values, default=str)
        with self.engine.begin() as c:
            put_value(c, LAST_CYCLE, text)

    def last_cycle(self) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            value = c.execute(select(D.c.value).where(D.c.name == LAST_CYCLE)).scalar()
        return json.loads(value) if value else None

    def alert_state(self) -> dict[str, Any]:
        """{"open": [alert keys already sent], "failing": {source name: ISO time it began failing},
        "build": the last build's error or None}."""
        with self.engine.connect() as c:
            value = c.execute(select(D.c.value).where(D.c.name == ALERTS)).scalar()
        state = json.loads(value) if value else {}
        return {
            "open": list(state.get("open", [])),
            "failing": dict(state.get("failing", {})),
            "build": state.get("build"),
        }

    def published_stamp(self) -> str | None:
        """The stamp of the last build that finished with nothing changed since; None when a
        change (or a build that did not finish) came after it."""
        with self.engine.connect() as c:
            return c.execute(select(D.c.value).where(D.c.name == PUBLISHED)).scalar()

    def set_published_stamp(self, stamp: str | None) -> None:
        with self.engine.begin() as c:
            put_value(c, PUBLISHED, stamp)

    def save_alert_state(self, state: dict[str, Any]) -> None:
        text = json.dumps(state, sort_keys=True)
        with self.engine.begin() as c:
            put_value(c, ALERTS, text)

    # ---- the writer lease (server databases)

    def take_lease(self, name: str, token: str, info: str, now: datetime, expires: datetime) -> bool:
        """Take the lease `name` for `token` until `expires` if it is free; False if another holds it."""
        with self.engine.begin() as c:
            row = c.execute(select(D.c.holder, D.c.expires_at).where(D.c.name == name)).first()
            if row is None:
                try:
                    c.execute(insert(D).values(name=name, holder=token, expires_at=expires, value=info))
                except IntegrityError:  # someone inserted it at the same moment: theirs
                    return False
                return True
            if not lease_free(row.expires_at, row.holder, token, now):
                return False
            # Compare-and-set on what we read, so two contenders cannot both win a lapsed lease.
            same = D.c.holder.is_(None) if row.holder is None else D.c.holder == row.holder
            done = c.execute(
                update(D).where(D.c.name == name, same).values(holder=token, expires_at=expires, value=info)
            )
            return done.rowcount == 1

    def renew_lease(self, name: str, token: str, expires: datetime) -> bool:
        """Push the expiry forward; False if the lease is no longer `token`'s."""
        with self.engine.begin() as c:
            done = c.execute(update(D).where(D.c.name == name, D.c.holder == token).values(expires_at=expires))
        return done.rowcount == 1

    def release_lease(self, name: str, token: str) -> None:
        with self.engine.begin() as c:
            c.execute(delete(D).where(D.c.name == name, D.c.holder == token))

    def lease(self, name: str) -> tuple[str | None, datetime | None, str | None] | None:
        """(holder, expiry, info) of the lease, None when nobody ever took it."""
        with self.engine.connect() as c:
            row = c.execute(select(D.c.holder, D.c.expires_at, D.c.value).where(D.c.name == name)).first()
        return tuple(row) if row else None


def put_value(c, name: str, value: str | None) -> None:
    """Set the named record's value (None clears it), within the connection's transaction."""
    if not c.execute(update(D).where(D.c.name == name).values(value=value)).rowcount:
        c.execute(insert(D).values(name=name, value=value))
