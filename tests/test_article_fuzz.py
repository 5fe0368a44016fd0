"""Property tests over arbitrary text and bytes: an article file can hold anything, and the worst
it may do is be rejected with a reason (never crash the run, never hang it)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC
from zoneinfo import ZoneInfo

import pytest
from golden_entries import CONTEXT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.model import Entry, FileStamp, Held, Rejected
from aggregator.runtime import TimeLimitExceeded, time_limit
from aggregator.sources import articles
from aggregator.sources.articles import ArticleError, parse_article, read_article
from aggregator.sources.dates import DateError, local_date, parse_date
from aggregator.sources.frontmatter import FrontMatterError, split_front_matter
from aggregator.sources.reading import read_articles
from aggregator.sources.sites import PELICAN, Site
from aggregator.sources.walk import scan

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FENCES = st.sampled_from(["---\n", "+++\n", "", "\ufeff---\r\n", "Title: x\n", "title: y\n---\n"])
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=400) | st.text(max_size=400)


@FAST
@given(head=FENCES, body=TEXT, tail=FENCES, pelican=st.booleans())
def test_front_matter_splitting_never_crashes(head: str, body: str, tail: str, pelican: bool):
    try:
        meta, rest = split_front_matter(head + body + tail + body, pelican)
    except FrontMatterError:
        return
    assert isinstance(meta, dict) and isinstance(rest, str)


@FAST
@given(value=TEXT | st.integers() | st.floats() | st.none() | st.datetimes() | st.dates())
def test_date_parsing_gives_an_aware_date_or_a_date_error(value):
    zone = ZoneInfo("Asia/Shanghai")
    try:
        got = parse_date(value, zone)
    except DateError:
        return
    assert got is None or got.tzinfo is UTC or got.utcoffset().total_seconds() == 0
    local = local_date(value, zone)
    assert local is None or local.tzinfo is not None


@FAST
@given(data=st.binary(max_size=600) | TEXT.map(lambda t: ("---\ntitle: t\n---\n" + t).encode("utf-8", "surrogatepass")))
def test_any_bytes_become_an_entry_or_a_reason(data: bytes):
    for ctx in (CONTEXT, articles.ArticleContext(**{**_fields(CONTEXT), "site": Site(PELICAN)})):
        try:
            got = parse_article(data, FileStamp("a.md", 0, len(data)), ctx)
        except ArticleError:
            continue
        assert isinstance(got, Entry | Held)


def _fields(ctx) -> dict:
    return {name: getattr(ctx, name) for name in ctx.__slots__}


def test_time_limit_interrupts_python_work():
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded), time_limit(0.05):
        while True:
            pass
    assert time.monotonic() - started < 5


def test_a_parse_past_its_time_limit_is_rejected_and_the_next_goes_on(tmp_path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "slow.md").write_text("---\ntitle: Slow\n---\nx\n", encoding="utf-8")
    (tmp_path / "fine.md").write_text("---\ntitle: Fine\n---\nx\n", encoding="utf-8")
    real = articles.parse_article

    def slow_for_one(data, stamp, ctx):
        if stamp.path == "slow.md":
            time.sleep(30)
        return real(data, stamp, ctx)

    monkeypatch.setattr(articles, "parse_article", slow_for_one)
    started = time.monotonic()
    ctx = replace(CONTEXT, parse_seconds=0.2)
    slow = read_article(tmp_path, FileStamp("slow.md", 0, 10), ctx, 1000)
    fine = read_article(tmp_path, FileStamp("fine.md", 0, 10), ctx, 1000)
    assert isinstance(slow, Rejected) and "longer than 0.2 s" in slow.reason and slow.where.endswith("slow.md")
    assert isinstance(fine, Entry) and fine.title == "Fine"
    assert time.monotonic() - started < 10


def test_control_characters_in_front_matter_are_removed(tmp_path):
    front = b'title: "ctrl\\u0001title"\nauthor: "a\\x02b"\ncategories: ["x\\x03y"]\n'
    (tmp_path / "c.md").write_bytes(b"---\n" + front + b"---\nB\n")
    got = read_article(tmp_path, FileStamp("c.md", 0, 100), CONTEXT, 1000)
    assert isinstance(got, Entry)
    assert (got.title, got.authors, got.categories) == ("ctrltitle", ("ab",), ("xy",))


def test_the_parse_time_limit_holds_off_the_main_thread_too(tmp_path):
    """The daemon reads folders on job threads, where no signal arrives: its reads go to a
    worker process, where the limit applies (a limit of a microsecond rejects every parse)."""
    import threading

    for i in range(3):
        (tmp_path / f"{i}.md").write_text(f"---\ntitle: Post {i}\n---\nbody\n", encoding="utf-8")
    ctx = replace(CONTEXT, parse_seconds=1e-6)
    got: list = []
    worker = threading.Thread(target=lambda: got.extend(read_articles(tmp_path, scan(tmp_path).files, ctx, 10_000)))
    worker.start()
    worker.join(60)
    assert len(got) == 3 and all(isinstance(r, Rejected) and "longer than" in r.reason for r in got)
