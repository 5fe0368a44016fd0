"""Which aiohttp session a fetch goes through, and following a page to the feed it links to.

Sessions differ by connector: the guarded one refuses private addresses (`netpolicy`), the open
one serves sources allowed them and requests sent through an HTTP proxy (the connection then
goes to the proxy, and the target is checked in `remote.fetch_one`), and a SOCKS proxy is a
connector of its own (aiohttp-socks, an optional dependency).
"""

from __future__ import annotations

from dataclasses import replace

from .remote import FetchRequest, FetchResult, fetch_one


class ProxyUnavailable(Exception):
    pass


def session_kind(req: FetchRequest) -> tuple[str, str]:
    """Which session a request goes through: ("socks", proxy URL), ("open", "") for sources
    allowed private addresses or sent through an HTTP proxy, ("guarded", "") otherwise."""
    from .httpopts import is_socks, proxy_for

    proxy = proxy_for(req.url, req.proxy)
    if is_socks(proxy):
        return ("socks", proxy or "")
    return ("open", "") if req.allow_private or proxy else ("guarded", "")


def socks_connector(proxy: str, **kwargs):
    try:
        from aiohttp_socks import ProxyConnector
    except ImportError:
        need = "a socks proxy needs the aiohttp-socks package: pip install 'aggregator[socks]'"
        raise ProxyUnavailable(need) from None
    # socks5h: the proxy resolves names, as curl does; socks5: resolved here.
    return ProxyConnector.from_url(proxy.replace("socks5h://", "socks5://"), rdns=proxy.startswith("socks5h"), **kwargs)


async def follow_discovery(session_for, req: FetchRequest, result: FetchResult, max_bytes: int) -> FetchResult:
    """When a source's URL answers with an HTML page, fetch the feed the page links to instead
    (see `discovery`); the result then names the page it was found on."""
    from .discovery import choose, discover, looks_like_html

    if not (req.discover and result.status == 200 and result.body and result.error is None):
        return result
    if not looks_like_html((result.headers or {}).get("content-type"), result.body):
        return result
    page = result.final_url or req.url
    link = choose(discover(result.body, page), req.prefer)
    if link is None:
        return replace(
            result,
            body=None,
            error='an HTML page, not an RSS, Atom or JSON feed, and it links to none (no <link rel="alternate">)',
        )
    feed_req = replace(req, url=link.url, etag=None, last_modified=None, discover=False)
    try:
        session = session_for(feed_req)
    except ProxyUnavailable as e:
        return FetchResult(req.name, link.url, None, error=str(e), page=page)
    found = await fetch_one(session, feed_req, max_bytes)
    return replace(found, page=page, seconds=found.seconds + result.seconds)
