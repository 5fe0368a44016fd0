"""Republishing rules in the pipeline, as pure functions: rewrites where a feed item is parsed,
block and keep verdicts on stored entries, which feed terms become categories, and the
full-text step's decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.categorymap import count_dropped, sort_terms
from aggregator.fullpages import MAX_ATTEMPTS, after_fetch, due, with_articles
from aggregator.hiding import changed_verdicts
from aggregator.model import Entry
from aggregator.rules import compile_rules, fingerprint, rewrite, verdict
from aggregator.sources.feeds import FeedContext, ParsedItem, parse_feed
from aggregator.store import CachedPage, RuleSubject

NOW = datetime(2024, 9, 2, 12, tzinfo=UTC)


def rss(*items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>wire</title>'
        "<link>http://w.example/</link><description>d</description>" + "".join(items) + "</channel></rss>"
    ).encode()


def item(title: str, link: str, content: str = "", cats: tuple[str, ...] = ()) -> str:
    tags = "".join(f"<category>{c}</category>" for c in cats)
    body = f"<content:encoded><![CDATA[{content}]]></content:encoded>" if content else ""
    head = f"<item><title>{title}</title><link>{link}</link><guid>{link}</guid>"
    return f"{head}{tags}<description>teaser</description>{body}</item>"


def parse(body: bytes, rules=(), **ctx):
    compiled = compile_rules(rules)
    return parse_feed(body, {}, FeedContext("wire", "http://w.example/feed", rules=compiled, **ctx)).items


# ---------------------------------------------------------------- rewrites at parse time


def test_remove_sees_the_classes_sanitizing_would_drop():
    content = '<p>Body.</p><div class="ad">AD</div><p class="share">SHARE</p><p>Tail.</p>'
    rules = [{"action": "remove", "selector": "div.ad, p.share"}]
    [it] = parse(rss(item("Bridge", "http://w.example/b", content)), rules)
    assert "AD" not in it.entry.content_html and "SHARE" not in it.entry.content_html
    assert "Body." in it.entry.content_html and "Tail." in it.entry.content_html
    [plain] = parse(rss(item("Bridge", "http://w.example/b", content)))  # without the rule: all of it
    assert "AD" in plain.entry.content_html and 'class="ad"' not in plain.entry.content_html


def test_replace_and_categories_apply_in_order_to_their_sources_only():
    rules = [
        {"action": "replace", "field": "title", "pattern": r"^\[(\w+)\] ", "replacement": ""},
        {"sources": ["wire"], "when": {"title": "^Bridge"}, "action": "add_category", "category": "Picked"},
        {"sources": ["other"], "action": "set_category", "category": "Never"},
        {"when": {"url": "/sport/"}, "action": "set_category", "category": "Sport"},
    ]
    a, b = parse(rss(item("[Wire] Bridge opens", "http://w.example/b"), item("Match", "http://w.example/sport/1")),
                 rules, categories=("World",))  # fmt: skip
    assert a.entry.title == "Bridge opens" and a.entry.categories == ("World", "Picked")
    assert b.entry.title == "Match" and b.entry.categories == ("Sport",)


def test_block_and_keep_are_not_applied_at_parse_time():
    rules = [{"when": {"title": "Sponsored"}, "action": "block"}]
    [it] = parse(rss(item("Sponsored: buy", "http://w.example/p")), rules)
    assert it.entry.title == "Sponsored: buy"  # stored, to be hidden by its verdict


# ---------------------------------------------------------------- verdicts on stored entries


def entry(title: str, source: str = "wire", **kw) -> Entry:
    return Entry(source, title, title, kw.pop("content_html", ""), kw.pop("summary", ""), **kw)


def test_block_wins_over_keep_and_keep_only_binds_its_sources():
    rules = compile_rules([
        {"sources": ["third"], "when": {"title": "^Keep"}, "action": "keep"},
        {"when": {"title": "(?i)sponsored|广告", "url": "/promo/"}, "action": "block"},
    ])  # fmt: skip
    assert verdict(rules, entry("Keep this", "third")) is None
    assert verdict(rules, entry("Drop this", "third")) == "not kept by rules[0] (keep)"
    assert verdict(rules, entry("Drop this", "wire")) is None
    assert verdict(rules, entry("Keep: sponsored", "third", link="http://x/promo/1")) == "blocked by rules[1] (block)"
    assert verdict(rules, entry("今日广告", link="http://x/promo/2")) == "blocked by rules[1] (block)"
    assert verdict(rules, entry("今日广告", link="http://x/news/2")) is None  # every field given must match


def test_changed_verdicts_reports_only_differences_both_ways():
    rules = compile_rules([{"when": {"categories": "^Ads$"}, "action": "block"}])
    subjects = [
        RuleSubject(1, entry("a", categories=("Ads",)), None),  # newly hidden
        RuleSubject(2, entry("b"), "blocked by rules[3] (block)"),  # shown again
        RuleSubject(3, entry("c", categories=("Ads",)), "blocked by rules[0] (block)"),  # unchanged
        RuleSubject(4, entry("d"), None),  # unchanged
    ]
    assert changed_verdicts(rules, subjects) == {1: "blocked by rules[0] (block)", 2: None}
    assert changed_verdicts((), subjects) == {2: None, 3: None}


def test_the_fingerprint_follows_block_and_keep_rules_only():
    block = {"when": {"title": "x"}, "action": "block"}
    rewrite_rule = {"action": "add_category", "category": "C"}
    assert fingerprint([block]) == fingerprint([block, rewrite_rule])
    assert fingerprint([block]) != fingerprint([rewrite_rule, block])  # its position names it
    assert fingerprint([block]) != fingerprint([{**block, "action": "keep"}])
    assert fingerprint([]) == fingerprint([rewrite_rule])


def test_rewrite_leaves_an_entry_no_rule_matches_untouched():
    e = entry("Plain", content_html="<p>x</p>")
    assert rewrite(compile_rules([{"when": {"title": "Other"}, "action": "remove", "selector": "p"}]), e) is e


# ---------------------------------------------------------------- feed categories


@pytest.mark.parametrize(
    ("mode", "kept", "dropped"),
    [
        ("map", ["Sport", "Economy"], ["随机标签", "misc"]),  # aliases and [categories] names, any case
        ("keep", ["Sport", "随机标签", "economy", "misc"], []),  # every term; aliases still apply
        ("ignore", [], []),
        (True, ["Sport", "随机标签", "economy", "misc"], []),  # the old spelling of keep
        (False, [], []),  # and of ignore
    ],
)
def test_feed_terms_by_mode(mode, kept, dropped):
    known = {"economy": "Economy"}  # named in [categories]
    aliases = {"体育": "Sport", "sport": "Sport"}
    terms = ["sport", "体育", "随机标签", " economy ", "misc", "随机标签"]
    k, d = sort_terms(terms, mode, known, aliases)
    assert list(dict.fromkeys(k)) == kept and d == dropped


def test_map_mode_keeps_named_terms_through_the_parser_and_remembers_the_rest():
    body = rss(item("Bridge", "http://w.example/b", cats=("sport", "Economy", "随机标签")))
    [it] = parse(body, feed_categories="map", known={"economy": "Economy"}, categories=("World",))
    assert it.entry.categories == ("Economy", "World") and it.entry.dropped == ("sport", "随机标签")
    [it] = parse(body, feed_categories="ignore", categories=("World",))
    assert it.entry.categories == ("World",) and it.entry.dropped == ()


def test_dropped_terms_are_counted_once_per_entry():
    assert count_dropped([["sport", "随机标签"], ["sport", "sport"], ["随机标签"], ["x"]]) == [
        ("sport", 2), ("随机标签", 2), ("x", 1)]  # fmt: skip


# ---------------------------------------------------------------- full text decisions


def page(url: str, content: str | None = None, retry: datetime | None = None, attempts: int = 0) -> CachedPage:
    return CachedPage(url, 200 if content else 503, content, None if content else "HTTP 503", attempts, NOW, retry)


def test_a_page_is_fetched_once_and_a_failure_only_when_due_again():
    cached = {
        "http://x/a": page("http://x/a", "<p>article</p>"),
        "http://x/b": page("http://x/b", retry=NOW - timedelta(seconds=1), attempts=1),
        "http://x/c": page("http://x/c", retry=NOW + timedelta(hours=1), attempts=1),
        "http://x/d": page("http://x/d", retry=None, attempts=MAX_ATTEMPTS),
    }
    urls = ["http://x/a", "http://x/b", "http://x/c", "http://x/d", "http://x/new", "http://x/new"]
    assert due(urls, cached, NOW) == ["http://x/b", "http://x/new"]


def test_after_fetch_keeps_articles_retries_what_may_pass_and_gives_up_on_the_rest():
    ok = after_fetch("u", 200, "<p>a</p>", None, {"etag": '"e"'}, None, NOW)
    assert ok.content == "<p>a</p>" and ok.retry_at is None and ok.etag == '"e"'
    gone = after_fetch("u", 404, None, "HTTP 404", {}, None, NOW)
    assert gone.content is None and gone.retry_at is None and gone.error == "HTTP 404"
    busy = after_fetch("u", 503, None, "HTTP 503", {}, None, NOW)
    assert busy.retry_at == NOW + timedelta(hours=1) and busy.attempts == 1
    again = after_fetch("u", None, None, "timed out", {}, busy, NOW)
    assert again.retry_at == NOW + timedelta(hours=2) and again.attempts == 2
    last = after_fetch("u", 503, None, "HTTP 503", {}, page("u", attempts=MAX_ATTEMPTS - 1), NOW)
    assert last.retry_at is None
    empty = after_fetch("u", 200, None, "no article found on the page", {"etag": '"p"'}, None, NOW)
    assert empty.retry_at is not None and empty.etag == '"p"'  # a placeholder may be finished later
    kept = after_fetch("u", 304, None, None, {}, empty, NOW + timedelta(days=1))
    assert kept.content is None and kept.retry_at is None and kept.error == empty.error


def test_with_articles_swaps_the_content_and_keeps_the_teaser_summary():
    teaser = Entry("t", "k", "T", "<p>teaser</p>", "teaser", link="http://x/a")
    other = Entry("t", "k2", "U", "<p>teaser 2</p>", "teaser 2", link="http://x/b")
    items = [ParsedItem(teaser, "g", "http://x/a", "f"), ParsedItem(other, "g2", "http://x/b", "f2")]
    pages = {"http://x/a": page("http://x/a", "<p>the article</p>"), "http://x/b": page("http://x/b")}
    a, b = with_articles(items, pages, 1024)
    assert a.entry.content_html == "<p>the article</p>" and a.entry.summary == "teaser"
    assert b.entry is other
    [too_big] = with_articles(items[:1], pages, 10)
    assert too_big.entry is teaser
