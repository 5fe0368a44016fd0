"""What the republishing rules keep in the store: which entries a block or keep rule hides (and
under which rules that was decided), the feed terms `feed_categories = "map"` dropped, and the
article pages of full-text sources.

Decisions are not made here (`rules.verdict`, `fulltext.next_try`); these are their reads and writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, insert, select, true, update

from ..model import Entry
from .schema import (
    CATEGORIES,
    DEDUP_CATEGORIES,
    DEDUP_STATE,
    ENTRIES,
    ENTRY_CATEGORIES,
    PAGE_CACHE,
    SOURCES,
)

E = ENTRIES
P = PAGE_CACHE
CHUNK = 400
RULES_STATE = "rules"  # the name, in dedup_state, of the fingerprint the stored verdicts were made under


@dataclass(frozen=True, slots=True)
class RuleSubject:
    """A stored entry as the block and keep rules see it, with its current verdict."""

    id: int
    entry: Entry  # title, content (when a rule looks at it), summary, link, authors, categories
    hidden: str | None


@dataclass(frozen=True, slots=True)
class CachedPage:
    """An article page of a full-text source, as last fetched."""

    url: str
    status: int | None
    content: str | None  # the extracted article; None when there is none
    error: str | None  # why there is none
    attempts: int  # failed fetches in a row
    fetched_at: datetime
    retry_at: datetime | None  # when to try again; None: never
    etag: str | None = None
    last_modified: str | None = None


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def _chunks(seq: Sequence, n: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class RepublishStore:
    """Rule verdicts, dropped feed terms and the page cache (a part of `Store`)."""

    engine: object

    # ---- verdicts of block and keep rules

    def rules_fingerprint(self) -> str | None:
        with self.engine.connect() as c:
            return c.scalar(select(DEDUP_STATE.c.value).where(DEDUP_STATE.c.name == RULES_STATE))

    def entries_to_judge(self, touched: Iterable[int], everything: bool, pending: bool = True) -> list[int]:
        """Ids whose verdict is due: all with `everything`, else `touched` and (with `pending`)
        those dedup has not looked at since they changed (an interrupted run's too)."""
        ids = set(touched)
        with self.engine.connect() as c:
            if everything:
                ids.update(c.scalars(select(E.c.id)))
            elif pending:  # `= true`: PostgreSQL answers only that from the index
                ids.update(c.scalars(select(E.c.id).where(E.c.dedup_pending == true())))
        return sorted(ids)

    def rule_subjects(self, ids: Sequence[int], with_content: bool) -> Iterator[RuleSubject]:
        """The entries of `ids` as rules see them (the content only when a rule looks at it:
        reading every body back would cost more than judging)."""
        content = E.c.content if with_content else E.c.id
        cols = (E.c.id, SOURCES.c.name, E.c.key, E.c.title, content, E.c.summary, E.c.link, E.c.author, E.c.hidden)
        with self.engine.connect() as c:
            for chunk in _chunks(list(ids)):
                cats: dict[int, list[str]] = {}
                q = (
                    select(ENTRY_CATEGORIES.c.entry_id, CATEGORIES.c.name)
                    .join(CATEGORIES, CATEGORIES.c.id == ENTRY_CATEGORIES.c.category_id)
                    .outerjoin(
                        DEDUP_CATEGORIES,
                        (DEDUP_CATEGORIES.c.entry_id == ENTRY_CATEGORIES.c.entry_id)
                        & (DEDUP_CATEGORIES.c.category_id == ENTRY_CATEGORIES.c.category_id),
                    )  # categories lent by a duplicate are not the entry's own
                    .where(ENTRY_CATEGORIES.c.entry_id.in_(chunk), DEDUP_CATEGORIES.c.entry_id.is_(None))
                    .order_by(CATEGORIES.c.name)
                )
                for i, name in c.execute(q):
                    cats.setdefault(i, []).append(name)
                q = select(*cols).join(SOURCES, SOURCES.c.id == E.c.source_id).where(E.c.id.in_(chunk))
                for i, source, key, title, body, summary, link, author, hidden in c.execute(q):
                    entry = Entry(
                        source, key, title, body if with_content else "", summary, link=link,
                        authors=tuple(json.loads(author)) if author else (), categories=tuple(cats.get(i, ())),
                    )  # fmt: skip
                    yield RuleSubject(i, entry, hidden)

    def set_hidden(self, changes: dict[int, str | None], fingerprint: str | None) -> None:
        """Store new verdicts (each entry is looked at by dedup again: a hidden entry leaves its
        cluster, a shown one may join one) and, with `fingerprint`, the rules they were made under."""
        with self.engine.begin() as c:
            if changes:
                q = update(E).where(E.c.id == bindparam("b_id")).values(hidden=bindparam("h"), dedup_pending=True)
                c.execute(q, [{"b_id": i, "h": h} for i, h in changes.items()])
            if fingerprint is not None:
                c.execute(delete(DEDUP_STATE).where(DEDUP_STATE.c.name == RULES_STATE))
                c.execute(insert(DEDUP_STATE).values(name=RULES_STATE, value=fingerprint))

    def hidden_entries(self) -> dict[str, int]:
        """Per reason, how many entries the rules hide."""
        out: dict[str, int] = {}
        with self.engine.connect() as c:
            for (why,) in c.execute(select(E.c.hidden).where(E.c.hidden.is_not(None), E.c.withdrawn_at.is_(None))):
                out[why] = out.get(why, 0) + 1
        return out

    def find_entries(self, ref: str) -> list[tuple[int, str]]:
        """(id, source name) of the entries `ref` names: an id, a uid, or one of its links."""
        q = select(E.c.id, SOURCES.c.name).join(SOURCES, SOURCES.c.id == E.c.source_id)
        with self.engine.connect() as c:
            if ref.isdigit():
                found = c.execute(q.where(E.c.id == int(ref))).all()
                if found:
                    return [tuple(r) for r in found]
            found = c.execute(q.where((E.c.link == ref) | (E.c.uid == ref) | (E.c.canonical_url == ref))).all()
            return [tuple(r) for r in found]

    # ---- feed terms map mode dropped

    def dropped_terms(self) -> Iterator[tuple[str, list[str]]]:
        """(source name, terms) of each entry that is not withdrawn and had terms dropped."""
        q = (
            select(SOURCES.c.name, E.c.dropped_terms)
            .join(SOURCES, SOURCES.c.id == E.c.source_id)
            .where(E.c.dropped_terms.is_not(None), E.c.withdrawn_at.is_(None))
        )
        with self.engine.connect() as c:
            for source, terms in c.execute(q):
                yield source, json.loads(terms)

    # ---- article pages of full-text sources

    def cached_pages(self, urls: Iterable[str]) -> dict[str, CachedPage]:
        keys = {_url_key(u): u for u in urls}
        out: dict[str, CachedPage] = {}
        cols = (P.c.url, P.c.status, P.c.content, P.c.error, P.c.attempts, P.c.fetched_at, P.c.retry_at, P.c.etag,
                P.c.last_modified)  # fmt: skip
        with self.engine.connect() as c:
            for chunk in _chunks(sorted(keys)):
                for row in c.execute(select(*cols).where(P.c.url_key.in_(chunk))):
                    out[row.url] = CachedPage(*row)
        return out

    def save_pages(self, pages: Sequence[CachedPage]) -> None:
        if not pages:
            return
        rows = [
            {"url_key": _url_key(p.url), "url": p.url, "status": p.status, "content": p.content, "error": p.error,
             "attempts": p.attempts, "fetched_at": p.fetched_at, "retry_at": p.retry_at, "etag": p.etag,
             "last_modified": p.last_modified}
            for p in pages
        ]  # fmt: skip
        with self.engine.begin() as c:
            for chunk in _chunks([r["url_key"] for r in rows]):
                c.execute(delete(PAGE_CACHE).where(PAGE_CACHE.c.url_key.in_(chunk)))
            c.execute(insert(PAGE_CACHE), rows)
