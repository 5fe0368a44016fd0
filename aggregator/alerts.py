"""Alerts: tell the operator, once, when something has gone wrong and when it is right again.

`[alerts] urls` are Apprise URLs (mail, `json://` webhooks, Telegram, …). What to send is a
pure decision over what is wrong now and what was already said: a source failing for longer
than `source_failing_after` and a failed build each raise one alert; their recovery one more;
nothing is repeated on the next cycles. The caller keeps the set of open alerts (in the store,
so a restart does not send them again) and sends the messages with `send`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta

log = logging.getLogger(__name__)

BUILD = "build"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong now: a source failing since `since`, or the last build."""

    key: str  # "source:<name>" or BUILD
    since: datetime
    detail: str  # the last error, for the message


@dataclass(frozen=True, slots=True)
class Message:
    key: str
    title: str
    body: str
    recovered: bool


def source_key(name: str) -> str:
    return f"source:{name}"


def decide(
    problems: Sequence[Problem], open_alerts: Set[str], now: datetime, failing_after: timedelta
) -> tuple[list[Message], set[str]]:
    """(messages to send, the open alerts afterwards). A source's problem is an alert once it has
    lasted `failing_after`; a build's at once. An open alert whose problem is gone recovers."""
    by_key: Mapping[str, Problem] = {p.key: p for p in problems}
    messages: list[Message] = []
    still_open = set()
    for p in problems:
        due = p.key == BUILD or now - p.since >= failing_after
        if not due:
            continue
        still_open.add(p.key)
        if p.key not in open_alerts:
            what = "The build failed" if p.key == BUILD else f"Source {p.key.split(':', 1)[1]!r} is failing"
            since = "" if p.key == BUILD else f" since {p.since.isoformat(timespec='minutes')}"
            messages.append(Message(p.key, f"aggregator: {what}", f"{what}{since}: {p.detail}", recovered=False))
    for key in sorted(open_alerts - by_key.keys()):
        what = "Builds succeed again" if key == BUILD else f"Source {key.split(':', 1)[1]!r} recovered"
        messages.append(Message(key, f"aggregator: {what}", what + ".", recovered=True))
    # An alert stays open while its problem lasts, even if it fell under the threshold again
    # (a source whose first error was recent after a restart of its count).
    still_open |= {k for k in open_alerts if k in by_key}
    return messages, still_open


def send(urls: Sequence[str], messages: Sequence[Message]) -> list[str]:
    """Send `messages` to every URL with Apprise; returns the keys whose message went out (to at
    least one URL). A failing target is logged, never raised: alerting must not stop a cycle."""
    if not urls or not messages:
        return []
    import apprise

    target = apprise.Apprise()
    for url in urls:
        if not target.add(url):
            log.error("alerts: not an Apprise URL: %s", _redact(url))
    sent = []
    for m in messages:
        try:
            ok = target.notify(title=m.title, body=m.body)
        except Exception as e:  # a plugin's bug is a failed send, not a failed cycle
            log.error("alerts: sending %r failed: %s", m.title, e)
            ok = False
        if ok:
            sent.append(m.key)
        else:
            log.error("alerts: %r was not delivered", m.title)
    return sent


def _redact(url: str) -> str:
    """An Apprise URL without its credentials, for logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}…@{rest.split('@', 1)[1]}" if "@" in rest else url
