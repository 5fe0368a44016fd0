"""Dates as article files write them: what YAML parsed, RFC 822, ISO 8601 with or without an
offset, `2022-02-16 20:47:24 +0800`, date-only values, and a Jekyll file name's date. Pure."""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo


class DateError(ValueError):
    """The value is no date this module understands; the message says why."""


def local_date(value: object, zone: ZoneInfo) -> datetime | None:
    """A front-matter date → aware datetime in its own offset; naive values are in `zone`.

    Accepts what YAML already parsed (datetime, date), RFC 822 (`Fri, 02 Sep 2022 20:08:00 GMT`),
    ISO 8601 with or without offset, `2022-02-16 20:47:24 +0800`, and date-only values.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        dt = _parse_date_text(value.strip()[:100])
    else:
        raise DateError(f"date: expected a date, got {type(value).__name__} {str(value)[:80]!r}")
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=zone)


def parse_date(value: object, zone: ZoneInfo) -> datetime | None:
    """`local_date` in UTC."""
    dt = local_date(value, zone)
    return dt.astimezone(UTC) if dt is not None else None


_RFC822 = re.compile(r"^(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{4}\s")


def _parse_date_text(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    if _RFC822.match(text):
        try:
            return email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            pass
    from dateutil import parser

    try:
        return parser.parse(text)
    except (ValueError, OverflowError):
        raise DateError(f"date: cannot understand {text!r}") from None




_FILENAME_DATE = re.compile(r"(?:^|/)(\d{4})-(\d{2})-(\d{2})-[^/]*$")


def date_from_filename(path: str, zone: ZoneInfo) -> datetime | None:
    """Jekyll names posts `2022-02-16-title.md`: the date, in the local zone."""
    m = _FILENAME_DATE.search(path)
    if not m:
        return None
    try:
        return datetime(*map(int, m.groups()), tzinfo=zone)
    except ValueError:
        return None
