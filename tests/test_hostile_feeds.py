"""Hostile feeds and servers against the real CLI and real HTTP on 127.0.0.1: each finding of issue 15
(remote side) as it was seen, plus the address policy and the parse time limit underneath."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
from conftest import run_cli

from aggregator.sources import netpolicy
from aggregator.sources.feeds import FeedContext, FeedError
from aggregator.sources.netpolicy import address_reason, host_reason, url_reason
from aggregator.sources.remote import FetchRequest, fetch_one, permanent_target, redirect_refusal

RSS_T, JSON_T = "application/rss+xml", "application/feed+json"


def config(tmp: Path, sources: str, fetch: str = "allow_private = true", formats=("atom", "rss", "json")) -> Path:
    (tmp / "db").mkdir(exist_ok=True)
    cfg = tmp / "config.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///db/agg.sqlite3"\n'
        '[output]\ndir = "out"\nbase_url = "http://feeds.example.org/"\ntitle = "T"\n'
        f"formats = {json.dumps(list(formats))}\n"
        f"[fetch]\ntimeout = 5\n{fetch}\n\n{sources}",
        encoding="utf-8",
    )
    return cfg


def source(name: str, url: str, cats=("remote",), extra: str = "") -> str:
    return f'[[sources]]\nname = "{name}"\nurl = "{url}"\ncategories = {json.dumps(list(cats))}\n{extra}\n\n'


def rss(items: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/">'
        f"<channel><title>t</title><link>http://x.test/</link><description>d</description>{items}</channel></rss>"
    )


def item(title: str, guid: str, extra: str = "") -> str:
    return (
        f"<item><title>{title}</title><link>http://x.test/{guid}</link><guid>{guid}</guid>"
        f"<pubDate>Mon, 05 Sep 2022 08:00:00 +0800</pubDate><description>body of {guid}</description>{extra}</item>"
    )


def jsonfeed(items: list[dict]) -> str:
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": items})


def titles(out: Path) -> set[str]:
    from lxml import etree

    found = set()
    for p in out.glob("*/atom.xml"):
        root = etree.parse(str(p)).getroot()  # raises if not well-formed
        found |= {el.text for el in root.iter("{http://www.w3.org/2005/Atom}title")}
    return found


def everything(out: Path) -> bytes:
    return b"".join(p.read_bytes().lower() for p in out.rglob("*") if p.is_file())


# ---------------------------------------------------------------- text at the boundary


def test_control_characters_in_feed_items_do_not_stop_builds(tmp_path, server):
    bad = {"id": "c1", "url": "http://x.test/c1", "title": "ctrl\u0001title", "content_text": "one",
           "tags": ["ctl\u0002tag"], "authors": [{"name": "auth\u0003or"}]}  # fmt: skip
    good = {"id": "c2", "url": "http://x.test/c2", "title": "JSON neighbour", "content_text": "two"}
    server.expect_request("/ctl.json").respond_with_data(jsonfeed([bad, good]), content_type=JSON_T)
    server.expect_request("/ctl.xml").respond_with_data(
        rss(item("rss ctl &#1; title", "r1", "<category>cat&#1;ctl</category>") + item("RSS neighbour", "r2")),
        content_type=RSS_T,
    )
    keep = 'feed_categories = "keep"'  # the feeds' own terms become categories
    cfg = config(tmp_path, source("j", server.url_for("/ctl.json"), extra=keep)
                 + source("r", server.url_for("/ctl.xml"), extra=keep))
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    b = run_cli(cfg, "build", "--force")
    assert b.returncode == 0, b.stderr
    seen = titles(tmp_path / "out")
    assert {"ctrltitle", "JSON neighbour", "RSS neighbour"} <= seen
    assert (tmp_path / "out" / "catctl" / "atom.xml").is_file() and (tmp_path / "out" / "ctltag" / "atom.xml").is_file()
    json.loads((tmp_path / "out" / "all" / "feed.json").read_text(encoding="utf-8"))


def test_a_lone_surrogate_in_a_json_feed_is_cleaned_and_the_state_recorded(tmp_path, server):
    server.expect_request("/surr.json").respond_with_data(jsonfeed([
        {"id": "s1", "url": "http://x.test/s1", "title": "lone \ud800 surrogate", "content_text": "b1"},
        {"id": "s2", "url": "http://x.test/s2", "title": "Surrogate neighbour", "content_text": "b2"}]),
        content_type=JSON_T)  # fmt: skip
    cfg = config(tmp_path, source("surr", server.url_for("/surr.json")))
    for _ in range(2):
        r = run_cli(cfg, "update")
        assert r.returncode == 0, r.stderr
    assert len(server.log) == 1  # the first run recorded the source's state: not due again
    assert {"lone surrogate", "Surrogate neighbour"} <= {" ".join(t.split()) for t in titles(tmp_path / "out")}


def test_one_item_with_3000_categories_makes_few_feeds(tmp_path, server):
    cats = "".join(f"<category>spam category {i}</category>" for i in range(3000))
    server.expect_request("/flood.xml").respond_with_data(
        rss(item("flood item", "f1", cats) + item("Flood neighbour", "f2")), content_type=RSS_T
    )
    cfg = config(tmp_path, source("catflood", server.url_for("/flood.xml"), ["flood"], 'feed_categories = "keep"'))
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    folders = [p for p in (tmp_path / "out").iterdir() if (p / "atom.xml").is_file()]
    assert len(folders) == 22  # all, flood and 20 of the item's own
    assert "Flood neighbour" in titles(tmp_path / "out")
    assert re.search(r"source=catflood limit: .*3,000 category names cut to 20", r.stderr)


def test_a_category_flood_in_map_mode_makes_no_feed_and_is_reported(tmp_path, server):
    cats = "".join(f"<category>spam category {i}</category>" for i in range(3000))
    server.expect_request("/flood.xml").respond_with_data(rss(item("flood item", "f1", cats)), content_type=RSS_T)
    cfg = config(tmp_path, source("catflood", server.url_for("/flood.xml"), ["flood"]))  # feed_categories = "map"
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path / "out").iterdir() if (p / "atom.xml").is_file()} == {"all", "flood"}
    assert re.search(r"source=catflood limit: .*3,000 unpublished feed category names cut to 20", r.stderr)


def test_new_categories_per_day_and_ignoring_the_feeds_categories(tmp_path, server):
    cats = "<category>c{n}a</category><category>c{n}b</category>"
    items = "".join(item(f"item {n}", f"i{n}", cats.format(n=n)) for n in range(6))
    server.expect_request("/many.xml").respond_with_data(rss(items), content_type=RSS_T)
    server.expect_request("/mine.xml").respond_with_data(rss(items), content_type=RSS_T)
    cfg = config(
        tmp_path,
        source("many", server.url_for("/many.xml"), ["many"],
               'limits = { new_categories_per_day = 5 }\nfeed_categories = "keep"')
        + source("mine", server.url_for("/mine.xml"), ["only-mine"], "feed_categories = false"),
    )
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    slugs = {p.name for p in (tmp_path / "out").iterdir() if (p / "atom.xml").is_file()}
    assert slugs == {"all", "many", "only-mine", "c0a", "c0b", "c1a", "c1b", "c2a"}
    assert "source=many limit: 7 new categories not created (new_categories_per_day = 5" in r.stderr


# ---------------------------------------------------------------- unsafe URLs


def test_javascript_and_data_urls_never_reach_the_output(tmp_path, server):
    server.expect_request("/img.xml").respond_with_data(
        rss(item("Remote image item", "img1", '<enclosure url="javascript:alert(3)" length="10" type="image/jpeg"/>'
                 '<media:thumbnail url="javascript:alert(4)"/>')
            + item("Data image item", "img2", '<media:thumbnail url="data:text/html,&lt;script&gt;x&lt;/script&gt;"/>'
                   '<enclosure url="data:audio/mpeg;base64,AAAA" length="4" type="audio/mpeg"/>')),
        content_type=RSS_T)  # fmt: skip
    cfg = config(tmp_path, source("img", server.url_for("/img.xml")))
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    assert {"Remote image item", "Data image item"} <= titles(tmp_path / "out")
    data = everything(tmp_path / "out")
    assert b"javascript:" not in data and b"data:text/html" not in data and b"data:audio" not in data


def test_publishing_is_the_last_line_of_defence(tmp_path):
    """Rows stored without cleaning (an older version, another path): still published, well-formed,
    without the unsafe URLs; an entry that cannot be rendered is left out, not a failed build."""
    from aggregator.config import load_config
    from aggregator.model import Enclosure, Entry
    from aggregator.pipeline import settle
    from aggregator.publish import render
    from aggregator.store import Store, now_utc

    cfg = config(tmp_path, '[[sources]]\nname = "local"\npath = "arts"\n')
    (tmp_path / "arts").mkdir()
    settings = load_config(cfg)
    store = Store(settings.database.url)
    sid = store.source_id("local", "files", str(tmp_path / "arts"))
    bad = Entry("local", "a.md", "bad\x01title", "<p>x\x02</p>", "s\x03", None, authors=("a\x04",),
                categories=("c\x05",), image="javascript:alert(1)",
                enclosure=Enclosure("javascript:alert(2)", "audio/mpeg", 5))  # fmt: skip
    boom = Entry("local", "b.md", "boom", "<p>b</p>", "b", "http://x.test/b", categories=("c\x05",))
    fine = Entry("local", "c.md", "fine", "<p>c</p>", "c", "http://x.test/c", categories=("c\x05",))
    store.save_entries(sid, [bad, boom, fine], {}, now_utc())
    real = render.entry_elements

    def fragile(item, formats, scheme):
        if item.title == "boom":
            raise ValueError("cannot render this one")
        return real(item, formats, scheme)

    render.entry_elements = fragile
    try:
        settle(store, settings, [])
    finally:
        render.entry_elements = real
        store.close()
    out = tmp_path / "out"
    assert {"badtitle", "fine"} <= titles(out) and "boom" not in titles(out)
    assert b"javascript:" not in everything(out)


# ---------------------------------------------------------------- the address policy


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "100.127.255.254", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1",
     "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1", "2002:7f00:1::1",
     "192.0.2.1", "198.18.0.1"],
)  # fmt: skip
def test_private_and_special_addresses_are_refused(address):
    assert address_reason(address) is not None
    assert host_reason(f"[{address}]" if ":" in address else address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_pass(address):
    assert address_reason(address) is None


def test_names_of_this_machine_and_urls():
    assert host_reason("localhost") and host_reason("a.localhost") and host_reason("LOCALHOST.")
    assert host_reason("example.org") is None  # judged by what it resolves to, at connect time
    assert url_reason("http://[::ffff:127.0.0.1]:8080/x") and url_reason("http://169.254.169.254/latest/meta-data/")
    assert url_reason("https://example.org/feed") is None


def test_redirect_decisions():
    assert redirect_refusal("https://a.test/f", "http://a.test/f").startswith("refused: redirect from https to http")
    assert redirect_refusal("http://a.test/f", "https://a.test/f") is None
    assert redirect_refusal("http://a.test/f", "file:///etc/passwd")
    assert permanent_target([(301, "http://b/"), (308, "http://c/"), (302, "http://d/")]) == "http://c/"
    assert permanent_target([(302, "http://b/"), (301, "http://c/")]) is None


class Resolver:
    """Answers every name with 127.0.0.1, like a DNS name rebound to loopback after a check."""

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self):
        pass


def test_the_connector_checks_the_address_it_connects_to(server):
    server.expect_request("/x").respond_with_data("secret")
    port = server.port

    async def go():
        import aiohttp

        async with aiohttp.ClientSession(connector=netpolicy.connector(False, resolver=Resolver())) as s:
            public_name = await fetch_one(s, FetchRequest("n", f"http://public.example.org:{port}/x"), 10_000)
            literal = await fetch_one(s, FetchRequest("n", f"http://127.0.0.1:{port}/x"), 10_000)
        async with aiohttp.ClientSession(connector=netpolicy.connector(True)) as s:
            allowed = await fetch_one(s, FetchRequest("n", f"http://127.0.0.1:{port}/x", allow_private=True), 10_000)
        return public_name, literal, allowed

    public_name, literal, allowed = asyncio.run(go())
    assert public_name.status is None and "refused: public.example.org is a loopback address" in public_name.error
    assert literal.status is None and literal.error.startswith("refused: 127.0.0.1 is a loopback address")
    assert allowed.status == 200 and allowed.body == b"secret"
    assert len(server.log) == 1  # only the allowed request reached the server


def test_every_redirect_hop_is_checked(server):
    server.expect_request("/hop").respond_with_data("", status=302, headers={"Location": "http://localhost:1/secret"})
    server.expect_request("/meta").respond_with_data("", status=301, headers={"Location": "http://169.254.169.254/"})
    port = server.port

    async def go():
        import aiohttp

        # An allowed source follows the redirect (nothing listens on port 1).
        async with aiohttp.ClientSession(connector=netpolicy.connector(True)) as s:
            ok = await fetch_one(s, FetchRequest("n", server.url_for("/hop"), allow_private=True), 10_000)
        # A source that is not allowed, whose first hop looks public ("public.test", resolved to the
        # test server by a stand-in resolver on an unguarded connector): the redirect hop is refused.
        async with aiohttp.ClientSession(connector=netpolicy.connector(True, resolver=Resolver())) as s:
            hop = await fetch_one(s, FetchRequest("n", f"http://public.test:{port}/hop"), 10_000)
            meta = await fetch_one(s, FetchRequest("n", f"http://public.test:{port}/meta"), 10_000)
        return ok, hop, meta

    ok, hop, meta = asyncio.run(go())
    assert ok.error == "cannot connect to localhost"
    assert hop.error.startswith("refused: localhost is this machine") and hop.status is None
    assert meta.error.startswith("refused: 169.254.169.254 is a link-local address")
    assert len(server.log) == 3


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_ssrf_through_the_cli(tmp_path, server):
    server.expect_request("/open.xml").respond_with_data(rss(item("Private item", "p1")), content_type=RSS_T)
    open_url, shut_url = server.url_for("/open.xml"), f"http://127.0.0.1:{closed_port()}/open.xml"
    cfg = config(tmp_path, source("svcopen", open_url) + source("svcshut", shut_url)
                 + source("byname", f"http://localhost:{server.port}/open.xml"), fetch="")  # fmt: skip
    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    assert len(server.log) == 0 and "refused: 127.0.0.1 is a loopback address" in r.stderr
    s = run_cli(cfg, "sources")
    rows = {ln.split()[0]: ln for ln in s.stdout.splitlines()[1:] if ln.strip()}
    same = {k: re.sub(r"\d+", "0", v.replace(open_url, "URL").replace(shut_url, "URL")).replace(k, "NAME")
            for k, v in rows.items()}  # fmt: skip
    assert same["svcopen"].split() == same["svcshut"].split(), rows
    assert "localhost" in rows["byname"] and "refused" in rows["byname"]
    # allowed per source, or for every source
    cfg = config(tmp_path, source("svcopen", open_url, extra="allow_private = true"), fetch="")
    assert run_cli(cfg, "fetch").returncode == 0 and len(server.log) == 1
    # a closed port of an allowed source: a connection failure, said one way
    cfg = config(tmp_path, source("svcshut", shut_url))
    run_cli(cfg, "fetch")
    line = next(ln for ln in run_cli(cfg, "sources").stdout.splitlines() if "svcshut" in ln)
    assert "cannot connect to 127.0.0.1" in line and "refused" not in line.lower().replace("svcshut", "")


def test_opml_import_warns_about_private_urls(tmp_path):
    opml = tmp_path / "in.opml"
    opml.write_text('<?xml version="1.0"?><opml version="2.0"><head><title>o</title></head><body>'
                    '<outline text="Intranet" type="rss" xmlUrl="http://127.0.0.1:9/feed.xml"/>'
                    '<outline text="Metadata" type="rss" xmlUrl="http://169.254.169.254/latest/"/>'
                    '<outline text="Public" type="rss" xmlUrl="https://example.org/feed.xml"/>'
                    "</body></opml>", encoding="utf-8")  # fmt: skip
    cfg = config(tmp_path, "", fetch="")
    r = run_cli(cfg, "sources", "import-opml", str(opml))
    assert r.returncode == 0 and "3 sources added" in r.stdout
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2 and all("not a public address" in w and "allow_private" in w for w in warnings)


# ---------------------------------------------------------------- parse time limit


def slow_parse(body, headers, ctx, dedup_patterns=None):
    """Stands in for a parser stuck on a crafted document (module level: workers import it)."""
    if body == b"slow":
        time.sleep(60)
    return os.getpid()


def paced_parse(body, headers, ctx, dedup_patterns=None):
    """A parse that takes `body` seconds (module level: workers import it)."""
    time.sleep(float(body))
    return os.getpid()


def test_a_waiting_parse_is_not_charged_for_the_one_ahead_of_it(monkeypatch):
    """One worker, two parses of 1.2 s each under a 2 s limit: the second waits for the first
    and finishes 2.4 s after it was handed over, yet neither is abandoned."""
    from aggregator.sources import parsing
    from aggregator.workers import process_pool

    monkeypatch.setattr(parsing, "parse_with_features", paced_parse)
    parsers = parsing.Parsers(2.0, lambda: process_pool(1, []))
    ctx = FeedContext("s", "http://x/")

    async def go():
        # The worker started and this module imported in it first: on a busy machine that took
        # most of a second, which is the start-up's, not the waiting parse's, to account for.
        await parsers.parse(b"0", {}, ctx)
        return await asyncio.gather(parsers.parse(b"1.2", {}, ctx), parsers.parse(b"1.2", {}, ctx),
                                    return_exceptions=True)  # fmt: skip

    try:
        first, second = asyncio.run(go())
    finally:
        parsers.shutdown()
    assert first == second and isinstance(first, int) and parsers.replaced == 0


def test_a_parse_over_the_limit_is_abandoned_in_threads(monkeypatch):
    from aggregator.sources import parsing

    monkeypatch.setattr(parsing, "parse_with_features", slow_parse)
    parsers = parsing.Parsers(0.5)

    async def go():
        started = time.monotonic()
        with pytest.raises(FeedError, match=r"longer than 0\.5 s"):
            await parsers.parse(b"slow", {}, FeedContext("s", "http://x/"))
        assert time.monotonic() - started < 5
        return await parsers.parse(b"fast", {}, FeedContext("s", "http://x/"))

    assert asyncio.run(go()) == os.getpid()


def test_a_parse_over_the_limit_replaces_its_worker_process(monkeypatch):
    from aggregator.sources import parsing
    from aggregator.workers import process_pool

    monkeypatch.setattr(parsing, "parse_with_features", slow_parse)  # pickled by name: workers import it
    pools = []

    def make():
        pools.append(process_pool(1, []))
        return pools[-1]

    # 3 s: the replacement pool's worker starts and imports this module (by name, to unpickle
    # the stand-in) within the queued parse's limit, on a loaded machine too.
    parsers = parsing.Parsers(3.0, make)
    ctx = FeedContext("s", "http://x/")

    async def go():
        first = await parsers.parse(b"fast", {}, ctx)
        started = time.monotonic()
        results = await asyncio.gather(parsers.parse(b"slow", {}, ctx), parsers.parse(b"fast", {}, ctx),
                                       return_exceptions=True)  # fmt: skip
        assert time.monotonic() - started < 10
        return first, results, await parsers.parse(b"fast", {}, ctx)

    try:
        first, (slow, queued), after = asyncio.run(go())
    finally:
        parsers.shutdown()
    assert isinstance(slow, FeedError) and "abandoned" in str(slow)
    assert isinstance(queued, int) and after != first and parsers.replaced == 1
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)  # the stuck worker is gone, not left running
