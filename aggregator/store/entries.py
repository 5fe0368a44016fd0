"""Entries and their versions: saving what a source produced, withdrawing, and the reads
publishing needs.

Entries are never duplicated by re-runs: (source, key) is unique and every write is an
upsert decided in Python (`entry_rules`) from one bulk read. Writes go in batches, one
transaction each, so an interrupted run leaves the previous state or the new one, never half
of an entry.

**The visible-entry rule** lives here and only here (`VISIBLE`): an entry readers see is not
withdrawn, not hidden by a republishing rule, and not a hidden duplicate (no canonical entry above it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, func, insert, literal_column, select, text, true, update
from sqlalchemy.engine import Connection

from .. import entry_rules as rules
from ..model import Entry
from . import keyindex
from .records import CategoryRef, ListedEntry, SaveResult, StoredEntry, StoredStamp, entry_uid
from .schema import (
    CATEGORIES,
    DEDUP_CATEGORIES,
    ENTRIES,
    ENTRY_CATEGORIES,
    PAGES_CONDITION,
    SOURCES,
    TOMBSTONES,
    VISIBLE_CONDITION,
)

BATCH = 500  # ids per IN (...) list
E = ENTRIES

# An entry readers see: not withdrawn, not hidden by a rule, not a hidden duplicate. Every listing
# and count uses it.
# `_listing(sorted_here=True)` spells these out with a unary `+`: keep the two in step.
VISIBLE = (E.c.withdrawn_at.is_(None), E.c.hidden.is_(None), E.c.canonical_id.is_(None))
# The few queries written as text (those that name the partial indexes built on this rule,
# `schema.ix_entries_visible` and `ix_entries_pages`) use the indexes' own conditions,
# `VISIBLE_CONDITION` and `PAGES_CONDITION`: SQLite uses a partial index only for a WHERE
# that repeats its condition.
PAGE_ROWS = 5000  # rows of the page plan read at a time


def through_index(engine, table: str, index: str, alias: str = "") -> str:
    """`table` (as `alias`), read through `index` on SQLite. Without planner statistics, SQLite
    takes the listing index (two equality terms) over a partial index that needs no row at all,
    and `ANALYZE` has made other queries worse (see `_listing`); PostgreSQL plans for itself."""
    named = f"{table} AS {alias}" if alias else table
    return f"{named} INDEXED BY {index}" if engine.dialect.name == "sqlite" else named


def loads_list(value: str | None) -> list:
    return json.loads(value) if value else []


def _json(items: Sequence[str]) -> str | None:
    return json.dumps(list(items), ensure_ascii=False) if items else None


def _enclosure_json(e: Entry) -> str | None:
    x = e.enclosure
    return json.dumps({"url": x.url, "type": x.type, "length": x.length}) if x else None


def _values(e: Entry, version: str) -> dict:
    """The columns one version of an entry writes."""
    stamp = e.stamp
    row = {
        "version": version,
        "title": e.title,
        "link": e.link,
        "author": _json(e.authors),
        "tags": _json(e.tags),
        "outlet": e.outlet,
        "image": e.image,
        "enclosure": _enclosure_json(e),
        "dropped_terms": _json(e.dropped),
        "summary": e.summary,
        "content": e.content_html,
        "published": e.published,
        "updated": e.updated,
        "file_mtime_ns": stamp.mtime_ns if stamp else None,
        "file_size": stamp.size if stamp else None,
        "withdrawn_at": None,
        "dedup_pending": True,  # look at it again
    }
    if e.features is not None:
        f = e.features
        row |= {
            "canonical_url": f.canonical_url,
            "url_key": f.url_key,
            "fingerprint": f.fingerprint,
            "text_chars": f.text_chars,
            "minhash": f.signature,
            "dedup_version": version,
        }
    return row


def _listing(category_id: int | None, *columns, sorted_here: bool = False):
    """Visible entries (of one category, or all), newest first. `sorted_here` (SQLite, a whole
    category): the category's rows are read by id and sorted, rather than found by walking
    every visible entry in date order, the faster plan only while a limit stops the walk early
    (the 52 listings of a 20,000-entry store, in full: 0.45 → 0.20 s; the walk grew with
    categories × entries)."""
    if sorted_here:
        # A unary `+` (a no-op on the value) keeps SQLite from using an index for that term:
        # with the date index and the canonical index out of reach, reading the category's ids
        # by rowid is the plan left, whatever SQLite guesses of the table's size.
        withdrawn, canonical = literal_column("+entries.withdrawn_at"), literal_column("+entries.canonical_id")
        q = select(*columns).where(withdrawn.is_(None), E.c.hidden.is_(None), canonical.is_(None))
    else:
        q = select(*columns).where(*VISIBLE)
    if category_id is not None:
        # IN, not a join: without planner statistics SQLite answered the join by walking every
        # visible entry in date order and probing its categories (4.6 s for 50 categories of
        # 35,000 entries); this reads the category's ids from its index once.
        ec = ENTRY_CATEGORIES
        q = q.where(E.c.id.in_(select(ec.c.entry_id).where(ec.c.category_id == category_id)))
    # Entries of one date in uid order: a digest of each entry's identity, so a database rebuilt
    # from empty lists them as before. By id, they followed the order in which the feeds' answers
    # had arrived. SQLite still walks the date index, sorting only within a date; PostgreSQL's
    # plan is the one it chose by id (20,000 entries, newest 100: a top-N sort, 13-14 ms).
    if sorted_here:
        return q.order_by(literal_column("+entries.sort_date").desc(), literal_column("+entries.uid").desc())
    return q.order_by(E.c.sort_date.desc(), E.c.uid.desc())


# Statements publishing runs for every few dozen entries, built once: constructing and
# compiling them anew each time cost more than the rows they fetch.
_PUBLISHED_COLUMNS = (
    "id", "source_id", "key", "uid", "version", "title", "link", "author", "tags", "outlet", "image", "enclosure",
    "summary", "content", "published", "updated", "first_seen", "withdrawn_at", "hidden",
)  # fmt: skip
_BY_ID = select(*(E.c[n] for n in _PUBLISHED_COLUMNS)).where(E.c.id.in_(bindparam("ids", expanding=True)))
_CATEGORIES_OF = (
    select(ENTRY_CATEGORIES.c.entry_id, CATEGORIES.c.id, CATEGORIES.c.name, CATEGORIES.c.slug)
    .join(CATEGORIES, CATEGORIES.c.id == ENTRY_CATEGORIES.c.category_id)
    .where(ENTRY_CATEGORIES.c.entry_id.in_(bindparam("ids", expanding=True)))
    .order_by(CATEGORIES.c.name)
)

# Statements run once per stored feed, built once: building a select costs more than running it.
_STAMPS = select(E.c.key, E.c.id, E.c.file_mtime_ns, E.c.file_size, E.c.version, E.c.withdrawn_at).where(
    E.c.source_id == bindparam("source_id")
)
_TOMBSTONED = select(TOMBSTONES.c.key).where(
    TOMBSTONES.c.source_id == bindparam("source_id"), TOMBSTONES.c.key.in_(bindparam("keys", expanding=True))
)
_INSERT_RETURNING_IDS = insert(E).returning(E.c.key, E.c.id)  # matched by key: any order


def delete_keys(c, entry_ids: Sequence[int]) -> None:
    """Drop the dedup index keys of these entries: call it before their stored features change
    or go, since the keys are recomputed from them (the index has no lookup by entry)."""
    from ..lsh import index_keys

    rows = []
    for i in range(0, len(entry_ids), BATCH):
        q = select(E.c.id, E.c.url_key, E.c.fingerprint, E.c.minhash).where(E.c.id.in_(entry_ids[i : i + BATCH]))
        rows += [(k, i) for i, uk, fp, sig in c.execute(q) for k in index_keys(uk, fp, sig)]
    keyindex.delete(c, rows)


class EntryStore:
    """Saving entries and reading them back (a part of `Store`)."""

    engine: object
    key_shape: keyindex.Shape

    def has_pending_changes(self) -> bool:
        """Is any entry new, changed or withdrawn since dedup last looked (what a publisher
        that did not store them itself polls for)? One indexed row at most."""
        q = select(E.c.id).where(E.c.dedup_pending == true()).limit(1)
        with self.engine.connect() as c:
            return c.execute(q).first() is not None

    def stamps(self, source_id: int) -> dict[str, StoredStamp]:
        """Every stored entry of a source by key, with what a re-scan compares against."""
        with self.engine.connect() as c:
            rows = c.execute(_STAMPS, {"source_id": source_id})
            return {k: StoredStamp(i, m, sz, v, w is not None) for k, i, m, sz, v, w in rows}

    # Over 60 lines: one transaction's steps (tombstones, categories, classify, insert, rewrite,
    # index keys) share its connection and lists; split, each would need them all passed in.
    def save_entries(
        self, source_id: int, entries: Sequence[Entry], known: dict[str, StoredStamp], now: datetime
    ) -> tuple[SaveResult, list[int]]:
        """Insert new entries and update changed ones, in one transaction.

        Returns the counts and the ids of entries whose content is new or changed
        (what the dedup stage must look at)."""
        result = SaveResult()
        touched: list[int] = []
        if not entries:
            return result, touched
        # A Core connection, not an ORM session: the session's bookkeeping cost more than the
        # statements when a feed's 50 items are stored.
        with self.engine.begin() as s:
            entries = _without_tombstoned(s, source_id, entries, known)  # pruned stays pruned
            cat_ids = self._category_ids(s, {c for e in entries for c in e.categories}, source_id, now)
            inserts: list[tuple[Entry, dict]] = []
            rewrites: list[tuple[StoredStamp, Entry, str]] = []
            keys: list[tuple[int, int]] = []  # (index key, entry id) of features computed by the parse
            touches: list[dict] = []
            for e in entries:
                version = e.version()
                old = known.get(e.key)
                kind = rules.classify(
                    version,
                    old.version if old else None,
                    bool(old and old.withdrawn),
                    e.stamp,
                    (old.mtime_ns, old.size) if old else (None, None),
                )
                if kind == rules.NEW:
                    row = _values(e, version) | {
                        "source_id": source_id,
                        "key": e.key,
                        "uid": entry_uid(e.source, e.key),
                        "first_seen": now,
                        "changed_at": now,
                        "sort_date": rules.first_sort_date(e.published, now),
                    }
                    inserts.append((e, row))
                    result.new += 1
                elif kind in (rules.UNCHANGED, rules.TOUCHED):
                    result.unchanged += 1
                    if kind == rules.TOUCHED:
                        touches.append({"b_id": old.id, "m": e.stamp.mtime_ns, "s": e.stamp.size})
                else:
                    assert old is not None
                    rewrites.append((old, e, version))
                    touched.append(old.id)
                    result.updated += 1
            if rewrites:
                keys += self._rewrite(s, rewrites, cat_ids, now)
            if touches:
                # A file saved again with the same content: remember its new stamp so the
                # next scan skips it without reading.
                q = update(E).where(E.c.id == bindparam("b_id"))
                s.execute(q.values(file_mtime_ns=bindparam("m"), file_size=bindparam("s")), touches)
            if inserts:
                new_ids = _insert(s, source_id, inserts, cat_ids)
                keys += [(k, new_ids[e.key]) for e, _ in inserts if e.features is not None for k in e.features.keys]
                touched.extend(new_ids.values())
            if keys:
                keyindex.insert(s, keys, self.key_shape)
        return result, touched

    @staticmethod
    def _rewrite(s: Connection, rewrites: Sequence[tuple[StoredStamp, Entry, str]], cat_ids: dict[str, int],
                 now: datetime) -> list[tuple[int, int]]:  # fmt: skip
        """Store changed versions of stored entries, in a few statements for all of them (five
        per entry made a refetch of 15,000 changed items take 15 s, 6 s batched); returns their
        new index keys. An entry given twice keeps its last version."""
        latest = {old.id: (old, e, version) for old, e, version in rewrites}
        by_columns: dict[tuple[str, ...], list[dict]] = {}
        keys: list[tuple[int, int]] = []
        refeatured: list[int] = []
        for old, e, version in latest.values():
            row = _values(e, version)
            row["changed_at"] = now
            sort_date = rules.changed_sort_date(e.published, now)
            if sort_date is not None:
                row["sort_date"] = sort_date
            row["updated"] = rules.changed_updated(e.published, e.updated, old.version != version, now)
            if e.features is not None:
                refeatured.append(old.id)
                keys += [(k, old.id) for k in e.features.keys]
            by_columns.setdefault(tuple(row), []).append(row | {"b_id": old.id})
        if refeatured:  # before the rows change: the old keys are computed from the old features
            delete_keys(s, refeatured)
        for rows in by_columns.values():  # the SET clause is the first row's columns
            s.execute(update(E).where(E.c.id == bindparam("b_id")), rows)
        ids = list(latest)
        for i in range(0, len(ids), BATCH):
            s.execute(delete(ENTRY_CATEGORIES).where(ENTRY_CATEGORIES.c.entry_id.in_(ids[i : i + BATCH])))
            # None of their categories is borrowed from a duplicate any more (dedup lends again).
            s.execute(delete(DEDUP_CATEGORIES).where(DEDUP_CATEGORIES.c.entry_id.in_(ids[i : i + BATCH])))
        links = [{"entry_id": i, "category_id": cat_ids[c]} for i, (_, e, _) in latest.items() for c in e.categories]
        if links:
            s.execute(insert(ENTRY_CATEGORIES), links)
        return keys

    def withdraw(self, ids: Sequence[int], now: datetime) -> None:
        """Entries whose file is gone: hidden from feeds, kept for history."""
        with self.engine.begin() as c:
            for i in range(0, len(ids), BATCH):
                c.execute(
                    update(E)
                    .where(E.c.id.in_(ids[i : i + BATCH]))
                    .values(withdrawn_at=now, changed_at=now, dedup_pending=True)
                )

    # ------------------------------------------------------------ identity of feed items

    def entry_links(self, source_id: int) -> dict[str, str]:
        """link → key of a source's stored entries (to notice GUIDs that change between fetches)."""
        q = select(E.c.link, E.c.key).where(E.c.source_id == source_id, E.c.link.is_not(None))
        with self.engine.connect() as c:
            return {link: key for link, key in c.execute(q)}

    def rekey(self, source_id: int, mapping: dict[str, str]) -> int:
        """Give stored entries a new key (their public uid stays); keys already taken are skipped."""
        if not mapping:
            return 0
        with self.engine.begin() as c:
            taken = set(c.scalars(select(E.c.key).where(E.c.source_id == source_id)))
            todo = []
            for old, new in mapping.items():
                if old in taken and new not in taken:
                    taken.discard(old)
                    taken.add(new)
                    todo.append({"b_old": old, "b_new": new})
            if todo:
                q = update(E).where(E.c.source_id == source_id, E.c.key == bindparam("b_old"))
                c.execute(q.values(key=bindparam("b_new")), todo)
        return len(todo)

    # ------------------------------------------------------------ reads for publishing

    def listing_versions(self, category_id: int | None, limit: int | None) -> list[tuple[int, str]]:
        """(id, version) of the visible entries, newest first, at most `limit` (None: all):
        cheap input for a change signature."""
        whole = limit is None and category_id is not None and self.engine.dialect.name == "sqlite"
        q = _listing(category_id, E.c.id, E.c.version, sorted_here=whole).limit(limit)
        with self.engine.connect() as c:
            return [(i, v) for i, v in c.execute(q)]

    def listing(self, category_id: int | None, limit: int | None) -> list[StoredEntry]:
        """The visible entries, newest first, at most `limit` (None: all)."""
        return self.entries_by_id([i for i, _ in self.listing_versions(category_id, limit)])

    def listing_page(self, category_id: int | None, offset: int, limit: int) -> list[ListedEntry]:
        """A page of the visible entries, newest first, with what a keyword filter looks at."""
        q = _listing(category_id, E.c.id, E.c.version, E.c.title, E.c.summary, E.c.tags).offset(offset).limit(limit)
        with self.engine.connect() as c:
            return [ListedEntry(i, v, t, s, loads_list(tags)) for i, v, t, s, tags in c.execute(q)]

    def entries_by_id(self, ids: Sequence[int]) -> list[StoredEntry]:
        """Entries as publishing needs them, in the order of `ids`; ids no longer stored are skipped."""
        found = {}
        with self.engine.connect() as c:
            for i in range(0, len(ids), BATCH):
                for r in c.execute(_BY_ID, {"ids": list(ids[i : i + BATCH])}):
                    found[r.id] = StoredEntry(
                        r.id, r.source_id, r.key, r.uid, r.version, r.title, r.link, loads_list(r.author),
                        loads_list(r.tags), r.outlet, r.image, json.loads(r.enclosure) if r.enclosure else None,
                        r.summary, r.content, r.published, r.updated, r.first_seen, r.withdrawn_at, r.hidden,
                    )  # fmt: skip
        return [found[i] for i in ids if i in found]

    def entry_categories(self, entry_ids: Sequence[int]) -> dict[int, list[CategoryRef]]:
        """Each entry's categories, by name."""
        out: dict[int, list[CategoryRef]] = {i: [] for i in entry_ids}
        with self.engine.connect() as c:
            for i in range(0, len(entry_ids), BATCH):
                for eid, *ref in c.execute(_CATEGORIES_OF, {"ids": list(entry_ids[i : i + BATCH])}):
                    out[eid].append(CategoryRef(*ref))
        return out

    def also_reported(self, ids: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
        """Per canonical entry: (outlet or source, URL) of the duplicates dedup linked to it."""
        out: dict[int, list[tuple[str, str]]] = {}
        if not ids:
            return out
        q = (
            select(E.c.canonical_id, E.c.outlet, SOURCES.c.name, E.c.link)
            .join(SOURCES, SOURCES.c.id == E.c.source_id)
            .where(E.c.canonical_id.in_(list(ids)), E.c.withdrawn_at.is_(None), E.c.hidden.is_(None),
                   E.c.link.is_not(None))
            .order_by(E.c.canonical_id, E.c.id)
        )
        with self.engine.connect() as c:
            for cid, outlet, source, link in c.execute(q):
                pair = (outlet or source, link)
                if pair not in out.setdefault(cid, []):
                    out[cid].append(pair)
        return out

    def page_rows(self, after: str = "", limit: int = PAGE_ROWS) -> list[tuple[str, int, str, str, str | None]]:
        """(uid, id, version, category ids as "3,17", recorded signature or None) of the next
        `limit` entries with an article page (visible, no original URL) whose uid sorts after
        `after`, in uid order: a build plans every page this way, a chunk at a time, from two
        indexes (`ix_entries_pages` and the categories' key) without reading the entries' rows."""
        if self.engine.dialect.name == "sqlite":  # no ORDER BY inside an aggregate before SQLite 3.44
            cats = ("(SELECT group_concat(category_id) FROM (SELECT category_id FROM entry_categories "
                    "WHERE entry_id = e.id ORDER BY category_id))")  # fmt: skip
        else:
            cats = ("(SELECT string_agg(CAST(category_id AS TEXT), ',' ORDER BY category_id) "
                    "FROM entry_categories WHERE entry_id = e.id)")  # fmt: skip
        sql = (
            f"SELECT e.uid, e.id, e.version, {cats}, p.signature "
            f"FROM {through_index(self.engine, 'entries', 'ix_entries_pages', 'e')} "
            f"LEFT JOIN article_pages AS p ON p.uid = e.uid "
            f"WHERE {PAGES_CONDITION} AND e.uid > :after ORDER BY e.uid LIMIT :limit"
        )
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(text(sql), {"after": after, "limit": limit})]

    def unwanted_pages(self) -> list[str]:
        """The uids of recorded article pages whose entry no longer gets one (withdrawn, hidden,
        a duplicate now, given an original URL, or gone), in uid order."""
        sql = (
            "SELECT p.uid FROM article_pages AS p WHERE NOT EXISTS (SELECT 1 FROM "
            f"{through_index(self.engine, 'entries', 'ix_entries_pages')} WHERE uid = p.uid AND {PAGES_CONDITION}) "
            "ORDER BY p.uid"
        )
        with self.engine.connect() as c:
            return [uid for (uid,) in c.exec_driver_sql(sql)]

    # ------------------------------------------------------------ counts

    def visible_count(self) -> int:
        """Entries readers see (counted in `ix_entries_visible`)."""
        visible = through_index(self.engine, "entries", "ix_entries_visible")
        sql = f"SELECT count(*) FROM {visible} WHERE {VISIBLE_CONDITION}"
        with self.engine.connect() as c:
            return c.exec_driver_sql(sql).scalar() or 0

    def entry_count(self) -> int:
        """Every stored entry, withdrawn and duplicates included."""
        with self.engine.connect() as c:
            return c.scalar(select(func.count()).select_from(E)) or 0

    def entries_per_source(self) -> dict[int, int]:
        """Per source id: its entries that are not withdrawn (duplicates included: they are the
        source's even when another copy is shown)."""
        q = select(E.c.source_id, func.count()).where(E.c.withdrawn_at.is_(None)).group_by(E.c.source_id)
        with self.engine.connect() as c:
            return {sid: n for sid, n in c.execute(q)}


def _insert(
    s: Connection, source_id: int, inserts: list[tuple[Entry, dict]], cat_ids: dict[str, int]
) -> dict[str, int]:
    """Insert new entries and their categories; returns their ids by key."""
    # Core, not ORM, insert: the ORM's bulk path costs ~3× more per row. RETURNING gives the
    # ids in the same statement (SQLite ≥ 3.35 and PostgreSQL batch it).
    by_key: dict[str, int] = dict(s.execute(_INSERT_RETURNING_IDS, [row for _, row in inserts]).all())
    links = [{"entry_id": by_key[e.key], "category_id": cat_ids[c]} for e, _ in inserts for c in e.categories]
    if links:
        s.execute(insert(ENTRY_CATEGORIES), links)
    return by_key


def _without_tombstoned(
    s: Connection, source_id: int, entries: Sequence[Entry], known: dict[str, StoredStamp]
) -> Sequence[Entry]:
    """Drop new entries that retention pruned before (a feed still carrying an old item)."""
    new_keys = [e.key for e in entries if e.key not in known]
    dead: set[str] = set()
    for i in range(0, len(new_keys), BATCH):
        dead.update(s.scalars(_TOMBSTONED, {"source_id": source_id, "keys": new_keys[i : i + BATCH]}))
    return [e for e in entries if e.key not in dead] if dead else entries
