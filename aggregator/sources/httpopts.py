"""Per-source HTTP options: extra headers, cookies, basic auth, a proxy, TLS verification.

Some publishers answer only with a token header, a session cookie or a password, and some
networks reach the outside only through a proxy. These are pure decisions over the config and
the environment; `remote.fetch_one` applies them. Secrets (the password, and header and cookie
values, which often carry tokens) live only in `Credentials`/`FetchRequest` fields that are
left out of every repr, so a log line or a traceback cannot show them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# Headers the fetcher owns: a source overriding them would break conditional GET or framing.
RESERVED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "if-none-match", "if-modified-since",
     "accept-encoding", "cookie", "authorization", "proxy-authorization"}
)  # fmt: skip
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def header_problem(name: str, value: str) -> str | None:
    """Why a configured header cannot be sent (None when it can). Values are never quoted back:
    they may be tokens."""
    if not _TOKEN.match(name):
        return f"header name {name!r} is not a valid HTTP token"
    if name.lower() in RESERVED:
        hint = {"cookie": "use 'cookies'", "authorization": "use 'auth' or 'auth_env'"}.get(name.lower())
        return f"header {name!r} is set by the fetcher" + (f"; {hint}" if hint else "")
    if any(c in value for c in "\r\n\0"):
        return f"header {name!r} has a line break or NUL in its value"
    return None


@dataclass(frozen=True, slots=True)
class Credentials:
    """Basic-auth user and password, or why they could not be had (an unset variable)."""

    user: str = ""
    password: str = field(default="", repr=False)
    problem: str | None = None

    def header(self) -> str:
        """The `Authorization` value (RFC 7617; UTF-8, as browsers send non-ASCII passwords)."""
        import base64

        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")


def credentials(auth: str | None, auth_env: str | None, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The basic-auth credentials of a source: `auth` as written, or the value of the environment
    variable `auth_env` names (read at each fetch, so a restart with a new secret needs no edit)."""
    if auth_env is not None:
        value = (os.environ if environ is None else environ).get(auth_env)
        if not value:
            return Credentials(problem=f"environment variable {auth_env} (auth_env) is not set")
        if ":" not in value:
            return Credentials(problem=f"environment variable {auth_env} (auth_env) is not 'user:password'")
        auth = value
    if auth is None:
        return None
    user, _, password = auth.partition(":")
    return Credentials(user, password)


def cookie_header(cookies: Mapping[str, str]) -> str | None:
    """One `Cookie:` header for the configured cookies (the client keeps no cookie jar: a feed
    fetch must look the same every time, whatever a server set last time)."""
    return "; ".join(f"{k}={v}" for k, v in cookies.items()) or None


def proxy_for(url: str, configured: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy to fetch `url` through: the source's own, else HTTP_PROXY/HTTPS_PROXY from the
    environment unless NO_PROXY exempts the host (the same rules as curl and urllib)."""
    if configured:
        return configured
    env = os.environ if environ is None else environ
    # Both spellings are in use (curl reads lower case, most tools either); lower case wins. Only
    # the few names that can apply are read: walking the whole environment for every request was
    # a fifth of the cost of a 304.
    scheme = url.split(":", 1)[0].lower()
    chosen = _env_proxy(env, scheme) or _env_proxy(env, "all")
    if not chosen:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    host = urlsplit(url).hostname or ""
    if no_proxy and _bypassed(host, no_proxy):
        return None
    return chosen


def _env_proxy(env: Mapping[str, str], scheme: str) -> str | None:
    return env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY") or None


def _bypassed(host: str, no_proxy: str) -> bool:
    """NO_PROXY: `*`, or comma-separated names matching the host or a parent domain (`.example.com`
    and `example.com` alike), or literal addresses."""
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.lstrip(".").split(":", 1)[0] if entry.count(":") == 1 else entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def is_socks(proxy: str | None) -> bool:
    return bool(proxy) and proxy.lower().startswith("socks")


def split_proxy(proxy: str) -> tuple[str, str | None]:
    """(the proxy URL without user:password, its `Proxy-Authorization` value or None): the
    credentials travel as a header, so the URL that aiohttp keeps (and may put in an error
    message) holds none."""
    import base64
    from urllib.parse import unquote

    parts = urlsplit(proxy)
    if parts.username is None:
        return proxy, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return parts._replace(netloc=netloc).geturl(), "Basic " + base64.b64encode(pair.encode()).decode("ascii")
