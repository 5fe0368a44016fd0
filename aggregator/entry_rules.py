"""What storing a new version of an entry decides, as pure functions of dates and versions.

The store applies these; they are tested without a database.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .model import FileStamp

# A post dated this far ahead is taken to be in the future (clocks disagree by less).
FUTURE_TOLERANCE = timedelta(hours=1)

NEW, UNCHANGED, TOUCHED, CHANGED = "new", "unchanged", "touched", "changed"


def classify(version: str, old_version: str | None, old_withdrawn: bool, stamp: FileStamp | None,
             old_stamp: tuple[int | None, int | None]) -> str:  # fmt: skip
    """NEW (not stored), CHANGED (another version, or back after being withdrawn), TOUCHED (same
    content, but the file's stamp moved: remember it so the next scan skips the file unread),
    or UNCHANGED."""
    if old_version is None:
        return NEW
    if old_version != version or old_withdrawn:
        return CHANGED
    if stamp and (stamp.mtime_ns, stamp.size) != old_stamp:
        return TOUCHED
    return UNCHANGED


def first_sort_date(published: datetime | None, now: datetime) -> datetime:
    """Where a new entry sorts: its date, or now when it has none or is dated in the future
    (a post dated next year must not sit at the top of every feed until then)."""
    when = published or now
    return now if when > now + FUTURE_TOLERANCE else when


def changed_sort_date(published: datetime | None, now: datetime) -> datetime | None:
    """Where a changed entry sorts: its date if it has a plausible one; None keeps its place
    (an undated or future-dated entry keeps the place its first-seen time gave it: an edit
    must not pin it to the top)."""
    if published is not None and published <= now + FUTURE_TOLERANCE:
        return published
    return None


def changed_updated(published: datetime | None, updated: datetime | None, version_changed: bool,
                    now: datetime) -> datetime | None:  # fmt: skip
    """The `updated` time of a changed entry. A source that says when is believed; a file that
    changed without saying when is news as of now (for an undated entry too: its updated time
    moves, its place does not), unless it is dated in the future."""
    if updated is None and version_changed:
        return now if published is None or now > published else None
    return updated
