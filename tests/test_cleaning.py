"""Clean text at the boundary, limits, and the linear-time patterns: pure functions, no I/O."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from aggregator import clustering, features, text
from aggregator.cleaning import Limits, cap_new_categories, clean, clean_entry, xml_text
from aggregator.model import Enclosure, Entry, Rejected
from aggregator.sources import feeds, remote
from aggregator.sources.feeds import FeedContext, FeedError, parse_feed

ILLEGAL = "\x00\x01\x08\x0b\x0c\x0e\x1f\ud800\udfff\ufffe\uffff"


def entry(**kw) -> Entry:
    base = dict(source="s", key="guid:1", title="t", content_html="<p>c</p>", summary="c", link="http://x.test/1")
    return Entry(**(base | kw))


def legal(value: str) -> bool:
    try:
        etree.Element("x").text = value
        value.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return True


# ---------------------------------------------------------------- cleaning


def test_every_text_field_loses_xml_illegal_characters():
    e = entry(
        title=f"ctrl{ILLEGAL}title",
        summary="s\x01",
        content_html="<p>c\x02\ud800</p>",
        authors=("auth\x03or",),
        categories=("cat\x01ctl",),
        tags=("ctl\x02tag",),
        outlet="out\x04let",
        link="http://x.test/\x01a",
        image="http://x.test/i\x05.png",
        enclosure=Enclosure("http://x.test/a\x06.mp3", "audio/\x07mpeg", 10),
    )
    done = clean(e, Limits())
    c = done.entry
    assert c.title == "ctrltitle" and c.summary == "s" and c.content_html == "<p>c</p>"
    assert (c.authors, c.categories, c.tags, c.outlet) == (("author",), ("catctl",), ("ctltag",), "outlet")
    assert (c.link, c.image) == ("http://x.test/a", "http://x.test/i.png")
    assert c.enclosure == Enclosure("http://x.test/a.mp3", "audio/mpeg", 10)
    assert done.cuts and "XML" in done.cuts[0]
    assert clean(c, Limits()).entry is c and not clean(c, Limits()).cuts  # a clean entry is left alone


def test_tab_cr_lf_and_astral_characters_stay():
    e = entry(title="a\tb\r\nc 😀 \U0010fffd")
    assert clean(e, Limits()).entry is e


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,<script>x</script>", "vbscript:x", "//x", "ftp://x/a"])
def test_image_enclosure_and_link_urls_must_be_http(url):
    c = clean(entry(link=url, image=url, enclosure=Enclosure(url, "audio/mpeg", 1)), Limits()).entry
    assert (c.link, c.image, c.enclosure) == (None, None, None)


def test_limits_cut_and_say_so():
    limits = Limits(title_chars=20, author_chars=10, authors_per_entry=2, url_chars=64, categories_per_entry=3,
                    category_chars=8, summary_chars=10, content_bytes=1024)  # fmt: skip
    e = entry(
        title="x" * 100,
        summary="y" * 50,
        content_html="<p>" + "z" * 5000 + "</p>",
        authors=("a", "b", "c"),
        categories=("keepme-long-configured", *(f"c{i}" for i in range(10)), "much-too-long-name"),
        link="http://x.test/" + "p" * 100,
    )
    done = clean(e, limits, keep=("keepme-long-configured",))
    c = done.entry
    assert len(c.title) == 20 and c.title.endswith("…") and len(c.summary) == 10
    assert c.authors == ("a", "b") and c.link is None
    assert c.categories == ("keepme-long-configured", "c0", "c1", "c2")  # configured ones always stay
    assert len(c.content_html.encode()) <= 1024 and c.content_html.startswith("<p>zzz")
    joined = " | ".join(done.cuts)
    for word in ("title cut", "summary cut", "content cut", "category names cut to 3", "longer than 8", "link URL"):
        assert word in joined, word
    assert clean(c, limits, keep=("keepme-long-configured",)).entry == c  # idempotent


def test_3000_categories_become_20():
    spam = tuple(f"spam category {i}" for i in range(3000))
    c = clean(entry(categories=(*spam, "flood")), Limits(), ("flood",))
    assert len(c.entry.categories) == 21 and "flood" in c.entry.categories
    assert "3,000 category names cut to 20" in " ".join(c.cuts)


def test_clean_entry_rejects_instead_of_raising(caplog):
    assert isinstance(clean_entry(entry(key="guid:\ud800"), Limits()), Rejected)
    bad = clean_entry(entry(title=None), Limits())  # type: ignore[arg-type]
    assert isinstance(bad, Rejected) and bad.source == "s" and bad.where == "http://x.test/1"
    ok = clean_entry(entry(title="a\x01b", categories=tuple(map(str, range(30)))), Limits())
    assert isinstance(ok, Entry) and ok.title == "ab"
    assert "source=s" in caplog.text and "cut to 20" in caplog.text


def test_new_categories_per_day_budget():
    es = [entry(key=str(i), categories=("old", f"n{i}", f"n{i + 1}", "mine")) for i in range(5)]
    out, dropped = cap_new_categories(es, {"old", "mine"}, 3)
    assert [e.categories for e in out][:2] == [("old", "n0", "n1", "mine"), ("old", "n1", "n2", "mine")]
    assert out[2].categories == ("old", "n2", "mine") and dropped == ["n3", "n4", "n5"]
    assert cap_new_categories(es, set(), 0)[0][0].categories == ()


# ---------------------------------------------------------------- property tests

TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=200)


@given(TEXT, st.lists(TEXT, max_size=30), TEXT)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_clean_output_is_xml_legal_and_idempotent(title, cats, url):
    e = entry(title=title, summary=title, content_html=title, categories=tuple(cats), tags=tuple(cats),
              authors=tuple(cats[:3]), link=url, image=url, outlet=title or None)  # fmt: skip
    once = clean(e, Limits(title_chars=50, category_chars=20, categories_per_entry=5)).entry
    for value in (once.title, once.summary, once.content_html, *once.categories, *once.tags, *once.authors,
                  once.link or "", once.image or "", once.outlet or ""):  # fmt: skip
        assert legal(value)
    assert clean(once, Limits(title_chars=50, category_chars=20, categories_per_entry=5)).entry == once
    assert xml_text(xml_text(title)) == xml_text(title)


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_parse_feed_raises_only_feed_error_on_arbitrary_bytes(body):
    for ctype in ("application/xml", "application/feed+json"):
        try:
            parsed = parse_feed(body, {"Content-Type": ctype}, FeedContext("s", "http://x.test/f"))
        except FeedError:
            continue
        for item in parsed.items:
            assert legal(item.entry.title) and all(legal(c) for c in item.entry.categories)


FEEDISH = st.builds(
    lambda title, cat, guid: (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item>'
        f"<title>{title}</title><category>{cat}</category><guid>{guid}</guid></item></channel></rss>"
    ).encode("utf-8", "surrogatepass"),
    TEXT,
    TEXT,
    TEXT,
)


@given(FEEDISH)
@settings(max_examples=200, deadline=None)
def test_parse_feed_on_feed_shaped_garbage(body):
    try:
        parsed = parse_feed(body, {}, FeedContext("s", "http://x.test/f"))
    except FeedError:
        return
    for item in parsed.items:
        assert legal(item.entry.title) and (item.guid is None or legal(item.guid))


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_canonical_url_is_an_http_url_or_none_and_idempotent(value):
    for url in (value, "http://x.test/" + value, "https://" + value):
        c = features.canonical_url(url)
        if c is not None:
            assert c.startswith(("http://", "https://"))
            assert features.canonical_url(c) == c


@given(st.text(max_size=100))
@settings(max_examples=300, deadline=None)
def test_slugify_is_ascii_words_joined_by_dashes(name):
    slug = text.slugify(name)
    assert slug == text.slugify(name)
    assert all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in slug) and slug == slug.lower()
    assert not slug.startswith("-") and not slug.endswith("-") and "--" not in slug


# ---------------------------------------------------------------- linear time on crafted input

N = 100_000


def quick(fn, *args, limit: float = 3.0):
    started = time.perf_counter()
    fn(*args)
    took = time.perf_counter() - started
    assert took < limit, f"{took:.1f} s"


CRAFTED = ["<script" * (N // 7), "&lt;script" * (N // 10), "<style " * (N // 7), "<!--" * (N // 4), "<br" * (N // 3),
           "<br " + "x" * N, "<script>" + "</scrip" * (N // 7)]  # fmt: skip


@pytest.mark.parametrize("crafted", CRAFTED)
def test_text_patterns_are_linear(crafted):
    import html

    quick(text.plain_text, crafted)
    quick(text.plain_text, html.unescape(crafted))
    quick(text.summarize, crafted)
    quick(features.normalized_text, crafted)


def test_drop_scripts_keeps_what_is_outside():
    assert text.drop_scripts("a<SCRIPT src=x>evil()</script >b<!-- c -->d<style>e") == "a b d "
    assert text.drop_scripts("plain") == "plain"


def test_dedup_patterns_are_linear():
    quick(features.canonical_url, "http://x.test/" + "/" * N + "a")
    quick(clustering.title_core, "【" * N)
    quick(clustering.title_core, " " * N + "re" + " " * N)
    quick(clustering.title_tokens, "中" * N)
    quick(features.normalized_text, ("来源" + " " * 50 + "\n") * (N // 50))
    quick(features.normalized_text, "source" + " " * N)


def test_feed_and_remote_patterns_are_linear():
    quick(feeds._charset_override, b"<?xml " + b" " * N, {"content-type": "charset" + " " * N})
    quick(feeds._charset_override, b"", {"content-type": "charset=" * (N // 8)})
    quick(feeds._as_html, {"value": ("\n" + " " * 100 + "x") * (N // 100), "type": "text/plain"})
    quick(feeds._as_html, {"value": "\n" + "\t" * N, "type": "text/plain"})
    quick(remote.parse_max_age, "," + " " * N)
    quick(remote.parse_max_age, ", max-age" * (N // 9))
    quick(text.slugify, "a-" * N)


def test_an_atom_html_title_of_400_kb_of_script_is_quick():
    doc = (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>q</title><id>urn:q</id>'
        '<updated>2022-09-05T00:00:00Z</updated><entry><title type="html">' + "&lt;script" * 40_000 + "</title>"
        '<id>urn:q:1</id><updated>2022-09-05T00:00:00Z</updated><link href="http://x.test/q1"/><summary>s</summary>'
        "</entry><entry><title>Neighbour</title><id>urn:q:2</id><updated>2022-09-05T00:00:00Z</updated>"
        '<link href="http://x.test/q2"/></entry></feed>'
    ).encode()
    started = time.perf_counter()
    parsed = parse_feed(doc, {}, FeedContext("q", "http://x.test/"))
    assert time.perf_counter() - started < 5
    assert [i.entry.title for i in parsed.items][1] == "Neighbour"


# ---------------------------------------------------------------- feeds apply them


def rss(items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/">'
        f"<channel><title>t</title><link>http://x.test/</link><description>d</description>{items}</channel></rss>"
    ).encode()


def test_feed_items_are_cleaned_and_limited():
    cats = "".join(f"<category>spam {i}</category>" for i in range(3000))
    body = rss(
        f"<item><title>rss &#1; title</title><guid>g&#1;1</guid><link>http://x.test/1</link>{cats}"
        '<enclosure url="javascript:alert(3)" length="10" type="audio/mpeg"/>'
        '<media:thumbnail url="javascript:alert(4)"/></item>'
        "<item><title>ok</title><guid>g2</guid><link>http://x.test/2</link></item>"
    )
    p = parse_feed(body, {}, FeedContext("s", "http://x.test/f", ("flood",)))
    first = p.items[0]
    assert first.entry.title == "rss  title" and first.guid == "g1"
    assert len(first.entry.categories) == 21 and first.entry.categories[-1] == "flood"
    assert first.entry.image is None and first.entry.enclosure is None
    assert any("cut to 20" in c for c in p.cuts)


def test_a_source_may_ignore_the_feeds_categories_and_cap_entries():
    body = rss("".join(f"<item><title>i{n}</title><guid>{n}</guid><category>c{n}</category></item>" for n in range(9)))
    p = parse_feed(body, {}, FeedContext("s", "http://x.test/f", ("mine",), {}, Limits(entries_per_fetch=4), False))
    assert [i.entry.title for i in p.items] == ["i0", "i1", "i2", "i3"]
    assert {i.entry.categories for i in p.items} == {("mine",)}
    assert "only the first 4 kept" in p.cuts[0]


def test_json_feed_surrogate_and_controls_are_cleaned():
    import json

    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": [
        {"id": "s\ud8001", "url": "http://x.test/s1", "title": "lone \ud800 surrogate", "tags": ["ctl\u0002tag"],
         "authors": [{"name": "auth\u0003or"}], "image": "data:image/png;base64,AAAA", "content_text": "b"},
        {"id": "s2", "url": "http://x.test/s2", "title": "neighbour", "content_text": "b2"}]}  # fmt: skip
    p = parse_feed(json.dumps(doc).encode(), {"Content-Type": "application/feed+json"}, FeedContext("s", "http://x.test/"))
    a, b = (i.entry for i in p.items)
    assert (a.title, a.categories, a.authors, a.image) == ("lone  surrogate", ("ctltag",), ("author",), None)
    assert p.items[0].guid == "s1" and b.title == "neighbour"
    assert all(legal(v) for v in (a.title, *a.categories, *a.authors))
    assert a.published is None or a.published.tzinfo == UTC
    assert isinstance(a.published, datetime | None)
