"""Per-source HTTP options and feed discovery, against real servers on 127.0.0.1: a feed server
that logs every request's headers, and a forward proxy."""

from __future__ import annotations

import base64
import contextlib
import http.server
import logging
import threading
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli

from aggregator.config import ConfigError, load_config
from aggregator.pipeline import fetch
from aggregator.sources.httpopts import credentials, header_problem, proxy_for
from aggregator.store import Store


def atom(tag: str, titles: list[str]) -> bytes:
    entries = "".join(
        f'<entry><title>{t}</title><id>urn:{tag}:{i}</id><link href="http://example.com/{tag}/{i}"/>'
        f"<updated>2022-09-0{i + 1}T10:00:00Z</updated><content>{t} body</content></entry>"
        for i, t in enumerate(titles)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>{tag}</title>'
        f"<id>urn:{tag}</id><updated>2022-09-05T00:00:00Z</updated>{entries}</feed>"
    ).encode()


PAGE = b"""<!doctype html><html><head><title>Site</title>
<link rel="alternate" type="application/rss+xml" title="RSS" href="/feed.rss">
<link rel="alternate" type="application/atom+xml" title="Atom" href="/feed.atom">
</head><body>hello</body></html>"""
RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>r</title><link>http://example.com/</link>'
    b"<item><title>RSS item</title><guid>urn:rss:1</guid></item></channel></rss>"
)
USER, PASSWORD = "reader", "S3cret-Tok3n-Only-Here"


class Feeds(http.server.BaseHTTPRequestHandler):
    log: list[dict]
    feeds: dict[str, tuple[int, bytes, str]]

    def do_GET(self) -> None:
        self.log.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        code, body, ctype = self.feeds.get(self.path, (404, b"no", "text/plain"))
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class Proxy(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: takes absolute-form requests and relays them directly."""

    log: list[str]
    auth: list[str | None]

    def do_GET(self) -> None:
        self.log.append(self.path)
        self.auth.append(self.headers.get("Proxy-Authorization"))
        hop = {"proxy-connection", "connection", "keep-alive", "host", "proxy-authorization"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(urllib.request.Request(self.path, headers=headers), timeout=5) as r:
                code, body, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            code, body, ctype = e.code, e.read(), "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Via", "1.1 test-proxy")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _start(handler: type, **attrs) -> tuple[http.server.ThreadingHTTPServer, str]:
    cls = type(handler.__name__, (handler,), attrs)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cls)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def site():
    log: list[dict] = []
    feeds = {
        "/": (200, PAGE, "text/html; charset=utf-8"),
        "/feed.atom": (200, atom("a", ["Atom one", "Atom two"]), "application/atom+xml"),
        "/feed.rss": (200, RSS, "application/rss+xml"),
    }
    srv, url = _start(Feeds, log=log, feeds=feeds)
    yield url, log, feeds
    srv.shutdown()


@pytest.fixture
def proxy():
    log: list[str] = []
    srv, url = _start(Proxy, log=log, auth=[])
    yield url, log
    srv.shutdown()


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch):
    for k in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
        monkeypatch.delenv(k.upper(), raising=False)


def config(tmp_path: Path, source: str, fetch_opts: str = "allow_private = true") -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db/agg.sqlite3"\n[output]\ndir = "out"\n'
        f"[fetch]\ntimeout = 5\n{fetch_opts}\n[[sources]]\n{source}\n",
        encoding="utf-8",
    )
    return cfg


def titles(store: Store) -> set[str]:
    from sqlalchemy import select

    from aggregator.store.schema import ENTRIES

    with store.engine.connect() as c:
        return set(c.execute(select(ENTRIES.c.title)).scalars())


# ---------------------------------------------------------------- discovery


def test_a_page_is_searched_for_its_feed_which_is_then_fetched_directly(tmp_path, site):
    url, log, _ = site
    settings = load_config(config(tmp_path, f'name = "s"\nurl = "{url}/"\nprefer = "atom"'))
    store = Store(settings.database.url)
    try:
        report = fetch(store, settings)
        assert report.fetched == 1 and titles(store) == {"Atom one", "Atom two"}
        row = store.source_rows()[0]
        assert row.location == f"{url}/feed.atom" and row.config_url == f"{url}/"
        assert store.discoveries() == {row.id: (f"{url}/", f"{url}/feed.atom")}
        del log[:]
        fetch(store, settings, names=["s"])
        assert [x["path"] for x in log] == ["/feed.atom"]  # remembered: the page is not read again
    finally:
        store.close()


def test_without_prefer_the_first_feed_of_the_page_is_used(tmp_path, site):
    url, _, _ = site
    settings = load_config(config(tmp_path, f'name = "s"\nurl = "{url}/"'))
    store = Store(settings.database.url)
    try:
        fetch(store, settings)
        assert titles(store) == {"RSS item"}
    finally:
        store.close()


def test_a_discovered_feed_that_goes_away_is_discovered_again(tmp_path, site):
    url, log, feeds = site
    settings = load_config(config(tmp_path, f'name = "s"\nurl = "{url}/"\nprefer = "atom"'))
    store = Store(settings.database.url)
    try:
        fetch(store, settings)
        feeds["/feed.atom"] = (404, b"moved", "text/plain")
        fetch(store, settings, names=["s"])
        row = store.source_rows()[0]
        assert row.location == f"{url}/" and row.disabled is None and store.discoveries() == {}
        feeds["/"] = (200, PAGE.replace(b"/feed.atom", b"/new.atom"), "text/html")
        feeds["/new.atom"] = (200, atom("n", ["New home"]), "application/atom+xml")
        del log[:]
        fetch(store, settings, names=["s"])
        assert [x["path"] for x in log] == ["/", "/new.atom"] and "New home" in titles(store)
    finally:
        store.close()


def test_cli_discover_sources_and_update_end_to_end(tmp_path, site):
    url, _, _ = site
    cfg = config(tmp_path, f'name = "site"\nurl = "{url}/"\ncategories = ["disc"]')
    found = run_cli(cfg, "discover", f"{url}/")
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines() == [f"* rss   {url}/feed.rss  RSS", f"  atom  {url}/feed.atom  Atom"]
    assert run_cli(cfg, "discover", "--prefer", "atom", f"{url}/").stdout.startswith(f"  rss   {url}/feed.rss")
    assert run_cli(cfg, "discover", f"{url}/feed.atom").stdout.startswith("* feed")
    assert run_cli(cfg, "discover", f"{url}/missing").returncode == 1
    assert run_cli(cfg, "update").returncode == 0
    listing = run_cli(cfg, "sources").stdout
    assert f"{url}/ → {url}/feed.rss" in listing


# ---------------------------------------------------------------- headers, cookies, auth


def protected(site) -> str:
    url, _, feeds = site
    feeds["/private.atom"] = (200, atom("p", ["Private"]), "application/atom+xml")
    return url


def test_headers_cookies_and_basic_auth_are_sent(tmp_path, site):
    url = protected(site)
    src = (
        f'name = "p"\nurl = "{url}/private.atom"\nheaders = {{ "X-Token" = "abc" }}\n'
        f'cookies = {{ sid = "42", lang = "en" }}\nauth = "{USER}:{PASSWORD}"'
    )
    settings = load_config(config(tmp_path, src))
    store = Store(settings.database.url)
    try:
        assert fetch(store, settings).fetched == 1
    finally:
        store.close()
    h = site[1][-1]["headers"]
    assert h["x-token"] == "abc" and h["cookie"] == "sid=42; lang=en"
    assert h["authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def test_auth_from_the_environment_is_sent_and_never_logged(tmp_path, site, monkeypatch, caplog):
    url = protected(site)
    monkeypatch.setenv("FEED_AUTH", f"{USER}:{PASSWORD}")
    settings = load_config(config(tmp_path, f'name = "p"\nurl = "{url}/private.atom"\nauth_env = "FEED_AUTH"'))
    store = Store(settings.database.url)
    caplog.set_level(logging.DEBUG)
    try:
        fetch(store, settings)
        assert site[1][-1]["headers"]["authorization"].startswith("Basic ")
        monkeypatch.delenv("FEED_AUTH")
        fetch(store, settings, names=["p"])
        row = store.source_rows()[0]
        assert row.last_error == "environment variable FEED_AUTH (auth_env) is not set" and len(site[1]) == 1
    finally:
        store.close()
    secret = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert PASSWORD not in caplog.text and secret not in caplog.text


def test_secrets_stay_out_of_cli_output_with_vv(tmp_path, site):
    url = protected(site)
    cfg = config(tmp_path, f'name = "p"\nurl = "{url}/private.atom"\nauth = "{USER}:{PASSWORD}"')
    for args in (("-vv", "update"), ("-vv", "sources"), ("-vv", "status")):
        r = run_cli(cfg, *args)
        assert r.returncode == 0 and PASSWORD not in r.stdout + r.stderr, args
    assert site[1] and site[1][-1]["headers"]["authorization"]


def test_a_bad_auth_value_is_refused_without_echoing_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(config(tmp_path, f'name = "p"\nurl = "http://example.com/"\nauth = "{PASSWORD}"'))
    assert "sources[0].auth" in str(e.value) and PASSWORD not in str(e.value)


def test_credentials_go_to_the_configured_host_only(tmp_path, site):
    _, log, _ = site
    other_srv, other = _start(Feeds, log=log, feeds={"/f": (200, atom("o", ["Elsewhere"]), "application/atom+xml")})
    try:
        target = other.replace("127.0.0.1", "localhost") + "/f"  # another host name for the same machine

        class Redirect(Feeds):
            def do_GET(self) -> None:
                self.log.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

        redirect_srv, redirect = _start(Redirect, log=log, feeds={})
        src = f'name = "p"\nurl = "{redirect}/go"\nheaders = {{ "X-Token" = "abc" }}\nauth = "{USER}:{PASSWORD}"'
        settings = load_config(config(tmp_path, src))
        store = Store(settings.database.url)
        try:
            fetch(store, settings)
        finally:
            store.close()
            redirect_srv.shutdown()
        first, second = log[-2]["headers"], log[-1]["headers"]
        assert first["x-token"] == "abc" and "authorization" in first
        assert "x-token" not in second and "authorization" not in second
    finally:
        other_srv.shutdown()


# ---------------------------------------------------------------- proxies


def test_a_source_proxy_carries_the_request(tmp_path, site, proxy):
    url, log, _ = site
    purl, plog = proxy
    settings = load_config(config(tmp_path, f'name = "s"\nurl = "{url}/feed.atom"\nproxy = "{purl}"'))
    store = Store(settings.database.url)
    try:
        assert fetch(store, settings).fetched == 1
    finally:
        store.close()
    assert plog == [f"{url}/feed.atom"] and log[-1]["headers"].get("via") is None  # relayed by the proxy
    assert titles_of(settings) == {"Atom one", "Atom two"}


def titles_of(settings) -> set[str]:
    store = Store(settings.database.url)
    try:
        return titles(store)
    finally:
        store.close()


def test_proxy_credentials_go_to_the_proxy_only(tmp_path, site, proxy):
    url, log, _ = site
    purl, plog = proxy
    with_user = purl.replace("http://", "http://pu:p%40ss@")
    settings = load_config(config(tmp_path, f'name = "s"\nurl = "{url}/feed.atom"\nproxy = "{with_user}"'))
    store = Store(settings.database.url)
    try:
        assert fetch(store, settings).fetched == 1
    finally:
        store.close()
    handler = next(c for c in Proxy.__subclasses__() if c.log is plog)
    assert handler.auth == ["Basic " + base64.b64encode(b"pu:p@ss").decode()]
    assert "proxy-authorization" not in log[-1]["headers"]


def test_http_proxy_from_the_environment_and_no_proxy(tmp_path, site, proxy, monkeypatch):
    url, _, _ = site
    purl, plog = proxy
    monkeypatch.setenv("HTTP_PROXY", purl)
    settings = load_config(config(tmp_path, f'name = "s"\nurl = "{url}/feed.atom"'))
    store = Store(settings.database.url)
    try:
        fetch(store, settings)
        assert plog == [f"{url}/feed.atom"]
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        fetch(store, settings, names=["s"])
        assert len(plog) == 1  # exempted: fetched directly
    finally:
        store.close()


def test_through_a_proxy_the_target_address_is_still_checked(tmp_path, site, proxy):
    """The proxy is on loopback (allowed: the operator configured it); the feed's host is too,
    and without allow_private that target is refused before anything is sent."""
    url, log, _ = site
    purl, plog = proxy
    settings = load_config(config(tmp_path, f'name = "s"\nurl = "{url}/feed.atom"\nproxy = "{purl}"', ""))
    store = Store(settings.database.url)
    try:
        report = fetch(store, settings)
    finally:
        store.close()
    assert report.failed == 1 and "not a public address" in report.errors[0].reason
    assert plog == [] and log == []


def test_proxy_for_rules():
    env = {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:1", "https_proxy": "http://s:1"}
    assert proxy_for("http://a.example/", None, env) == "http://lower:1"
    assert proxy_for("https://a.example/", None, env) == "http://s:1"
    assert proxy_for("http://a.example/", "socks5://p:1080", env) == "socks5://p:1080"
    assert proxy_for("http://a.example/", None, {**env, "NO_PROXY": ".example"}) is None
    assert proxy_for("http://a.example/", None, {**env, "no_proxy": "b.example"}) == "http://lower:1"
    assert proxy_for("http://a.example/", None, {**env, "no_proxy": "*"}) is None
    assert proxy_for("http://a.example/", None, {}) is None


def test_options_that_cannot_be_sent_are_config_errors(tmp_path):
    assert header_problem("Cookie", "x") and header_problem("Bad Name", "x") and header_problem("X-A", "a\r\nb")
    assert header_problem("X-Token", "abc") is None
    assert credentials(None, "NOPE", {}).problem and credentials(None, "V", {"V": "u:p"}).password == "p"
    for line in ('headers = { "Authorization" = "x" }', 'proxy = "ftp://p"', 'auth = "a:b"\nauth_env = "X"'):
        with pytest.raises(ConfigError):
            load_config(config(tmp_path, f'name = "p"\nurl = "http://example.com/"\n{line}'))


# ---------------------------------------------------------------- SOCKS and TLS


class Socks5:
    """A SOCKS5 server (no authentication, CONNECT only) relaying to what the client names."""

    def __init__(self) -> None:
        import socket

        self.targets: list[tuple[str, int]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"socks5://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        import socket
        import struct

        def exact(n: int) -> bytes:
            data = b""
            while len(data) < n:
                more = conn.recv(n - len(data))
                if not more:
                    raise OSError("closed")
                data += more
            return data

        with conn:
            try:
                _, methods = exact(2)
                exact(methods)
                conn.sendall(b"\x05\x00")  # no authentication
                _, _, _, atyp = exact(4)  # CONNECT assumed: the only command aiohttp-socks sends here
                if atyp == 1:
                    host = socket.inet_ntoa(exact(4))
                elif atyp == 3:
                    host = exact(exact(1)[0]).decode()
                else:
                    return
                (port,) = struct.unpack("!H", exact(2))
                self.targets.append((host, port))
                upstream = socket.create_connection((host, port), timeout=5)
                conn.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", port))
            except OSError:
                return
            with upstream:

                def pump(a, b) -> None:
                    try:
                        while data := a.recv(65536):
                            b.sendall(data)
                    except OSError:
                        pass
                    finally:
                        with contextlib.suppress(OSError):
                            b.shutdown(socket.SHUT_WR)

                t = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
                t.start()
                pump(conn, upstream)
                t.join(5)

    def close(self) -> None:
        self.sock.close()


def test_a_socks5_proxy_carries_the_request(tmp_path, site):
    pytest.importorskip("aiohttp_socks")
    url, log, _ = site
    socks = Socks5()
    try:
        settings = load_config(config(tmp_path, f'name = "s"\nurl = "{url}/feed.atom"\nproxy = "{socks.url}"'))
        store = Store(settings.database.url)
        try:
            assert fetch(store, settings).fetched == 1
        finally:
            store.close()
    finally:
        socks.close()
    port = int(url.rsplit(":", 1)[1])
    assert socks.targets == [("127.0.0.1", port)] and [x["path"] for x in log] == ["/feed.atom"]


@pytest.fixture
def tls_site(tmp_path):
    """(https URL, request log, certificate file) of a feed server with a self-signed certificate
    for 127.0.0.1, which no system trusts; trusting the file (SSL_CERT_FILE) makes it valid."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    log: list[dict] = []
    srv, url = _start(Feeds, log=log, feeds={"/f.atom": (200, atom("t", ["Over TLS"]), "application/atom+xml")})
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    yield url.replace("http://", "https://"), log, cert
    srv.shutdown()


def test_https_is_verified_against_the_cas_the_process_trusts(tmp_path, tls_site):
    """The CLI end to end, trusting a CA through SSL_CERT_FILE: the feed is fetched over verified
    TLS. aiohttp is imported without loading CAs into its own contexts (`sources.tls`), so this
    fails if a request ever fell back to those, or if our context missed the system's paths."""
    url, log, cert = tls_site
    cfg = config(tmp_path, f'name = "tls"\nurl = "{url}/f.atom"')
    trusted = run_cli(cfg, "fetch", env={"SSL_CERT_FILE": str(cert)})
    assert trusted.returncode == 0 and "1 downloaded" in trusted.stdout, trusted.stdout + trusted.stderr
    # the same CLI, trusting only the system's CAs: the server's certificate is refused
    cfg = config(tmp_path, f'name = "tls2"\nurl = "{url}/f.atom"')
    refused = run_cli(cfg, "fetch", env={"SSL_CERT_FILE": str(tmp_path / "none.pem")})
    assert refused.returncode == 0 and "1 failed" in refused.stdout and "TLS error" in refused.stderr
    assert [x["path"] for x in log] == ["/f.atom"]


def test_verify_tls_false_accepts_a_self_signed_certificate_with_a_warning(tmp_path, tls_site, caplog):
    url, log, _ = tls_site
    settings = load_config(config(tmp_path, f'name = "strict"\nurl = "{url}/f.atom"'))
    store = Store(settings.database.url)
    try:
        report = fetch(store, settings)
        assert report.failed == 1 and "TLS error" in report.errors[0].reason and log == []
    finally:
        store.close()
    settings = load_config(config(tmp_path, f'name = "lax"\nurl = "{url}/f.atom"\nverify_tls = false'))
    store = Store(settings.database.url)
    caplog.set_level(logging.WARNING)
    try:
        assert fetch(store, settings, names=["lax"]).fetched == 1
    finally:
        store.close()
    assert "source=lax verify_tls = false" in caplog.text


def test_an_opml_outline_pointing_at_a_page_gets_its_feed_with_the_entrys_options(tmp_path, site):
    url, log, _ = site
    (tmp_path / "subs.opml").write_text(
        f'<?xml version="1.0"?><opml version="2.0"><head><title>s</title></head><body>'
        f'<outline text="News"><outline text="A site" type="rss" xmlUrl="{url}/"/></outline></body></opml>',
        encoding="utf-8",
    )
    src = 'name = "subs"\nopml = "subs.opml"\nprefer = "atom"\nheaders = { "X-Token" = "abc" }'
    settings = load_config(config(tmp_path, src))
    store = Store(settings.database.url)
    try:
        assert fetch(store, settings).fetched == 1 and titles(store) == {"Atom one", "Atom two"}
        assert list(store.discoveries().values()) == [(f"{url}/", f"{url}/feed.atom")]
    finally:
        store.close()
    assert [x["path"] for x in log] == ["/", "/feed.atom"] and all(x["headers"]["x-token"] == "abc" for x in log)
