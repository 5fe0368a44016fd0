"""The block and keep rules over the store: which entries they hide.

A hidden entry stays stored with the reason (`entries.hidden`), so changing the rules needs no
refetch: the verdicts are made on the entry as stored, for the entries that are new or changed,
and for every entry once when the block and keep rules themselves changed (their fingerprint,
`rules.fingerprint`, is stored beside the verdicts). Entries whose verdict changed go to dedup
(a hidden entry leaves its cluster) and publishing, like changed ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from .rules import VERDICTS, Rule, compile_rules, fingerprint, verdict
from .store import RuleSubject, Store

log = logging.getLogger(__name__)


def changed_verdicts(rules: Sequence[Rule], subjects: Iterable[RuleSubject]) -> dict[int, str | None]:
    """Per entry whose verdict differs from the stored one: the new one (None: shown). Pure."""
    out: dict[int, str | None] = {}
    for s in subjects:
        why = verdict(rules, s.entry)
        if why != s.hidden:
            out[s.id] = why
    return out


def judge(store: Store, settings, touched: Sequence[int]) -> list[int]:
    """Store the verdicts that are due; the ids whose verdict changed."""
    started = time.monotonic()
    rules = tuple(r for r in compile_rules(settings.rules) if r.action in VERDICTS)
    now = fingerprint(settings.rules)
    before = store.rules_fingerprint()
    if before == now and not rules:
        return []  # the last pass, under no rules, left nothing hidden
    if before is None and not rules:
        store.set_hidden({}, now)  # a store that never had rules has nothing hidden
        return []
    everything = before != now
    ids = store.entries_to_judge(touched, everything, pending=settings.dedup.enabled)
    looks_at_content = any(f == "content" for r in rules for f, _ in r.when)
    changes = changed_verdicts(rules, store.rule_subjects(ids, looks_at_content))
    store.set_hidden(changes, now if everything else None)
    if changes or everything:
        hidden = sum(1 for why in changes.values() if why)
        log.info("rules: %d entries judged, %d newly hidden, %d shown again; %.2f s",
                 len(ids), hidden, len(changes) - hidden, time.monotonic() - started)  # fmt: skip
    return sorted(changes)
