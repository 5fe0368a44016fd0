"""Which aiohttp session a fetch goes through, and following a page to the feed it links to.

Sessions differ by connector: the guarded one refuses private addresses (`netpolicy`), the open
one serves sources allowed them and requests sent through an HTTP proxy (the connection then
goes to the proxy, and the target is checked in `remote.fetch_one`), and a SOCKS proxy is a
connector of its own (aiohttp-socks, an optional dependency).
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

from .remote import FetchRequest, FetchResult, fetch_one


def request_headers(req: FetchRequest, accept: str) -> tuple[dict[str, str], dict[str, str]]:
    """(headers for any host, headers for the source's configured host): the second adds the
    source's own headers, cookies and basic auth."""
    plain = {"User-Agent": req.user_agent, "Accept": accept}
    if req.etag:
        plain["If-None-Match"] = req.etag
    if req.last_modified:
        plain["If-Modified-Since"] = req.last_modified
    trusted = {**plain, **dict(req.headers)}
    if req.auth is not None and not req.auth.problem:
        trusted["Authorization"] = req.auth.header()
    return plain, trusted


async def hop_options(req: FetchRequest, url: str, host: str, accept: str) -> dict:
    """The `session.get` options of one hop of `req` to `url`: its headers (the source's own only
    for its configured host), its proxy, and TLS verification. Checks the target's addresses
    when the connection goes to a proxy or through the unguarded connector."""
    from .httpopts import is_socks, proxy_for, split_proxy
    from .netpolicy import check_resolved
    from .tls import context_for

    plain, trusted = request_headers(req, accept)
    guarded = session_kind(req)[0] == "guarded"  # the session's connector checks each address
    proxy = proxy_for(url, req.proxy)
    proxy_auth = None
    if proxy and not is_socks(proxy):
        proxy, proxy_auth = split_proxy(proxy)
    if (proxy or not guarded) and not req.allow_private:
        # The connection goes to the proxy, which the operator chose, or (a hop that NO_PROXY
        # exempts) through the proxied sources' unguarded connector: the policy is about the
        # target, so judge what its name resolves to here.
        await check_resolved(host, urlsplit(url).port or 80)
    # Secrets go only to the configured host, never to where a redirect points.
    own = req.trusted_host is None or host.lower() == req.trusted_host
    headers = trusted if own else plain
    # aiohttp sends `proxy_headers` only on a CONNECT (https); a plain-http request through the
    # proxy carries Proxy-Authorization itself.
    tunnel = url.lower().startswith("https:")
    if proxy_auth and not tunnel:
        headers = {**headers, "Proxy-Authorization": proxy_auth}
    return {
        "headers": headers,
        "proxy": None if is_socks(proxy) else proxy,
        "proxy_headers": {"Proxy-Authorization": proxy_auth} if proxy_auth and tunnel else None,
        "ssl": context_for(url, req.verify_tls),
    }


class Sessions:
    """The sessions of one `fetch_many`, made on first use: one per `session_kind`. Sources
    allowed private addresses and proxied ones (whose connections go to the proxy) share a
    connector without the guard, the others one that refuses private addresses (`netpolicy`);
    a SOCKS proxy is a connector of its own."""

    def __init__(self, concurrency: int):
        self.concurrency = concurrency
        self.sessions: dict[tuple[str, str], object] = {}

    def __call__(self, req: FetchRequest):
        from .netpolicy import connector
        from .tls import import_aiohttp

        aiohttp = import_aiohttp()

        kind = session_kind(req)
        if kind not in self.sessions:
            if kind[0] == "socks":
                conn = socks_connector(kind[1], limit=self.concurrency)
            else:
                conn = connector(kind[0] == "open", limit=self.concurrency, limit_per_host=0, ttl_dns_cache=300)
            # No cookie jar: a fetch sends the configured cookies only, never what a server set.
            self.sessions[kind] = aiohttp.ClientSession(
                connector=conn,
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
        return self.sessions[kind]

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()


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
