"""The TLS context of fetches, and aiohttp imported without the two it builds for itself.

aiohttp builds two SSL contexts when it is imported, and each loads the system's CA bundle: about
25 ms apiece, paid by every process that fetches, even one whose feeds are all plain http or all
answer 304. Our requests never use those two: every https request names its context
(`context_for`), made once per process when the first https URL is fetched. So `import_aiohttp()`
imports aiohttp with the CA loading of its own contexts skipped. Were one of them ever used, it
would trust no certificate at all: verification fails closed, it is never skipped.
"""

from __future__ import annotations

import ssl
import sys
import threading

_lock = threading.Lock()
_verified: ssl.SSLContext | None = None
_imported = False


def import_aiohttp():
    """The aiohttp module, imported (the first time) without loading CAs into its default contexts.

    The first import should happen before other threads make TLS connections: while it runs, a
    context made elsewhere in the process would miss the CAs too (and so refuse every peer). The
    CLI and the daemon import it from their fetch paths, one at a time under `_lock`."""
    global _imported
    if _imported:
        return sys.modules["aiohttp"]
    with _lock:
        if "aiohttp" in sys.modules:  # imported by someone else already (the tests do)
            _imported = True
            return sys.modules["aiohttp"]
        cls = ssl.SSLContext
        # `load_default_certs` is ssl.py's own; `set_default_verify_paths` is inherited from _ssl.
        saved = {name: cls.__dict__.get(name) for name in ("load_default_certs", "set_default_verify_paths")}
        cls.load_default_certs = lambda self, purpose=ssl.Purpose.SERVER_AUTH: None
        cls.set_default_verify_paths = lambda self: None
        try:
            import aiohttp
        finally:
            for name, value in saved.items():
                if value is None:
                    delattr(cls, name)
                else:
                    setattr(cls, name, value)
        _imported = True
    return aiohttp


def verified_context() -> ssl.SSLContext:
    """The context of every https request whose certificate is checked: the system's CAs (or
    SSL_CERT_FILE / SSL_CERT_DIR), hostname checking on, HTTP/1.1 offered by ALPN as aiohttp does."""
    global _verified
    if _verified is None:
        with _lock:
            if _verified is None:
                ctx = ssl.create_default_context()
                ctx.set_alpn_protocols(["http/1.1"])
                _verified = ctx
    return _verified


def context_for(url: str, verify: bool) -> ssl.SSLContext | bool:
    """aiohttp's `ssl` argument for a request to `url`: False (aiohttp's unverified context, which
    needs no CAs) when the source turned verification off, else our verified context for https.
    A plain http URL gets True, which aiohttp ignores there."""
    if not verify:
        return False
    return verified_context() if url[:6].lower() == "https:" else True
