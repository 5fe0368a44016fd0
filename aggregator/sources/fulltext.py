"""The article of a web page, for sources whose feeds carry only teasers (`full_text`).

A feed item that is a title and two lines cannot be read in a feed reader, nor deduplicated by
its text. With `full_text = true` the item's page is fetched and its article extracted by
trafilatura (navigation, comments and the site's footer left out); with a CSS selector instead
(`full_text = "div.article-body"`) the first element it matches is the article. Either way
the result is sanitized and its URLs made absolute against the page, like every content.

Pure: bytes of a page in, HTML or None out. Fetching politely is the caller's job.
"""

from __future__ import annotations

from ..text import plain_text, sanitize_html

MIN_TEXT = 40  # characters of text below which an extraction is taken to have failed


class ExtractionError(ValueError):
    """No article could be found on the page; the message says why."""


def extract_article(page: bytes | str, url: str, selector: str | None = None) -> str:
    """The article of `page` (fetched from `url`) as sanitized HTML, or ExtractionError."""
    if not page:
        raise ExtractionError("the page is empty")
    raw = _by_selector(page, selector) if selector else _by_extractor(page, url)
    html = sanitize_html(raw or "", url)
    if len(plain_text(html)) < MIN_TEXT:
        raise ExtractionError("no article found on the page" + (f" (selector {selector!r})" if selector else ""))
    return html


def _by_extractor(page: bytes | str, url: str) -> str | None:
    import trafilatura

    out = trafilatura.extract(
        page, url=url, output_format="html", include_links=True, include_images=True, favor_precision=True
    )
    if not out:
        return None
    # trafilatura wraps the article in <html><body>: keep what is inside.
    start, end = out.find("<body>"), out.rfind("</body>")
    return out[start + 6 : end] if start >= 0 and end > start else out


def _by_selector(page: bytes | str, selector: str) -> str | None:
    import lxml.html
    from lxml import etree

    try:
        doc = lxml.html.document_fromstring(page)
    except (etree.ParserError, ValueError):
        return None
    found = doc.cssselect(selector)
    if not found:
        return None
    el = found[0]
    return (el.text or "") + "".join(etree.tostring(c, encoding="unicode", method="html") for c in el)
