"""`text.absolute_url` takes a shortcut for links that are already absolute: it must answer
exactly what `urljoin` would, whatever the link."""

from __future__ import annotations

from urllib.parse import urljoin

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.text import absolute_url

PIECES = [
    "http://", "https://", "HTTP://", "x.org", "例子.中国", "/", "a", "?", "#", ";", "=", "&", ".", "..", "[", "]",
    ":8080", "%20", " ", "\t", "\n", "\x00", "\x7f", "é", "@", "//",
]  # fmt: skip
BASES = ["http://base.example/dir/page.html", "https://base.example/", "http://base.example/a;p?q#f"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12), st.sampled_from(BASES))
def test_the_shortcut_answers_what_urljoin_answers(parts, base):
    url = "".join(parts)
    try:
        expected = urljoin(base, url.strip()) if url.strip() and not url.strip().startswith("#") else url.strip()
    except ValueError:
        expected = ValueError
    try:
        got = absolute_url(url, base)
    except ValueError:
        got = ValueError
    assert got == expected


def test_common_links():
    base = "http://site.example/news/"
    assert absolute_url("https://cdn.example/img/1.jpg", base) == "https://cdn.example/img/1.jpg"
    assert absolute_url("/img/1.jpg", base) == "http://site.example/img/1.jpg"
    assert absolute_url("//cdn.example/x", base) == "http://cdn.example/x"
    assert absolute_url("http://a.example/x?", base) == "http://a.example/x"  # urljoin's empty query dropped
