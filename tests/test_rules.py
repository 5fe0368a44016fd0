"""Republishing rules, as pure functions: compiling the config's tables and applying them."""

from __future__ import annotations

import pytest

from aggregator.model import Entry
from aggregator.rules import RuleError, apply, compile_rules, remove_elements

CONTENT = '<p>Body text.</p><div class="ad">AD</div><p class="share">SHARE</p><p>Tail text.</p>'


def entry(title: str = "Council approves bridge", source: str = "wire", **kw) -> Entry:
    kw.setdefault("content_html", CONTENT)
    kw.setdefault("summary", "The council voted.")
    return Entry(source=source, key=title, title=title, **kw)


def test_block_matches_every_given_field_and_only_its_sources():
    rules = compile_rules([{"sources": ["wire"], "when": {"title": "(?i)sponsored|广告", "url": "/ads/"},
                            "action": "block"}])
    hit = apply(rules, entry("Sponsored: buy now", link="http://x.example/ads/1"))
    assert hit.blocked == "blocked by rules[0] (block)" and hit.fired == ["rules[0] (block)"]
    assert apply(rules, entry("Sponsored: buy now", link="http://x.example/news/1")).blocked is None  # url differs
    assert apply(rules, entry("今日广告特惠", link="http://x.example/ads/2")).blocked is not None
    assert apply(rules, entry("今日广告特惠", source="other", link="http://x.example/ads/2")).blocked is None


def test_keep_passes_only_matching_entries_of_its_sources():
    rules = compile_rules([{"sources": ["wire"], "when": {"title": "bridge|harbour"}, "action": "keep"}])
    assert apply(rules, entry("Council approves bridge")).blocked is None
    assert apply(rules, entry("Sports results")).blocked == "not kept by rules[0] (keep)"
    assert apply(rules, entry("Sports results", source="other")).blocked is None


def test_remove_replace_and_categories_in_order():
    rules = compile_rules([
        {"action": "remove", "selector": "div.ad, p.share"},
        {"action": "replace", "field": "title", "pattern": r"^\[(\w+)\] (.*)", "replacement": r"\2 (\1)"},
        {"when": {"categories": "^sport$"}, "action": "set_category", "category": "Sport"},
        {"when": {"title": "bridge"}, "action": "add_category", "category": "  Picked  "},
    ])
    out = apply(rules, entry("[Wire] Council approves bridge", categories=("sport", "x")))
    assert out.entry.content_html == "<p>Body text.</p><p>Tail text.</p>"
    assert out.entry.title == "Council approves bridge (Wire)"
    assert out.entry.categories == ("Sport", "Picked")
    assert out.blocked is None and len(out.fired) == 4


def test_authors_and_categories_match_any_one_value():
    rules = compile_rules([{"when": {"author": "^Bob$"}, "action": "block"}])
    assert apply(rules, entry(authors=("Ann", "Bob"))).blocked
    assert not apply(rules, entry(authors=("Ann", "Bobby"))).blocked


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"action": "explode"}, "rules[0].action"),
        ({"action": "block", "when": {"body": "x"}}, "rules[0].when.body"),
        ({"action": "block", "when": {"title": "(unclosed"}}, "rules[0].when.title"),
        ({"action": "block", "when": {"title": r"(a)\1"}}, "rules[0].when.title"),  # backreferences: not RE2
        ({"action": "remove"}, "rules[0].selector"),
        ({"action": "remove", "selector": "div[["}, "rules[0].selector"),
        ({"action": "replace", "field": "url", "pattern": "x"}, "rules[0].field"),
        ({"action": "add_category", "category": " "}, "rules[0].category"),
        ({"action": "block", "sources": ["nope"]}, "rules[0].sources"),
        ({"action": "block", "selector": "p"}, "rules[0].selector"),
    ],
)
def test_bad_rules_are_named(table: dict, named: str):
    with pytest.raises(RuleError, match=named.replace("[", r"\[").replace("]", r"\]")):
        compile_rules([table], known_sources=["wire"])


def test_a_catastrophic_pattern_runs_in_linear_time():
    rules = compile_rules([{"when": {"content": "(a+)+$b"}, "action": "block"}])
    # RE2, not `re`: a backtracking engine would not return from this input (no clock in the test:
    # the engine is what guarantees the time).
    assert type(rules[0].when[0][1]).__module__.startswith("re2")
    assert apply(rules, entry(content_html="a" * 200_000 + "!")).blocked is None


def test_remove_elements_keeps_the_text_around_and_leaves_unmatched_html_alone():
    assert remove_elements("<p>a<span class='x'>b</span>c</p>", "span.x") == "<p>ac</p>"
    assert remove_elements("<p>a</p>", "div.none") == "<p>a</p>"
    assert remove_elements("", "p") == ""
