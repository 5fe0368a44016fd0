"""WebSub publisher pings: tell the hub which feed URLs changed, so subscribers get a push.

A hub that is down or slow must never fail a build: every failure is logged and counted,
and the feeds stay published (subscribers still poll them).
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from .. import __version__

log = logging.getLogger(__name__)
USER_AGENT = f"aggregator/{__version__} (WebSub publisher)"


def ping_one(hub: str, url: str, timeout: float) -> bool:
    """POST hub.mode=publish&hub.url=<url> to the hub. True when the hub accepted it (2xx)."""
    body = urllib.parse.urlencode({"hub.mode": "publish", "hub.url": url}).encode()
    request = urllib.request.Request(
        hub,
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(65536)
            return 200 <= response.status < 300
    except urllib.error.HTTPError as e:
        log.warning("websub hub %s refused the ping for %s: HTTP %s %s", hub, url, e.code, e.reason)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        log.warning("websub hub %s unreachable for %s: %s", hub, url, reason)
    return False


def ping(hub: str, urls: Sequence[str], timeout: float = 10.0) -> int:
    """Ping the hub for every URL (a few at a time); returns how many pings it accepted."""
    if not urls:
        return 0
    with ThreadPoolExecutor(max_workers=min(4, len(urls))) as pool:
        accepted = sum(pool.map(lambda u: ping_one(hub, u, timeout), urls))
    log.info("websub: %d of %d pings accepted by %s", accepted, len(urls), hub)
    return accepted
