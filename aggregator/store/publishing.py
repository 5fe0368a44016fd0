"""Publishing state: what each feed and article page was last built from, and which archive
page of which feed each entry went to (RFC 5005 pages are written once and keep what they held)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, insert, select

from .schema import ARCHIVE_ENTRIES, ARTICLE_PAGES, OUTPUTS

_CHUNK = 500
A = ARCHIVE_ENTRIES


class PublishStore:
    """Publishing state (a part of `Store`)."""

    engine: object

    # ---- feeds

    def signatures(self) -> dict[str, str]:
        """feed → signature of what it was last built from."""
        with self.engine.connect() as c:
            return dict(c.execute(select(OUTPUTS.c.name, OUTPUTS.c.signature)).all())

    def set_signatures(self, changed: dict[str, str]) -> None:
        if not changed:
            return
        with self.engine.begin() as c:
            c.execute(delete(OUTPUTS).where(OUTPUTS.c.name.in_(list(changed))))
            c.execute(insert(OUTPUTS), [{"name": k, "signature": v} for k, v in changed.items()])

    # ---- article pages

    def page_signatures(self) -> dict[str, str]:
        """uid → signature of what each article page was last rendered from."""
        with self.engine.connect() as c:
            return dict(c.execute(select(ARTICLE_PAGES.c.uid, ARTICLE_PAGES.c.signature)).all())

    def record_pages(self, rendered: Sequence[tuple[str, str]]) -> None:
        """Remember (uid, signature) of pages written."""
        for i in range(0, len(rendered), _CHUNK):
            chunk = rendered[i : i + _CHUNK]
            with self.engine.begin() as c:
                c.execute(delete(ARTICLE_PAGES).where(ARTICLE_PAGES.c.uid.in_([uid for uid, _ in chunk])))
                c.execute(insert(ARTICLE_PAGES), [{"uid": uid, "signature": sig} for uid, sig in chunk])

    def forget_pages(self, uids: Sequence[str]) -> None:
        if uids:
            with self.engine.begin() as c:
                for i in range(0, len(uids), _CHUNK):
                    c.execute(delete(ARTICLE_PAGES).where(ARTICLE_PAGES.c.uid.in_(uids[i : i + _CHUNK])))

    # ---- archive pages

    def archive_pages(self, feed: str) -> list[list[int]]:
        """The feed's archive pages, oldest first, each the entry ids in archiving order."""
        q = select(A.c.page, A.c.entry_id).where(A.c.feed == feed).order_by(A.c.page, A.c.seq)
        pages: dict[int, list[int]] = {}
        with self.engine.connect() as c:
            for page, entry_id in c.execute(q):
                pages.setdefault(page, []).append(entry_id)
        return [pages[n] for n in sorted(pages)]

    def archive_entries(self, feed: str, placed: Sequence[tuple[int, int]]) -> None:
        """Append (entry id, page number) to the feed's archive, in this order."""
        if not placed:
            return
        with self.engine.begin() as c:
            seq = c.scalar(select(func.coalesce(func.max(A.c.seq), 0)).where(A.c.feed == feed)) or 0
            rows = [{"feed": feed, "entry_id": i, "page": p, "seq": seq + n} for n, (i, p) in enumerate(placed, 1)]
            c.execute(insert(A), rows)
