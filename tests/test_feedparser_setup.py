"""feedparser's shortcuts (`sources.feedparser_setup`) answer exactly what feedparser itself would."""

import copy
from pathlib import Path

import feedparser
import feedparser.mixin
import pytest
from feedparser.urls import _urljoin as feedparser_urljoin
from feedparser.util import FeedParserDict
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.sources import feedparser_setup as setup

FEEDS = sorted(p for p in (Path(__file__).parent / "data" / "feeds").iterdir() if p.suffix in (".xml", ".rdf"))
bases = st.sampled_from(["", "http://a.test/b/", "https://a.test/x?y#z", "rel/", "//h.test/"]) | st.text(max_size=30)
uris = st.sampled_from(["", "c.html", "/d", "http://e.test/f", "HTTP:////g.test/h"]) | st.text(max_size=30)


def test_the_shortcuts_are_in_place():
    # Otherwise the tests below would compare feedparser with itself.
    assert feedparser.mixin._urljoin is setup.urljoin
    assert feedparser.mixin.copy.deepcopy is setup.deepcopy
    assert isinstance(feedparser.mixin._cp1252, str)
    assert all(getattr(FeedParserDict, name).__module__ == setup.__name__ for name in setup.ORIGINAL_LOOKUPS)


@settings(max_examples=300)
@given(bases, uris)
def test_urljoin_answers_as_feedparser_does(base, uri):
    assert setup.urljoin(base, uri) == feedparser_urljoin(base, uri)


values = st.none() | st.text(max_size=20) | st.booleans() | st.lists(st.text(max_size=5), max_size=2)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["type", "language", "base", "value", "mode"]), values, max_size=5))
def test_deepcopy_of_parameters_is_a_deep_copy(items):
    original = FeedParserDict(items)
    made = setup.deepcopy(original)
    assert made == copy.deepcopy(original) and type(made) is FeedParserDict and made is not original
    made["type"] = "changed"
    for v in made.values():
        if isinstance(v, list):
            v.append("x")  # a list inside must have been copied, not shared
    assert original == FeedParserDict(items)


@settings(max_examples=500)
@given(st.text(st.characters(min_codepoint=0x70, max_codepoint=0xA0) | st.characters(), max_size=50))
def test_cp1252_mapping_is_the_same(text):
    assert text.translate(feedparser.mixin._cp1252) == text.translate(setup.ORIGINAL_CP1252)


def test_cp1252_mapping_maps_c1_and_keeps_the_rest():
    assert "\x80\x99 中文 \U0001f600 \x81".translate(feedparser.mixin._cp1252) == "\u20ac\u2122 中文 \U0001f600 \x81"


KEYS = ["title", "links", "tags", "updated", "updated_parsed", "published", "published_parsed", "category",
        "enclosures", "license", "description", "summary", "subtitle", "url", "href", "guid", "id", "channel"]
links = st.lists(st.fixed_dictionaries({"rel": st.sampled_from(["alternate", "enclosure", "license"]),
                                        "href": st.text(max_size=5)}).map(FeedParserDict), max_size=2)
tags = st.lists(st.fixed_dictionaries({"term": st.text(max_size=5)}).map(FeedParserDict), max_size=2)


def _answer(fn):
    """(result, exception type, warning categories) of fn()."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = fn(), None
        except Exception as e:  # the original's exception is part of its answer
            result, error = None, type(e)
    return result, error, [w.category for w in caught]


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(KEYS), st.text(max_size=5), max_size=8), links, tags, st.sampled_from(KEYS))
def test_dict_lookups_answer_as_feedparser_does(items, link_list, tag_list, key):
    d = FeedParserDict(items)
    if link_list:
        dict.__setitem__(d, "links", link_list)
    if tag_list:
        dict.__setitem__(d, "tags", tag_list)
    original = setup.ORIGINAL_LOOKUPS
    assert _answer(lambda: d.get(key, "default")) == _answer(lambda: original["get"](d, key, "default"))
    assert _answer(lambda: d[key]) == _answer(lambda: original["__getitem__"](d, key))
    assert _answer(lambda: key in d) == _answer(lambda: original["__contains__"](d, key))


@pytest.mark.parametrize("location", ["", "http://feeds.test/dir/f.xml"])
@pytest.mark.parametrize("path", FEEDS, ids=lambda p: p.name)
def test_parsing_is_the_same_with_and_without_the_shortcuts(path, location, monkeypatch):
    body = path.read_bytes()
    headers = {"content-type": "application/xml"} | ({"content-location": location} if location else {})

    def parse():
        d = feedparser.parse(body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False)
        return d["feed"], d["entries"], d.get("bozo"), d.get("version")

    fast = parse()
    monkeypatch.setattr(feedparser.mixin, "_urljoin", feedparser_urljoin)
    monkeypatch.setattr(feedparser.mixin, "copy", copy)
    monkeypatch.setattr(feedparser.mixin, "_cp1252", setup.ORIGINAL_CP1252)
    for name, method in setup.ORIGINAL_LOOKUPS.items():
        monkeypatch.setattr(FeedParserDict, name, method)
    assert parse() == fast
