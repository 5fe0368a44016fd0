"""How this project runs feedparser: one change of behaviour and four shortcuts, applied once on import.

feedparser stays the parser of record; nothing here parses. Each change touches one of its
module globals or class attributes. Should a later feedparser move one, that change is simply not
applied: ids would be resolved again, or parsing would be that much slower, never wrong. Each
shortcut answers exactly what the code it stands in for would (tests hold them to it); together
they take 20–30 % off feedparser's time per item of a typical feed (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import types

import feedparser.mixin
import feedparser.util

# A guid is an opaque identifier. feedparser resolves a permalink guid against the URL the feed
# was fetched from, so a relative one ("r1") would change identity whenever the feed moves and
# every item would come back as new. Keep ids as written (`feeds` resolves links itself).
_mixin = getattr(feedparser.mixin, "_FeedParserMixin", None)
if _mixin is not None and "id" in getattr(_mixin, "can_be_relative_uri", ()):
    _mixin.can_be_relative_uri = set(_mixin.can_be_relative_uri) - {"id"}

# At every start tag feedparser joins the element's xml:base onto the current base with its
# `_urljoin` (a regular expression, then `urljoin`), even when both are empty, as they are on
# every element of a document without xml:base (it is handed no base URL: `feeds` resolves links
# itself). "" joined to "" is "": answered directly (≈ 7 % of its time per item).
_join = getattr(feedparser.mixin, "_urljoin", None)


def urljoin(base, uri, _join=_join):
    """feedparser's `_urljoin`, with the empty case answered directly."""
    if base == "" and uri == "":
        return ""
    return _join(base, uri)


if callable(_join) and getattr(_join, "__module__", "") == "feedparser.urls":
    feedparser.mixin._urljoin = urljoin

# At the end of each title, summary and content element feedparser deep-copies the element's
# parameters (type, language, base: strings or None) into the entry: `copy.deepcopy` goes through
# its generic reduce-and-rebuild protocol for those three strings (≈ 10 % of its time per item).
# A FeedParserDict of nothing but strings and None, with no attributes of its own, is rebuilt
# directly: strings are immutable, so a new dict of the same items is exactly the deep copy.
_FPDict = getattr(feedparser.util, "FeedParserDict", None)


def deepcopy(value, memo=None, _deepcopy=copy.deepcopy):
    """`copy.deepcopy`, with a flat FeedParserDict of strings copied directly."""
    if type(value) is _FPDict and not value.__dict__ and all(v is None or type(v) is str for v in dict.values(value)):
        return _FPDict(dict.items(value))
    return _deepcopy(value, memo)


if _FPDict is not None and getattr(feedparser.mixin, "copy", None) is copy:
    feedparser.mixin.copy = types.SimpleNamespace(**{**vars(copy), "deepcopy": deepcopy})

# Every key feedparser reads or tests on its own dicts (about 70 per item) goes through
# FeedParserDict's alias handling: five special keys, then the `keymap` of old names. A key that
# is neither is an ordinary dict key, and is looked up as one (≈ 10 % of its time per item).
if _FPDict is not None and isinstance(getattr(_FPDict, "keymap", None), dict):
    _ALIASED = frozenset({"category", "enclosures", "license", "updated", "updated_parsed", *_FPDict.keymap})
    _get, _getitem, _contains = _FPDict.get, _FPDict.__getitem__, _FPDict.__contains__

    def _fast_get(self, key, default=None):
        if key.__class__ is str and key not in _ALIASED:
            return dict.get(self, key, default)
        return _get(self, key, default)

    def _fast_getitem(self, key):
        if key.__class__ is str and key not in _ALIASED:
            return dict.__getitem__(self, key)
        return _getitem(self, key)

    def _fast_contains(self, key):
        if key.__class__ is str and key not in _ALIASED:
            return dict.__contains__(self, key)
        return _contains(self, key)

    ORIGINAL_LOOKUPS = {"get": _get, "__getitem__": _getitem, "__contains__": _contains}
    _FPDict.get, _FPDict.__getitem__, _FPDict.__contains__ = _fast_get, _fast_getitem, _fast_contains

# feedparser maps the C1 controls that cp1252 uses for printable characters (0x80 → €, …) in
# every element's text with `str.translate` and a dict of those 27: every other character of
# the text is a failed lookup, and a failed lookup raises and clears a KeyError inside CPython,
# per character (slow on CJK text, where no character is ASCII). A string of the whole Basic
# Multilingual Plane (128 KB), the same 27 remapped and every other character mapped to itself,
# gives the same text without the exceptions (≈ 4 % of its time per item). Characters beyond
# U+FFFF are past its end, which `translate` treats as unmapped, as the dict's misses.
_cp1252 = getattr(feedparser.mixin, "_cp1252", None)
if isinstance(_cp1252, dict) and all(type(k) is int and k < 0x10000 and type(v) is str for k, v in _cp1252.items()):
    ORIGINAL_CP1252 = _cp1252
    feedparser.mixin._cp1252 = "".join(_cp1252.get(i, chr(i)) for i in range(0x10000))
