"""Which addresses a feed fetch may connect to (server-side request forgery policy).

A feed URL comes from a config, an OPML file someone sent, or a redirect a server chose. Without
a policy, `http://169.254.169.254/…` (cloud metadata), `http://127.0.0.1:6379/` or an intranet
host would be fetched and, if it parsed, republished. So unless a source is allowed
(`allow_private`), only globally routable unicast addresses are connected to.

The check is made on the address actually connected: `GuardedConnector` filters what its
resolver returns for every new connection (IP literals included), so a name that resolves to a
public address when checked and a private one when connected (DNS rebinding) gains nothing.
The decisions are pure functions below; only `GuardedConnector` touches aiohttp.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# Names that mean "this machine" whatever DNS says (RFC 6761 .localhost).
_LOCAL_NAMES = ("localhost", "localhost.", "ip6-localhost", "ip6-loopback")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class PrivateAddress(OSError):
    """A connection the policy refuses. An OSError, so aiohttp passes it up as a connection error."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"refused: {host} is {reason}, not a public address; set allow_private = true to fetch it")
        self.host = host
        self.reason = reason


def address_reason(address: str) -> str | None:
    """Why connecting to `address` (an IP literal) is refused, or None when it is a public address."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address dressed as IPv6 reaches the IPv4 host: judge that one.
        nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        inner = ip.ipv4_mapped or ip.sixtofour or nat64
        if inner is not None:
            return address_reason(str(inner))
        if ip.teredo:
            return "a Teredo tunnel address"
    for test, name in (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
    ):
        if getattr(ip, test):
            return name
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "a shared (CGNAT) address"
    if not ip.is_global or ip.is_private or ip.is_reserved:
        return "a private or reserved address"
    return None


def host_reason(host: str) -> str | None:
    """Why a URL's host is refused before any lookup: an IP literal the policy refuses, or a
    name for this machine. A name is otherwise judged by what it resolves to (`GuardedConnector`)."""
    host = host.strip().lower()
    if not host:
        return "an empty host"
    if host in _LOCAL_NAMES or host.endswith((".localhost", ".localhost.")):
        return "this machine (localhost)"
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    return address_reason(host)


def url_reason(url: str) -> str | None:
    """Why fetching `url` would be refused by its host alone (OPML import warns with this)."""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return "not a valid URL"
    return host_reason(host or "")


def connector(allow_private: bool, **kwargs):
    """An aiohttp connector that enforces the policy, or a plain one when private addresses are allowed."""
    from .tls import import_aiohttp

    aiohttp = import_aiohttp()

    class GuardedConnector(aiohttp.TCPConnector):
        """Drops every resolved address the policy refuses; none left: PrivateAddress.

        `_resolve_host` is where aiohttp turns a host (name or literal) into the addresses it then
        connects to, so filtering its answer checks exactly what is connected."""

        async def _resolve_host(self, host, port, *args, **kw):
            named = host_reason(host)
            if named is not None:
                raise PrivateAddress(host, named)
            infos = await super()._resolve_host(host, port, *args, **kw)
            allowed, reasons = [], []
            for info in infos:
                why = address_reason(str(info.get("host", "")))
                (reasons if why else allowed).append(why or info)
            if not allowed:
                raise PrivateAddress(host, reasons[0] if reasons else "unresolvable")
            return allowed

    return aiohttp.TCPConnector(**kwargs) if allow_private else GuardedConnector(**kwargs)


async def check_resolved(host: str, port: int) -> None:
    """Raise PrivateAddress unless every address `host` resolves to is public.

    For a request sent through a proxy: the connection is made to the proxy (which the operator
    configured, so it may sit on a private address), and the proxy resolves the target again.
    Refusing when any address is private (where the guard for direct connections drops just
    those) leaves a rebinding name nothing public to hide behind; what the proxy's own lookup
    returns a moment later is the proxy's to police."""
    import asyncio
    import socket

    named = host_reason(host)
    if named is not None:
        raise PrivateAddress(host, named)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return  # unresolvable here: the proxy may know the name (a split-horizon DNS); it answers
    for info in infos:
        why = address_reason(str(info[4][0]))
        if why is not None:
            raise PrivateAddress(host, why)
