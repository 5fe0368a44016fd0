"""Duplicate clusters: what the dedup stage reads and writes, in one transaction per run.

Each entry has a `canonical_id` (NULL: it is shown), a reason and a score; its features
(canonical URL, digests, MinHash) are stored once per version, with their keys in the dedup
key index (`keyindex`). A canonical entry also carries, in `entry_categories`, the categories
of its hidden duplicates (recorded in `dedup_categories`, so they can be taken back).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, insert, select, true, update
from sqlalchemy.engine import Connection

from ..model import Cluster, ClusterEntry, ClusterMember, Features
from . import keyindex
from .entries import delete_keys
from .schema import DEDUP_CATEGORIES, DEDUP_STATE, ENTRIES, ENTRY_CATEGORIES, SOURCES

E = ENTRIES
CHUNK = 400  # ids per IN (...) list


def _chunks(seq: Sequence, n: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


_ITEM_COLUMNS = ("id", "source_id", "key", "title", "published", "updated", "first_seen", "url_key", "fingerprint",
                 "text_chars", "minhash", "withdrawn_at", "hidden", "canonical_id", "dup_reason",
                 "dup_score")  # fmt: skip


def _item(row, sources: dict[int, str]) -> ClusterEntry:
    return ClusterEntry(
        id=row.id,
        source=sources.get(row.source_id, ""),
        key=row.key,
        title=row.title,
        published=row.published,
        updated=row.updated,
        first_seen=row.first_seen,
        url_key=row.url_key,
        fingerprint=row.fingerprint,
        text_chars=row.text_chars or 0,
        signature=row.minhash,
        # A rule's hidden entry leaves its cluster like a withdrawn one: it is no one's canonical
        # entry and no one's "also reported by".
        withdrawn=row.withdrawn_at is not None or row.hidden is not None,
        canonical_id=row.canonical_id,
        dup_reason=row.dup_reason,
        dup_score=row.dup_score,
    )


@dataclass(frozen=True, slots=True)
class FeatureUpdate:
    """New features of one entry version, computed by the dedup stage."""

    id: int
    version: str
    features: Features


class DedupTransaction:
    """The reads and writes of one dedup run, all in one transaction: readers see the clusters
    before or after, never half-way."""

    def __init__(self, c: Connection, shape: keyindex.Shape):
        self.c = c
        self.shape = shape
        self.sources = dict(c.execute(select(SOURCES.c.id, SOURCES.c.name)).all())

    # ---- the stage's memory

    def state(self) -> dict[str, str]:
        return dict(self.c.execute(select(DEDUP_STATE.c.name, DEDUP_STATE.c.value)).all())

    def save_state(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self.c.execute(delete(DEDUP_STATE).where(DEDUP_STATE.c.name == name))
            self.c.execute(insert(DEDUP_STATE).values(name=name, value=value))

    def forget_features(self) -> None:
        """Every stored feature is stale (the settings that made them changed): recomputed on
        the next look. Their index keys go with them, all at once: the ones stored may have been
        made by another version, which `delete_keys` (recomputing them) would not find."""
        self.c.execute(update(E).values(dedup_version=None))
        keyindex.clear(self.c)

    # ---- which entries to decide

    def to_decide(self, ids: set[int], everything: bool) -> set[int]:
        """Touched, pending, orphans of a deleted canonical entry (the foreign key set their
        canonical_id NULL but left dup_reason), every member of the clusters of those, and with
        `everything` (after a settings change) all entries."""
        c = self.c
        if everything:
            ids.update(c.scalars(select(E.c.id)))
            return ids
        # `= true`, not `IS true`: PostgreSQL answers only the former from an index.
        ids.update(c.scalars(select(E.c.id).where(E.c.dedup_pending == true())))
        ids.update(c.scalars(select(E.c.id).where(E.c.canonical_id.is_(None), E.c.dup_reason.is_not(None))))
        frontier = list(ids)
        while frontier:
            found: list[int] = []
            for chunk in _chunks(frontier):
                found += [i for i in c.scalars(select(E.c.id).where(E.c.canonical_id.in_(chunk))) if i not in ids]
            ids.update(found)
            frontier = found
        return ids

    def rank_inputs(self, ids: set[int]) -> list[ClusterEntry]:
        """The entries of `ids` with only what the canonical-choice rule looks at."""
        cols = (E.c.id, E.c.source_id, E.c.published, E.c.updated, E.c.first_seen, E.c.key)
        out = []
        for chunk in _chunks(sorted(ids)):
            for i, sid, published, updated, first_seen, key in self.c.execute(select(*cols).where(E.c.id.in_(chunk))):
                out.append(ClusterEntry(i, self.sources.get(sid, ""), "", published, updated, first_seen, key=key))
        return out

    # ---- loading entries and their features

    def load(self, ids: Iterable[int]) -> dict[int, ClusterEntry]:
        out: dict[int, ClusterEntry] = {}
        for chunk in _chunks(sorted(ids)):
            for row in self.c.execute(select(*(E.c[n] for n in _ITEM_COLUMNS)).where(E.c.id.in_(chunk))):
                out[row.id] = _item(row, self.sources)
        return out

    def load_with_versions(self, ids: Sequence[int]) -> tuple[dict[int, ClusterEntry], dict[int, str]]:
        """The entries, and id → version of those whose stored features are not of their
        current version (they need computing)."""
        items: dict[int, ClusterEntry] = {}
        stale: dict[int, str] = {}
        q = select(*(E.c[n] for n in _ITEM_COLUMNS), E.c.version, E.c.dedup_version).where(E.c.id.in_(ids))
        for row in self.c.execute(q):
            items[row.id] = _item(row, self.sources)
            if row.dedup_version != row.version:
                stale[row.id] = row.version
        return items, stale

    def contents(self, ids: Iterable[int]) -> list[tuple[int, str | None, str]]:
        """(id, link, content) of these entries: what features are computed from."""
        return [tuple(r) for r in self.c.execute(select(E.c.id, E.c.link, E.c.content).where(E.c.id.in_(sorted(ids))))]

    def save_features(self, updates: Sequence[FeatureUpdate], keys_stored: bool) -> None:
        """Store new features. `keys_stored`: whether the old ones' index keys may still be
        stored, to delete first (while the old features they are computed from are stored).
        The new keys are stored by the caller (`insert_keys`), just before the batch's lookups.
        A new version's categories were rewritten by the store: none is borrowed any more."""
        if not updates:
            return
        ids = [u.id for u in updates]
        if keys_stored:
            delete_keys(self.c, ids)
        rows = [
            {"b_id": u.id, "cu": u.features.canonical_url, "uk": u.features.url_key, "fp": u.features.fingerprint,
             "tc": u.features.text_chars, "mh": u.features.signature, "dv": u.version}
            for u in updates
        ]  # fmt: skip
        self.c.execute(
            update(E)
            .where(E.c.id == bindparam("b_id"))
            .values(canonical_url=bindparam("cu"), url_key=bindparam("uk"), fingerprint=bindparam("fp"))
            .values(text_chars=bindparam("tc"), minhash=bindparam("mh"), dedup_version=bindparam("dv")),
            rows,
        )
        self.c.execute(delete(DEDUP_CATEGORIES).where(DEDUP_CATEGORIES.c.entry_id.in_(ids)))

    def signatures(self, ids: Iterable[int]) -> dict[int, bytes | None]:
        out: dict[int, bytes | None] = {}
        for chunk in _chunks(sorted(ids)):
            out.update((j, m) for j, m in self.c.execute(select(E.c.id, E.c.minhash).where(E.c.id.in_(chunk))))
        return out

    # ---- the key index

    def shared_keys(self, probe: list[tuple[int, int]]):
        """See `keyindex.shared`."""
        return keyindex.shared(self.c, probe)

    def insert_keys(self, rows: list[tuple[int, int]]) -> None:
        keyindex.insert(self.c, rows, self.shape)

    def settle_keys(self) -> None:
        keyindex.settle(self.c, self.shape)

    # ---- writing decisions

    def write(self, changed: Sequence[ClusterEntry], same: Sequence[int], repoints: Sequence[tuple[int, int]]) -> None:
        """Store a decision: `repoints` (old canonical, new) move the members of a demoted
        canonical entry that were not loaded; `changed` entries get their new canonical id,
        reason and score; `same` ones (left where they were) only have their pending flag
        cleared, by one statement per chunk: on a cold start that is nearly every entry."""
        for old, new in repoints:
            self.c.execute(update(E).where(E.c.canonical_id == old).values(canonical_id=new))
        rows = [{"b_id": it.id, "cid": it.canonical_id, "r": it.dup_reason, "s": it.dup_score} for it in changed]
        for chunk in _chunks(rows, 500):
            self.c.execute(
                update(E)
                .where(E.c.id == bindparam("b_id"))
                .values(canonical_id=bindparam("cid"), dup_reason=bindparam("r"), dup_score=bindparam("s"))
                .values(dedup_pending=False),
                list(chunk),
            )
        for chunk in _chunks(sorted(same)):
            self.c.execute(update(E).where(E.c.id.in_(chunk)).values(dedup_pending=False))

    def sync_categories(self, affected: set[int]) -> None:
        """Give each shown entry of `affected` the categories of its hidden duplicates (borrowed,
        recorded in `dedup_categories`), and take back what no member carries any more: a story
        filed under another category by another source still reaches that category's feed, once."""
        c = self.c
        ec, dc = ENTRY_CATEGORIES, DEDUP_CATEGORIES
        for chunk in _chunks(sorted(affected)):
            q = select(E.c.id, E.c.canonical_id, E.c.withdrawn_at, E.c.hidden).where(E.c.id.in_(chunk))
            rows = [(i, cid, gone if gone is not None else hidden) for i, cid, gone, hidden in c.execute(q)]
            shown = [i for i, cid, gone in rows if cid is None and gone is None]
            members: dict[int, list[int]] = {i: [] for i in shown}
            for part in _chunks(shown):
                q = select(E.c.id, E.c.canonical_id).where(
                    E.c.canonical_id.in_(part), E.c.withdrawn_at.is_(None), E.c.hidden.is_(None)
                )
                for m, cid in c.execute(q):
                    members[cid].append(m)
            borrowed: dict[int, set[int]] = {}
            everyone = {i for i, *_ in rows} | {m for ms in members.values() for m in ms}
            for part in _chunks(sorted(everyone)):
                for i, cat in c.execute(select(dc.c.entry_id, dc.c.category_id).where(dc.c.entry_id.in_(part))):
                    borrowed.setdefault(i, set()).add(cat)
            # An entry alone in its cluster that has borrowed nothing has nothing to give or take
            # back: on a cold start, nearly all of them, whose categories need not be read.
            busy = [i for i, *_ in rows if members.get(i) or i in borrowed]
            involved = set(busy) | {m for i in busy for m in members.get(i, ())}
            cats: dict[int, set[int]] = {}
            for part in _chunks(sorted(involved)):
                for i, cat in c.execute(select(ec.c.entry_id, ec.c.category_id).where(ec.c.entry_id.in_(part))):
                    cats.setdefault(i, set()).add(cat)
            give, take = lending(busy, members, cats, borrowed)
            _unborrow(c, take)
            if give:
                c.execute(insert(ec), [{"entry_id": i, "category_id": cat} for i, cat in give])
                c.execute(insert(dc), [{"entry_id": i, "category_id": cat} for i, cat in give])


def lending(busy: Sequence[int], members: dict[int, list[int]], cats: dict[int, set[int]],
            borrowed: dict[int, set[int]]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:  # fmt: skip
    """(give, take): the (entry, category) pairs to lend to and take back from each shown entry
    of `busy`, given its members, every entry's categories and what each has borrowed. A record
    of a borrowed category whose row is gone (the store rewrote the entry's categories) is stale:
    dropped, and the category lent again if still wanted."""
    involved = set(busy) | {m for i in busy for m in members.get(i, ())}
    own = {i: cats.get(i, set()) - borrowed.get(i, set()) for i in involved}
    give: list[tuple[int, int]] = []
    take: list[tuple[int, int]] = []
    for i in busy:
        want = set().union(*(own[m] for m in members[i])) - own[i] if i in members else set()
        recorded = borrowed.get(i, set())
        have = recorded & cats.get(i, set())
        give += [(i, cat) for cat in sorted(want - have)]
        take += [(i, cat) for cat in sorted((have - want) | (recorded - have))]
    return give, take


def _unborrow(c: Connection, pairs: Sequence[tuple[int, int]]) -> None:
    ec, dc = ENTRY_CATEGORIES, DEDUP_CATEGORIES
    for i, cat in pairs:
        c.execute(delete(ec).where(ec.c.entry_id == i, ec.c.category_id == cat))
        c.execute(delete(dc).where(dc.c.entry_id == i, dc.c.category_id == cat))


class ClusterStore:
    """Duplicate clusters (a part of `Store`)."""

    engine: object
    key_shape: keyindex.Shape

    @contextmanager
    def dedup_transaction(self) -> Iterator[DedupTransaction]:
        with self.engine.begin() as c:
            yield DedupTransaction(c, self.key_shape)

    def undo_clusters(self) -> None:
        """Show every entry again (`[dedup] enabled = false`), clear every entry's pending flag and
        forget the decisions digest, so that enabling dedup later re-clusters everything. Cheap
        when nothing is clustered."""
        with self.engine.begin() as c:
            # Two statements, each answered from an index (an OR of the two would scan the table).
            for linked in (E.c.canonical_id.is_not(None), E.c.canonical_id.is_(None) & E.c.dup_reason.is_not(None)):
                c.execute(update(E).where(linked).values(canonical_id=None, dup_reason=None, dup_score=None))
            c.execute(delete(DEDUP_STATE).where(DEDUP_STATE.c.name == "decisions"))
            # Nothing waits for a dedup run that will not come (a pending entry would make every
            # cycle build); enabling dedup again re-decides every entry, without the digest.
            c.execute(update(E).where(E.c.dedup_pending == true()).values(dedup_pending=False))
            borrowed = c.execute(select(DEDUP_CATEGORIES.c.entry_id, DEDUP_CATEGORIES.c.category_id)).all()
            _unborrow(c, [(i, cid) for i, cid in borrowed])

    def clusters(self) -> list[Cluster]:
        """Every cluster with visible duplicates: the canonical entry and its members, newest first."""
        cols = (E.c.id, E.c.title, SOURCES.c.name, E.c.key, E.c.link, E.c.dup_reason, E.c.dup_score)
        members: dict[int, list[ClusterMember]] = {}
        with self.engine.connect() as c:
            q = (
                select(E.c.canonical_id, *cols)
                .join(SOURCES, SOURCES.c.id == E.c.source_id)
                .where(E.c.canonical_id.is_not(None), E.c.withdrawn_at.is_(None), E.c.hidden.is_(None))
                .order_by(E.c.id)
            )
            for cid, *row in c.execute(q):
                members.setdefault(cid, []).append(ClusterMember(*row))
            heads: list[tuple] = []
            for chunk in _chunks(sorted(members)):
                q = select(E.c.sort_date, *cols).join(SOURCES, SOURCES.c.id == E.c.source_id).where(E.c.id.in_(chunk))
                heads += c.execute(q).all()
        heads.sort(key=lambda r: (r[0], r[1]), reverse=True)
        return [Cluster(ClusterMember(*h[1:6]), tuple(members[h[1]])) for h in heads]

    def dup_state(self) -> dict[int, tuple[int | None, str | None, float | None]]:
        """id → (canonical id, reason, score) of every entry: how the clusters stand."""
        with self.engine.connect() as c:
            rows = c.execute(select(E.c.id, E.c.canonical_id, E.c.dup_reason, E.c.dup_score))
            return {i: (cid, r, s) for i, cid, r, s in rows}
