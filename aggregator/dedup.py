"""The dedup stage: every story once, across files, feeds and outlets.

It decides the entries that are new, changed, withdrawn or pending (and the members of their
clusters), best-ranked first, RUN_BATCH at a time: features computed for versions that have
none (`features`), candidates found through the key index, each entry joined to its surest
match or left alone (`clustering.decide`), the decision stored. Duplicates are linked to a
canonical entry, never deleted. All of it in one transaction (`Store.dedup_transaction`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import clustering
from .config import DedupSettings
from .features import features, tracking_patterns
from .model import Cluster, ClusterEntry
from .store import DedupTransaction, FeatureUpdate, Store

log = logging.getLogger(__name__)

RUN_BATCH = 1000  # entries decided per step of a run: bounds memory on a cold start


@dataclass(slots=True)
class DedupReport:
    examined: int = 0  # entries whose cluster was (re)decided
    computed: int = 0  # entries whose features were (re)computed
    duplicates: int = 0  # entries this run left linked to a canonical entry (those it demoted included)
    promoted: int = 0  # members that became canonical because theirs left
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        by = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        return f"dedup: {self.examined} examined, {self.duplicates} duplicates" + (f" ({by})" if by else "")


def _chunks(seq: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def run(store: Store, settings, touched_ids: Iterable[int] = (), batch: int = RUN_BATCH) -> DedupReport:
    """Cluster new, changed and withdrawn entries (plus any left pending by an earlier run).

    Members of a cluster whose canonical entry is touched are re-evaluated too, so a withdrawn
    or changed canonical entry hands its place to the next member. `batch`: entries decided per
    step, each step with its own indexed lookups."""
    from .runtime import paused_gc

    with paused_gc():
        return _run(store, settings, touched_ids, batch)


def _run(store: Store, settings, touched_ids: Iterable[int], batch_size: int) -> DedupReport:
    started = time.monotonic()
    cfg: DedupSettings = settings.dedup
    priority = list(cfg.source_priority)
    patterns = tracking_patterns(cfg.tracking_params)
    report = DedupReport()
    feat_digest, decision_digest = clustering.settings_digest(cfg)
    with store.dedup_transaction() as tx:
        state = tx.state()
        # Features stored under other settings are recomputed. (With no digest stored yet, the
        # only features stored are the ones the ingest computed with these settings.)
        recompute_all = state.get("features") not in (None, feat_digest)
        if recompute_all:
            tx.forget_features()
        ids = tx.to_decide(set(touched_ids), everything=state.get("decisions") != decision_digest)
        later = set(ids)
        affected: set[int] = set()  # canonical entries, old and new, whose borrowed categories may change
        final: dict[int, str | None] = {}  # decided entry → its duplicate reason, None when shown
        for batch in _chunks(clustering.ranked(tx.rank_inputs(ids), priority), batch_size):
            later.difference_update(batch)
            items: dict[int, ClusterEntry] = {}
            report.computed += _compute(tx, batch, patterns, items, keys_stored=not recompute_all)
            candidates = _candidates(tx, items, later, cfg.near_threshold)
            items |= tx.load({i for cs in candidates.values() for i in cs} - items.keys())
            items |= tx.load({it.canonical_id for it in items.values() if it.canonical_id} - items.keys())
            before = {i: (it.canonical_id, it.dup_reason, it.dup_score) for i, it in items.items()}
            decision = clustering.decide(items, batch, candidates, cfg.near_threshold, priority, later)
            # An entry left in the cluster it was in only has its pending flag cleared.
            moved, same = [], []
            for i in sorted(decision.changed):
                it = items[i]
                if before.get(i) == (it.canonical_id, it.dup_reason, it.dup_score):
                    same.append(i)
                else:
                    moved.append(it)
            tx.write(moved, same, decision.repoints)
            affected |= decision.changed | {before[i][0] for i in batch if before[i][0]}
            affected |= {items[i].canonical_id for i in decision.changed if items[i].canonical_id}
            affected |= {i for pair in decision.repoints for i in pair}
            report.examined += len(batch)
            report.promoted += sum(1 for old, _ in decision.repoints if old in ids)
            # Counted as things stand at the end (a later batch may demote an entry of this one),
            # demoted ones included: a newer version that takes its page's place hides the older.
            for i in decision.changed:
                it = items[i]
                final[i] = it.dup_reason if it.canonical_id and not it.withdrawn else None
        report.reasons.update(r for r in final.values() if r)
        report.duplicates = sum(report.reasons.values())
        tx.sync_categories(affected)
        if ids:  # the ingest or this run may have added index keys
            tx.settle_keys()
        updates = {"features": feat_digest, "decisions": decision_digest}
        tx.save_state({k: v for k, v in updates.items() if state.get(k) != v})
    report.seconds = time.monotonic() - started
    log.info("%s; %d features computed; %.2f s", report.summary(), report.computed, report.seconds)
    return report


def _compute(tx: DedupTransaction, ids: Sequence[int], patterns: Sequence[str], items: dict[int, ClusterEntry],
             keys_stored: bool) -> int:  # fmt: skip
    """Load the entries to decide, computing features for those whose current version has none
    (once per version: an unchanged entry that is re-decided reuses its stored features).
    `keys_stored`: whether their old index keys may still be stored, to delete."""
    computed = 0
    for chunk in _chunks(ids, 400):
        loaded, stale = tx.load_with_versions(chunk)
        items |= loaded
        if not stale:
            continue
        # The content only for those: usually the ingest computed the features already, and
        # reading every entry's body back would cost more than the rest of the stage.
        fresh: list[FeatureUpdate] = []
        for i, link, content in tx.contents(stale):
            it = items[i]
            f = features(link, content, patterns)
            it.url_key, it.fingerprint, it.text_chars = f.url_key, f.fingerprint, f.text_chars
            it.signature, it.keys, it.fresh = f.signature, f.keys, True
            fresh.append(FeatureUpdate(i, stale[i], f))
        computed += len(fresh)
        tx.save_features(fresh, keys_stored)
    return computed


def _candidates(tx: DedupTransaction, items: dict[int, ClusterEntry], later: set[int],
                near_threshold: float) -> dict[int, list[int]]:  # fmt: skip
    """Per entry to decide, the ids the key index offers (see `clustering.offered`), the
    band-only ones kept when their signature can reach `near_threshold`."""
    # The lookup finds the entries of this batch too (`shared` adds the probe's own holders);
    # keys of features computed in this run are stored after it.
    keys = clustering.index_keys(items)
    found = tx.shared_keys([(k, i) for i, ks in keys.items() if not items[i].withdrawn for k in ks])
    tx.insert_keys([(k, i) for i, ks in keys.items() if items[i].fresh for k in ks])
    exact, by_band = clustering.offered(found, items, later)
    # Their signatures alone (not whole entries) are read to drop those below the threshold.
    wanted = set().union(*by_band.values())
    signatures = {j: items[j].signature for j in wanted if j in items}
    signatures |= tx.signatures(wanted - signatures.keys())
    return clustering.with_near(exact, by_band, items, signatures, near_threshold)


def disable(store: Store) -> None:
    """`[dedup] enabled = false`: show every entry again, and forget the settings digest so that
    enabling it later re-clusters everything."""
    store.undo_clusters()


def clusters(store: Store) -> list[Cluster]:
    """Every cluster with visible duplicates: the canonical entry and its members, newest first."""
    return store.clusters()
