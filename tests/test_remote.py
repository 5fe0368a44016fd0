"""Remote sources: the pure scheduling/HTTP decisions, then real fetches from a server on 127.0.0.1."""

from __future__ import annotations

import gzip
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from werkzeug import Request, Response

from aggregator.config import load_config
from aggregator.pipeline import fetch, fetch_one, update
from aggregator.sources.remote import (
    BACKOFF_CAP,
    FAILED,
    FETCHED,
    GONE,
    HINT_CAP,
    NOT_MODIFIED,
    REDIRECT_GRACE,
    USER_AGENT,
    FetchResult,
    SourceState,
    apply_hints,
    backoff_delay,
    decide,
    is_due,
    parse_max_age,
    parse_retry_after,
    redirect_step,
)
from aggregator.store import Store
from aggregator.store.schema import ENTRIES, SOURCES

DATA = Path(__file__).parent / "data" / "feeds"
NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------- pure decisions


def test_is_due():
    s = SourceState("http://x/")
    assert is_due(s, NOW)
    assert not is_due(SourceState("http://x/", next_due=NOW + timedelta(seconds=1)), NOW)
    assert is_due(SourceState("http://x/", next_due=NOW), NOW)
    assert not is_due(SourceState("http://x/", disabled="410"), NOW)


def test_backoff_doubles_with_jitter_and_caps_at_a_day():
    assert backoff_delay(1, 1800, 0.0) == 1800
    assert backoff_delay(2, 1800, 0.0) == 3600
    assert backoff_delay(3, 1800, 0.0) == 7200
    assert 0.8 * 7200 <= backoff_delay(3, 1800, 0.999) < 7200
    assert backoff_delay(40, 1800, 0.0) == BACKOFF_CAP  # a week-long outage is still polled daily
    assert backoff_delay(10_000, 1800, 0.5) <= BACKOFF_CAP


def test_hints_only_lengthen_within_bounds():
    assert apply_hints(1800, None, None) == 1800
    assert apply_hints(1800, 600) == 1800  # never shorter than configured
    assert apply_hints(1800, 7200) == 7200
    assert apply_hints(1800, 30 * 86400) == HINT_CAP  # a "monthly" hint cannot park a source for a month
    assert apply_hints(2 * 86400, 30 * 86400) == 2 * 86400  # nor shorten a long configured interval
    assert apply_hints(1800, 3600, 5400) == 5400


def test_retry_after_and_max_age():
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(format_datetime(NOW + timedelta(hours=2), usegmt=True), NOW) == 7200
    assert parse_retry_after(format_datetime(NOW - timedelta(hours=2), usegmt=True), NOW) == 0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None
    assert parse_max_age("public, max-age=3600") == 3600
    assert parse_max_age("s-maxage=10, max-age=60") == 60
    assert parse_max_age("no-cache, max-age=3600") is None
    assert parse_max_age(None) is None


def test_permanent_redirect_needs_a_grace_of_consecutive_fetches():
    s = SourceState("http://old/")
    for _ in range(REDIRECT_GRACE - 1):
        s = redirect_step(s, "http://new/")
        assert s.location == "http://old/"
    assert redirect_step(s, "http://new/").location == "http://new/"
    # A fetch that is not redirected resets the count; so does a different target.
    assert redirect_step(s, None).moved_count == 0
    assert redirect_step(s, "http://other/").moved_count == 1


def result(status, **kw) -> FetchResult:
    kw.setdefault("final_url", "http://x/")
    return FetchResult("s", "http://x/", status, **kw)


def test_decide_success_resets_errors_and_stores_validators():
    s = SourceState("http://x/", error_count=3, last_error="HTTP 500")
    new, outcome = decide(s, result(200, headers={"etag": '"v1"', "last-modified": "Mon"}), 1800, NOW, rand=0)
    assert outcome == FETCHED
    assert (new.etag, new.last_modified, new.error_count, new.last_error) == ('"v1"', "Mon", 0, None)
    assert new.next_due == NOW + timedelta(seconds=1800)
    new, outcome = decide(new, result(304, headers={"cache-control": "max-age=7200"}), 1800, NOW, rand=0)
    assert outcome == NOT_MODIFIED and new.etag == '"v1"'  # kept when a 304 does not repeat it
    assert new.next_due == NOW + timedelta(seconds=7200)


def test_decide_parse_error_keeps_old_validators():
    s = SourceState("http://x/", etag='"old"')
    new, outcome = decide(s, result(200, headers={"etag": '"new"'}), 1800, NOW, parse_error="not a feed", rand=0)
    assert outcome == FAILED and new.etag == '"old"'  # else the next fetch would 304 a broken document
    assert (new.last_status, new.last_error, new.error_count) == (200, "not a feed", 1)


def test_decide_errors_back_off_and_retry_after():
    s = SourceState("http://x/", error_count=2)
    new, outcome = decide(s, result(500), 1800, NOW, rand=0)
    assert outcome == FAILED and new.error_count == 3 and new.next_due == NOW + timedelta(seconds=7200)
    assert new.last_error == "HTTP 500"
    new, _ = decide(SourceState("http://x/"), result(429, headers={"retry-after": "36000"}), 1800, NOW, rand=0)
    assert new.next_due == NOW + timedelta(seconds=36000) and "Retry-After 36000" in new.last_error
    new, _ = decide(SourceState("http://x/"), result(503, headers={"retry-after": "9999999"}), 1800, NOW, rand=0)
    assert new.next_due == NOW + timedelta(seconds=BACKOFF_CAP)
    new, _ = decide(SourceState("http://x/"), result(None, error="timed out after 5 s"), 1800, NOW, rand=0)
    assert new.last_status is None and new.last_error == "timed out after 5 s"


def test_decide_410_disables_and_success_re_enables():
    new, outcome = decide(SourceState("http://x/"), result(410), 1800, NOW)
    assert outcome == GONE and new.disabled and "410" in new.disabled and new.next_due is None
    again, outcome = decide(new, result(200), 1800, NOW)
    assert outcome == FETCHED and again.disabled is None


def test_decide_moves_after_grace_and_drops_validators():
    s = SourceState("http://old/", etag='"e"', moved_to="http://new/", moved_count=REDIRECT_GRACE - 1)
    r = FetchResult("s", "http://old/", 200, headers={}, final_url="http://new/", permanent="http://new/")
    new, _ = decide(s, r, 1800, NOW)
    assert new.location == "http://new/" and new.etag is None


# ---------------------------------------------------------------- real HTTP


def make_config(tmp_path: Path, sources: dict[str, str], fetch_opts: str = "timeout = 5", extra: str = ""):
    body = [
        '[database]\nurl = "sqlite:///db/agg.sqlite3"',
        '[output]\ndir = "out"\nbase_url = "http://feeds.example.org/"\ntitle = "T"',
        f"[fetch]\nallow_private = true\n{fetch_opts}",  # the test server is on 127.0.0.1
        extra,
    ]
    for name, url in sources.items():
        body.append(f'[[sources]]\nname = "{name}"\nurl = "{url}"\ncategories = ["remote"]')
    cfg = tmp_path / "config.toml"
    cfg.write_text("\n".join(body) + "\n", encoding="utf-8")
    return load_config(cfg)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(f"sqlite:///{tmp_path / 'db' / 'agg.sqlite3'}")
    yield s
    s.close()


def rows(store: Store, name: str) -> list:
    """The source's stored entries (rows with a column per attribute), by key."""
    with store.engine.connect() as c:
        src = c.execute(select(SOURCES).where(SOURCES.c.name == name)).one()
        return c.execute(select(ENTRIES).where(ENTRIES.c.source_id == src.id).order_by(ENTRIES.c.key)).all()


def source(store: Store, name: str):
    return next(r for r in store.source_rows() if r.name == name)


def serve(server: HTTPServer, path: str, name: str, ctype: str = "application/xml", **headers):
    server.expect_request(path).respond_with_data((DATA / name).read_bytes(), content_type=ctype, headers=headers)


VERSIONS = {
    "rss091.xml": "Café opens in town",
    "rss092.xml": "Titled item",
    "rss10.rdf": "RDF item A",
    "rss20.xml": "Markets rally & close higher",
    "atom03.xml": "Atom 0.3 entry",
    "atom10.xml": "Atom entry with xml:base",
    "gb2312.xml": "央行发布最新货币政策报告",
    "jsonfeed.json": "JSON item one",
}


def test_every_version_fetched_parsed_and_stored(server, store, tmp_path):
    for name in VERSIONS:
        serve(server, f"/{name}", name, "application/feed+json" if name.endswith(".json") else "application/xml")
    settings = make_config(tmp_path, {n: server.url_for(f"/{n}") for n in VERSIONS})
    report = fetch(store, settings)
    assert (report.sources, report.fetched, report.failed) == (len(VERSIONS), len(VERSIONS), 0), report.errors
    for name, title in VERSIONS.items():
        stored = rows(store, name)
        assert title in {r.title for r in stored}, name
        assert source(store, name).last_status == 200
    assert report.new == sum(len(rows(store, n)) for n in VERSIONS) and len(set(report.touched)) == report.new
    assert "feeds fetched" in report.summary()
    req = server.log[0][0]
    assert req.headers["User-Agent"] == USER_AGENT and "aggregator/" in USER_AGENT
    assert "application/atom+xml" in req.headers["Accept"] and "gzip" in req.headers["Accept-Encoding"]


def test_relative_links_resolve_against_the_served_url(server, store, tmp_path):
    serve(server, "/feeds/relative.xml", "relative.xml")
    settings = make_config(tmp_path, {"rel": server.url_for("/feeds/relative.xml")})
    fetch(store, settings)
    [row] = rows(store, "rel")
    base = server.url_for("/")
    assert row.link == f"{base}posts/rel-1"
    assert f'href="{base}about"' in row.content and f'src="{base}feeds/img/a.png"' in row.content


def test_items_without_guid_use_link_identity(server, store, tmp_path):
    serve(server, "/noguid.xml", "noguid.xml")
    settings = make_config(tmp_path, {"ng": server.url_for("/noguid.xml")})
    fetch(store, settings)
    fetch(store, settings)
    keys = [r.key for r in rows(store, "ng")]
    assert len(keys) == 3 and "link:http://noguid.example.com/1" in keys
    assert any(k.startswith("hash:") for k in keys)
    src = source(store, "ng")
    assert src.identity == "link" and "no GUID" in src.identity_reason
    first_seen = {r.key: r.first_seen for r in rows(store, "ng")}
    assert all(r.published is None or r.key.startswith(("link", "hash")) for r in rows(store, "ng"))
    assert first_seen == {r.key: r.first_seen for r in rows(store, "ng")}


def test_conditional_get_round_trip(server, store, tmp_path):
    body = (DATA / "rss20.xml").read_bytes()
    seen: list[tuple[str | None, str | None]] = []

    def handler(request: Request) -> Response:
        seen.append((request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")))
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(body, headers={"ETag": '"v1"', "Last-Modified": "Mon, 05 Sep 2022 08:00:00 GMT"})

    server.expect_request("/c.xml").respond_with_handler(handler)
    settings = make_config(tmp_path, {"c": server.url_for("/c.xml")})
    first = fetch(store, settings)
    assert first.fetched == 1 and first.new == 2
    second = fetch(store, settings)
    assert seen == [(None, None), ('"v1"', "Mon, 05 Sep 2022 08:00:00 GMT")]
    assert (second.not_modified, second.fetched, second.new, second.unchanged, second.touched) == (1, 0, 0, 0, [])
    src = source(store, "c")
    assert (src.etag, src.last_status, src.error_count) == ('"v1"', 304, 0)


def test_refetch_with_changed_content_updates_the_entry(server, store, tmp_path):
    v1 = (DATA / "rss20.xml").read_bytes()
    v2 = v1.replace(b"Plain text body", b"Corrected body text")
    served = [v1]
    server.expect_request("/e.xml").respond_with_handler(lambda r: Response(served[0]))
    settings = make_config(tmp_path, {"e": server.url_for("/e.xml")})
    fetch(store, settings)
    before = {r.key: r for r in rows(store, "e")}
    served[0] = v2
    report = fetch(store, settings)
    assert (report.new, report.updated, report.unchanged) == (0, 1, 1)
    after = {r.key: r for r in rows(store, "e")}
    assert after.keys() == before.keys()
    key = "guid:https://two.example.com/2022/09/04/second"
    assert "Corrected body text" in after[key].content and after[key].uid == before[key].uid
    assert after[key].updated is not None  # the change is news: its updated time moved
    assert report.touched == [after[key].id]


def test_guids_changing_every_fetch_fall_back_to_links(server, store, tmp_path):
    template = (
        '<rss version="2.0"><channel><title>t</title><link>http://g.test/</link><description>d</description>'
        '<item><title>One</title><link>http://g.test/1</link><guid isPermaLink="false">{0}-1</guid></item>'
        '<item><title>Two</title><link>http://g.test/2</link><guid isPermaLink="false">{0}-2</guid></item>'
        "</channel></rss>"
    )
    fetches = [0]

    def handler(request: Request) -> Response:
        fetches[0] += 1
        return Response(template.format(f"session{fetches[0]}"), content_type="application/rss+xml")

    server.expect_request("/g.xml").respond_with_handler(handler)
    settings = make_config(tmp_path, {"g": server.url_for("/g.xml")})
    fetch(store, settings)
    uids = sorted(r.uid for r in rows(store, "g"))
    report = fetch(store, settings)
    src = source(store, "g")
    assert src.identity == "link" and "change between fetches" in src.identity_reason
    assert report.new == 0, "the stored entries were re-keyed, not duplicated"
    assert sorted(r.key for r in rows(store, "g")) == ["link:http://g.test/1", "link:http://g.test/2"]
    assert sorted(r.uid for r in rows(store, "g")) == uids
    assert fetch(store, settings).new == 0


def test_errors_are_recorded_per_source_and_410_disables(server, store, tmp_path):
    server.expect_request("/404").respond_with_data("no", status=404)
    server.expect_request("/500").respond_with_data("oops", status=500)
    server.expect_request("/410").respond_with_data("gone", status=410)
    serve(server, "/ok.xml", "rss20.xml")
    settings = make_config(
        tmp_path, {"nf": server.url_for("/404"), "ise": server.url_for("/500"), "gone": server.url_for("/410"),
                   "ok": server.url_for("/ok.xml")},
    )  # fmt: skip
    report = fetch(store, settings)
    assert (report.fetched, report.failed) == (1, 3)
    assert {e.source for e in report.errors} == {"nf", "ise", "gone"}
    nf, ise, gone = source(store, "nf"), source(store, "ise"), source(store, "gone")
    assert (nf.last_status, nf.error_count, nf.last_error) == (404, 1, "HTTP 404")
    assert (ise.last_status, ise.error_count) == (500, 1) and ise.next_due > ise.last_fetch
    assert gone.disabled and "410 Gone" in gone.disabled
    fetch(store, settings)
    assert source(store, "ise").error_count == 2
    assert len([r for r, _ in server.log if r.path == "/410"]) == 1, "a disabled source is not fetched again"
    # Named explicitly, it is tried again (and would come back if the feed did).
    fetch(store, settings, ["gone"])
    assert len([r for r, _ in server.log if r.path == "/410"]) == 2


def test_429_retry_after_applies_to_that_url_only(server, store, tmp_path):
    server.expect_request("/busy.xml").respond_with_data("", status=429, headers={"Retry-After": "7200"})
    serve(server, "/fine.xml", "rss20.xml")
    settings = make_config(tmp_path, {"busy": server.url_for("/busy.xml"), "fine": server.url_for("/fine.xml")},
                           'timeout = 5\nevery = "10m"')  # fmt: skip
    fetch(store, settings)
    busy, fine = source(store, "busy"), source(store, "fine")
    assert busy.next_due - busy.last_fetch >= timedelta(seconds=7200) and "Retry-After" in busy.last_error
    assert fine.next_due - fine.last_fetch == timedelta(hours=2)  # the feed's <ttl>120</ttl>, not Retry-After
    later = busy.last_fetch + timedelta(minutes=30)
    r = fetch(store, settings, due_only=True, now=later)
    assert r.sources == 0  # fine's ttl and busy's Retry-After both still running


def test_permanent_and_temporary_redirects(server, store, tmp_path):
    serve(server, "/new.xml", "rss20.xml")
    serve(server, "/temp-target.xml", "atom10.xml")
    server.expect_request("/old.xml").respond_with_data("", status=301, headers={"Location": "/new.xml"})
    server.expect_request("/temp.xml").respond_with_data("", status=302, headers={"Location": "/temp-target.xml"})
    settings = make_config(tmp_path, {"moved": server.url_for("/old.xml"), "temp": server.url_for("/temp.xml")})
    for i in range(REDIRECT_GRACE):
        report = fetch(store, settings)
        assert report.fetched == 2, report.errors
        moved = source(store, "moved")
        if i < REDIRECT_GRACE - 1:
            assert moved.location == server.url_for("/old.xml") and moved.moved_count == i + 1
    assert moved.location == server.url_for("/new.xml") and moved.moved_to is None
    temp = source(store, "temp")
    assert temp.location == server.url_for("/temp.xml") and temp.moved_count == 0
    assert len(rows(store, "moved")) == 2 and len(rows(store, "temp")) == 2  # no duplicates along the way
    n = len([r for r, _ in server.log if r.path == "/old.xml"])
    fetch(store, settings)
    assert len([r for r, _ in server.log if r.path == "/old.xml"]) == n  # now asks the new URL directly
    # Editing the configured URL starts the source afresh at the new URL.
    settings = make_config(tmp_path, {"moved": server.url_for("/temp-target.xml")})
    fetch(store, settings)
    assert source(store, "moved").location == server.url_for("/temp-target.xml")


def test_stalled_server_is_abandoned_while_others_complete(server, store, tmp_path):
    release = threading.Event()

    def stall(request: Request) -> Response:
        release.wait(30)
        return Response("late")

    server.expect_request("/stall.xml").respond_with_handler(stall)
    for name in ("rss20.xml", "atom10.xml", "rss10.rdf"):
        serve(server, f"/{name}", name)
    others = {n: server.url_for(f"/{n}") for n in ("rss20.xml", "atom10.xml", "rss10.rdf")}
    settings = make_config(tmp_path, {"stall": server.url_for("/stall.xml"), **others}, "timeout = 1\nper_host = 2")
    try:
        report = fetch(store, settings)
    finally:
        release.set()
    assert (report.fetched, report.failed) == (3, 1)
    stalled = source(store, "stall")
    assert stalled.last_error == "timed out after 1 s" and stalled.error_count == 1
    assert all(rows(store, n) for n in ("rss20.xml", "atom10.xml", "rss10.rdf"))


def test_malformed_feed_is_ingested_and_flagged(server, store, tmp_path):
    serve(server, "/bad.xml", "malformed.xml")
    server.expect_request("/html").respond_with_data("<html><p>hi</p></html>", content_type="text/html")
    settings = make_config(tmp_path, {"bad": server.url_for("/bad.xml"), "html": server.url_for("/html")})
    report = fetch(store, settings)
    assert len(rows(store, "bad")) == 2
    assert "not well-formed" in source(store, "bad").feed_flags
    html = source(store, "html")
    assert html.last_status == 200 and "not an RSS, Atom or JSON feed" in html.last_error and html.etag is None
    assert report.failed == 1


def test_entity_bomb_over_http(server, store, tmp_path):
    serve(server, "/bomb.xml", "bomb_oneline.xml")
    settings = make_config(tmp_path, {"bomb": server.url_for("/bomb.xml")})
    fetch(store, settings)
    for r in rows(store, "bomb"):
        assert len(r.content) + len(r.title) < 10_000


def test_gzip_body_is_decoded(server, store, tmp_path):
    body = gzip.compress((DATA / "atom10.xml").read_bytes())
    server.expect_request("/gz.xml").respond_with_data(
        body, content_type="application/atom+xml", headers={"Content-Encoding": "gzip"}
    )
    settings = make_config(tmp_path, {"gz": server.url_for("/gz.xml")})
    assert fetch(store, settings).fetched == 1
    assert {r.title for r in rows(store, "gz")} == {"Atom entry with xml:base", "Only updated"}


def test_oversize_bodies_are_cut_off(server, store, tmp_path):
    big = b"<rss>" + b" " * 5000 + b"</rss>"
    server.expect_request("/big.xml").respond_with_data(big)
    server.expect_request("/stream.xml").respond_with_handler(lambda r: Response(iter([big[:3000], big[3000:]])))
    settings = make_config(
        tmp_path, {"big": server.url_for("/big.xml"), "stream": server.url_for("/stream.xml")}, "max_bytes = 1024"
    )
    report = fetch(store, settings)
    assert report.failed == 2
    assert "over the 1,024-byte limit" in source(store, "big").last_error
    assert "cut off" in source(store, "stream").last_error


def test_connection_refused_is_an_error(store, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_config(tmp_path, {"down": f"http://127.0.0.1:{port}/feed.xml"})
    report = fetch(store, settings)
    down = source(store, "down")
    assert report.failed == 1 and down.last_status is None and down.error_count == 1 and down.last_error


def test_update_fetches_only_due_sources(server, store, tmp_path):
    serve(server, "/u.xml", "rss20.xml")
    settings = make_config(tmp_path, {"u": server.url_for("/u.xml")})
    first = update(store, settings)
    assert first.fetch.fetched == 1 and "1 feeds: 1 downloaded" in first.summary()
    assert (tmp_path / "out" / "remote" / "atom.xml").exists()
    second = update(store, settings)
    assert second.fetch.sources == 0 and len(server.log) == 1


def test_fetch_one_and_unknown_names(server, store, tmp_path):
    from aggregator.config import ConfigError

    serve(server, "/one.xml", "atom03.xml")
    settings = make_config(tmp_path, {"one": server.url_for("/one.xml")})
    assert fetch_one(store, settings, settings.sources[0]).fetched == 1
    with pytest.raises(ConfigError, match="no remote source named 'nope'"):
        fetch(store, settings, ["nope"])


def test_a_feed_url_must_be_http(tmp_path):
    from aggregator.config import ConfigError

    with pytest.raises(ConfigError, match=r"sources\[0\]\.url: .*absolute http\(s\) URL"):
        make_config(tmp_path, {"bad": "feed.example.com/rss"})


def test_big5_feed(server, store, tmp_path):
    body = (
        '<?xml version="1.0" encoding="big5"?><rss version="2.0"><channel><title>繁體</title>'
        "<link>http://tw.test/</link><description>d</description><item><title>臺灣新聞測試</title>"
        "<link>http://tw.test/1</link><guid>tw1</guid><description>內容</description></item></channel></rss>"
    ).encode("big5")
    server.expect_request("/big5.xml").respond_with_data(body, content_type="application/rss+xml")
    settings = make_config(tmp_path, {"tw": server.url_for("/big5.xml")})
    fetch(store, settings)
    assert [r.title for r in rows(store, "tw")] == ["臺灣新聞測試"]


def test_enclosures_are_stored_and_published(server, store, tmp_path):
    serve(server, "/pod.xml", "podcast.xml")
    settings = make_config(tmp_path, {"pod": server.url_for("/pod.xml")})
    update(store, settings)
    rss = (tmp_path / "out" / "remote" / "rss.xml").read_text(encoding="utf-8")
    url = server.url_for("/audio/ep1.mp3")
    assert f'<enclosure url="{url}" length="12345678" type="audio/mpeg"/>' in rss
    assert "ep2.mp3" not in rss  # RSS needs a length; an enclosure of unknown size is left out


def test_undated_and_future_entries_keep_their_first_seen_place(server, store, tmp_path):
    future = format_datetime(datetime.now(UTC) + timedelta(days=30), usegmt=True)
    doc = (
        '<rss version="2.0"><channel><title>t</title><link>http://d.test/</link><description>d</description>'
        "<item><title>Undated</title><link>http://d.test/1</link><description>{0}</description></item>"
        "<item><title>Future</title><link>http://d.test/2</link><pubDate>" + future + "</pubDate>"
        "<description>{0}</description></item></channel></rss>"
    )
    served = [doc.format("v1")]
    server.expect_request("/d.xml").respond_with_handler(lambda r: Response(served[0]))
    settings = make_config(tmp_path, {"d": server.url_for("/d.xml")})
    fetch(store, settings, now=NOW)
    first = {r.title: r for r in rows(store, "d")}
    assert first["Undated"].published is None and first["Undated"].sort_date == NOW
    assert first["Future"].sort_date == NOW  # clamped for ordering; its own date is kept
    assert first["Future"].published > NOW
    served[0] = doc.format("v2")
    report = fetch(store, settings, now=NOW + timedelta(days=1))
    assert report.updated == 2
    again = {r.title: r for r in rows(store, "d")}
    assert again["Undated"].sort_date == NOW and again["Future"].sort_date == NOW
    assert again["Undated"].updated == NOW + timedelta(days=1)  # the change itself is dated
    assert fetch(store, settings, now=NOW + timedelta(days=2)).unchanged == 2  # not "now" on every fetch


ONE = (
    '<rss version="2.0"><channel><title>Feed {0}</title><link>http://many.test/</link><description>d</description>'
    "<item><title>Story {0}</title><link>http://many.test/{0}</link><guid>m{0}</guid></item></channel></rss>"
)


@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_many_feeds_parse_in_worker_processes(server, store, tmp_path, monkeypatch, start):
    import threading

    import aggregator.pipeline as pipeline

    if start == "fork":  # as in the CLI: no other thread (the test server's do not matter to a parser)
        monkeypatch.setattr(threading, "active_count", lambda: 1)
    n = pipeline.STATE_BATCH + 20  # also more source states than one batch
    assert n >= pipeline.PARSE_PROCESSES_MIN
    for i in range(n):
        server.expect_request(f"/many/{i}.xml").respond_with_data(ONE.format(i), content_type="application/rss+xml")
    settings = make_config(tmp_path, {f"m{i}": server.url_for(f"/many/{i}.xml") for i in range(n)}, "per_host = 16")
    report = fetch(store, settings)
    assert (report.fetched, report.new) == (n, n), report.errors[:3]
    assert all(r.last_status == 200 and r.next_due is not None for r in store.source_rows())
    assert fetch(store, settings).not_modified == 0  # no validators were offered, so each is fetched again


EDITION = (
    '<rss version="2.0"><channel><title>Feed {0}</title><link>http://many.test/</link><description>d</description>'
    "<item><title>Story {0}</title><link>http://many.test/{0}</link><guid>m{0}</guid>"
    "<description>edition {1}</description></item></channel></rss>"
)


@pytest.mark.parametrize("entry", ["fetch", "fetch_sources"])
def test_a_run_expecting_304s_parses_in_worker_processes_once_documents_keep_coming(server, store, tmp_path,
                                                                                     monkeypatch, entry):  # fmt: skip
    """Every source has validators, so a run expects 304s and parses what comes in threads. When
    more than PARSE_PROCESSES_MIN documents come (feeds that all changed), the rest are parsed in
    worker processes, started then; up to that many, no process is started. The same for a fetch
    worker's batch (`fetch_sources`), which always plans for threads."""
    import aggregator.pipeline as pipeline
    import aggregator.workers as workers
    from aggregator.fetching import fetch_sources

    if entry == "fetch_sources":
        fetch = lambda store, settings: fetch_sources(store, settings, settings.sources)  # noqa: E731
    else:
        fetch = pipeline.fetch

    n = pipeline.PARSE_PROCESSES_MIN + 6
    editions = dict.fromkeys(range(n), "a")

    def changing(request: Request) -> Response:
        i = int(request.path.rsplit("/", 1)[1].split(".")[0])
        tag = f'"{editions[i]}{i}"'
        if request.headers.get("If-None-Match") == tag:
            return Response(status=304, headers={"ETag": tag})
        return Response(EDITION.format(i, editions[i]), content_type="application/rss+xml", headers={"ETag": tag})

    for i in range(n):
        server.expect_request(f"/late/{i}.xml").respond_with_handler(changing)
    settings = make_config(tmp_path, {f"l{i}": server.url_for(f"/late/{i}.xml") for i in range(n)}, "per_host = 8")
    assert fetch(store, settings).new == n  # no validators yet
    started = []
    real = workers.process_pool
    monkeypatch.setattr(workers, "cpu_workers", lambda limit=8: 2)  # whatever this machine has
    monkeypatch.setattr(workers, "process_pool", lambda *a, **kw: started.append(a) or real(*a, **kw))

    for i in range(pipeline.PARSE_PROCESSES_MIN):
        editions[i] = "b"
    report = fetch(store, settings)
    assert (report.updated, report.not_modified, started) == (pipeline.PARSE_PROCESSES_MIN, 6, [])

    editions.update(dict.fromkeys(range(n), "c"))
    report = fetch(store, settings)
    assert (report.fetched, report.updated) == (n, n), report.errors[:3]
    assert len(started) == 1 and started[0][0] == 2
    with store.engine.connect() as c:
        assert set(c.scalars(select(ENTRIES.c.content))) == {"edition c"}


def test_a_cycle_of_304s_stores_every_sources_new_state(server, store, tmp_path):
    """304s are recorded on the event loop and their states written in batches by the writer
    thread: more sources than two batches, and every one's state is stored."""
    import aggregator.pipeline as pipeline

    n = 2 * pipeline.STATE_BATCH + 7

    def conditional(request: Request) -> Response:
        i = request.path.rsplit("/", 1)[1].split(".")[0]
        tag = f'"v{i}"'
        if request.headers.get("If-None-Match") == tag:
            return Response(status=304, headers={"ETag": tag})
        return Response(ONE.format(i), content_type="application/rss+xml", headers={"ETag": tag})

    for i in range(n):
        server.expect_request(f"/c/{i}.xml").respond_with_handler(conditional)
    settings = make_config(tmp_path, {f"c{i}": server.url_for(f"/c/{i}.xml") for i in range(n)}, "per_host = 16")
    assert fetch(store, settings).fetched == n
    before = {r.name: r.last_fetch for r in store.source_rows()}
    later = max(before.values()) + timedelta(minutes=1)  # fetch times are whole seconds
    report = fetch(store, settings, now=later)
    assert (report.not_modified, report.fetched, report.failed) == (n, 0, 0)
    rows = store.source_rows()
    assert len(rows) == n and all(r.last_status == 304 and r.etag == f'"v{r.name[1:]}"' for r in rows)
    assert all(r.last_fetch >= later > before[r.name] for r in rows)


def test_a_parser_crash_is_that_feeds_error(server, store, tmp_path, monkeypatch):
    import aggregator.sources.feeds as feeds

    def boom(*a, **k):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(feeds, "parse_feed", boom)
    serve(server, "/x.xml", "rss20.xml")
    settings = make_config(tmp_path, {"x": server.url_for("/x.xml")})
    report = fetch(store, settings)
    assert report.failed == 1 and source(store, "x").last_error == "cannot parse: RuntimeError: parser bug"


def test_fetch_one_needs_a_url(store, tmp_path):
    from aggregator.config import ConfigError, SourceSettings

    settings = make_config(tmp_path, {})
    with pytest.raises(ConfigError, match="has no url"):
        fetch_one(store, settings, SourceSettings(name="folder", path=tmp_path))


@pytest.mark.parametrize(("opts", "limit"), [("per_host = 2", 2), ("concurrency = 1\nper_host = 4", 1)])
def test_concurrency_limits_hold(server, store, tmp_path, opts, limit):
    import time

    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    body = (DATA / "rss20.xml").read_bytes()

    def slow(request: Request) -> Response:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.2)  # long enough for every allowed request to overlap
        with lock:
            state["now"] -= 1
        return Response(body)

    for i in range(6):
        server.expect_request(f"/slow/{i}.xml").respond_with_handler(slow)
    settings = make_config(tmp_path, {f"s{i}": server.url_for(f"/slow/{i}.xml") for i in range(6)}, opts)
    assert fetch(store, settings).fetched == 6
    assert state["max"] == limit


def test_redirect_loops_are_bounded(server, store, tmp_path):
    server.expect_request("/loop").respond_with_data("", status=302, headers={"Location": "/loop"})
    settings = make_config(tmp_path, {"loop": server.url_for("/loop")})
    assert fetch(store, settings).failed == 1
    assert source(store, "loop").last_error == "more than 5 redirects"
    assert len(server.log) <= 6  # bounded, not followed forever
