"""Which identity each parsed feed item gets: its GUID, its link, or a hash of title and date.

Decided per source after parsing (`choose_identity`), because it depends on what the store
already holds for the source; `assign_keys` then sets every entry's key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..model import Entry

if TYPE_CHECKING:
    from .feeds import ParsedItem


@dataclass(frozen=True, slots=True)
class IdentityDecision:
    mode: str  # "guid" or "link"
    reason: str | None  # why the source uses link identity


def choose_identity(
    items: Sequence[ParsedItem], mode: str, reason: str | None, stored: Mapping[str, str]
) -> IdentityDecision:
    """Per-source GUID policy. A source starts with guid identity and falls back to links, for
    good, when its GUIDs cannot be trusted: most are missing, one is repeated for different
    links within the document, or items seen before come back under a new GUID.

    `stored` maps each stored entry's link to its key."""
    if mode == "link":
        return IdentityDecision("link", reason)
    linked = [i for i in items if i.link]
    if not linked:
        return IdentityDecision("guid", None)
    missing = sum(1 for i in linked if not i.guid)
    if missing * 2 > len(linked):
        return IdentityDecision("link", f"{missing} of {len(linked)} items have no GUID")
    seen: dict[str, str] = {}
    for i in linked:
        if i.guid:
            other = seen.setdefault(i.guid, i.link or "")
            if other != i.link:
                return IdentityDecision("link", f"GUID {i.guid!r} is repeated within the feed for different links")
    matched = [i for i in linked if i.guid and i.link in stored]
    changed = [i for i in matched if stored[i.link or ""] != f"guid:{i.guid}"]
    if len(changed) >= 2 and len(changed) * 2 >= len(matched):
        return IdentityDecision(
            "link",
            f"GUIDs change between fetches ({len(changed)} of {len(matched)} known links came back with a new GUID)",
        )
    return IdentityDecision("guid", None)


def item_key(item: ParsedItem, mode: str) -> str:
    if mode == "link" and item.link:
        return f"link:{item.link}"
    if item.guid:
        return f"guid:{item.guid}"
    if item.link:
        return f"link:{item.link}"
    return f"hash:{item.fallback}"


def assign_keys(items: Sequence[ParsedItem], mode: str) -> list[Entry]:
    """Entries with their identity set; a repeated identity within one document keeps the first."""
    out: dict[str, Entry] = {}
    for i in items:
        key = item_key(i, mode)
        if key not in out:
            out[key] = i.entry.with_key(key)
    return list(out.values())
