"""Dedup's pure parts: canonical URLs, normalized text, fingerprints, MinHash/LSH, titles, the
canonical-choice rule and the clustering decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aggregator import clustering, dedup
from aggregator.clustering import compare, decide, rank, title_core, title_similarity, titles_agree
from aggregator.config import DedupSettings
from aggregator.features import (
    NUM_PERM,
    canonical_url,
    features,
    fingerprint,
    normalized_text,
    shingles,
    signature,
    similarity,
    tracking_patterns,
    url_key,
)
from aggregator.lsh import BANDS, TEXT_SPACE, URL_SPACE, band_keys, index_keys, kind
from aggregator.model import ClusterEntry, FileStamp
from aggregator.sources.articles import ArticleContext, parse_article
from tests.conftest import EXAMPLES

PORT = [
    "临江港务集团周三宣布，位于东岸的第三期集装箱码头将于明年三月投入试运营，新增泊位六个，设计年吞吐能力达到四百万标准箱。",
    "集团副总经理在发布会上介绍，新码头采用远程操控岸桥和无人驾驶集卡，单箱作业能耗比老码头下降约两成。",
    "据了解，三期工程总投资约八十二亿元，其中近三成资金来自今年发行的专项债券，其余部分由集团自筹和银行贷款解决。",
    "业内人士分析，随着内陆班列线路不断加密，港口腹地正在向西延伸，新增运力有望在两年内被市场消化。",
    "不过也有航运分析师提醒，今年以来全球集装箱运价波动较大，港口扩能需要警惕阶段性过剩的风险。",
    "按照规划，临江港还将同步建设一座冷链物流中心，重点服务进口水果和水产品的快速通关。",
    "当地海关表示，将在新码头试点提前申报和抵港直装模式，进一步压缩货物在港停留时间。",
    "集团方面透露，明年计划新开通三条近洋航线，覆盖东南亚主要港口。",
]
PORT_RESULTS = [
    "临江港务集团周三同时披露了前三季度经营数据，港口货物吞吐量同比增长百分之六点八，其中散货业务增长最快。",
    "财务报告显示，集团前三季度营业收入一百一十五亿元，净利润同比小幅下滑，主要原因是燃料和人工成本上升。",
    "公司解释称，散杂货码头今年完成了环保改造，粉尘排放明显减少，但改造期间部分泊位停工影响了收入。",
    "在投资者交流会上，有机构询问集团是否考虑分拆物流业务上市，管理层表示目前没有相关计划。",
    "分析人士认为，港口行业整体进入平稳增长阶段，未来竞争将更多体现在服务效率和综合物流能力上。",
    "集团还宣布，董事会已批准新一轮员工培训计划，重点提升自动化设备的运维能力。",
]
EN = [
    "Harbor Logistics said on Wednesday that its third container terminal on the east bank will start trial "
    "operations next March, adding six berths and four million boxes of yearly capacity.",
    "The deputy general manager told a briefing that the terminal uses remote-controlled cranes and driverless "
    "trucks, cutting energy use per box by about a fifth compared with the old quays.",
    "The project costs about 8.2 billion yuan; nearly a third comes from special bonds issued this year and "
    "the rest from the group's own funds and bank loans.",
    "Analysts said denser inland rail links are pushing the port's hinterland west, so the new capacity should "
    "be absorbed within two years, although freight rates have swung widely this year.",
]


def html(paras: list[str]) -> str:
    return "".join(f"<p>{p}</p>" for p in paras)


def item(i: int, title: str = "t", body: str = "", link: str | None = None, **kw) -> ClusterEntry:
    f = features(link, body)
    kw.setdefault("first_seen", datetime(2022, 9, 7, tzinfo=UTC))
    kw.setdefault("published", datetime(2022, 9, 7, tzinfo=UTC))
    return ClusterEntry(
        id=i,
        source=kw.pop("source", "local"),
        title=title,
        updated=kw.pop("updated", None),
        url_key=f.url_key,
        fingerprint=f.fingerprint,
        text_chars=f.text_chars,
        signature=f.signature,
        **kw,
    )


# ------------------------------------------------------------------ canonical URL


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://News.Example.CN:80/port/3391.html#top", "http://news.example.cn/port/3391.html"),
        ("https://example.com:443/a/b/", "https://example.com/a/b"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com//a//b", "http://example.com/a/b"),
        ("http://e.com/a?utm_source=wx&utm_medium=share&spm=a1.b2&id=3", "http://e.com/a?id=3"),
        ("http://e.com/a?from=timeline&fbclid=x&gclid=y&UTM_Campaign=z", "http://e.com/a"),
        ("http://e.com/a?b=2&a=1&a=0", "http://e.com/a?a=0&a=1&b=2"),
        ("http://e.com/新闻/一.html", "http://e.com/%E6%96%B0%E9%97%BB/%E4%B8%80.html"),
        ("http://e.com/%e6%96%b0%e9%97%bb", "http://e.com/%E6%96%B0%E9%97%BB"),
        ("http://e.com/a?q=a b", "http://e.com/a?q=a%20b"),
    ],
)
def test_canonical_url_normalizes(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


@pytest.mark.parametrize("url", [None, "", "ftp://e.com/a", "mailto:a@b.c", "/relative/path", "http://e.com:99999/a"])
def test_canonical_url_rejects_what_is_not_a_web_address(url: str | None) -> None:
    assert canonical_url(url) is None


def test_configured_tracking_params_add_to_the_defaults() -> None:
    patterns = tracking_patterns(["sharer", "wt_*", " "])
    assert canonical_url("http://e.com/a?sharer=1&wt_zz=2&utm_x=3&id=4", patterns) == "http://e.com/a?id=4"
    # Without the extra list the unknown parameters are part of the address.
    assert canonical_url("http://e.com/a?sharer=1&id=4") == "http://e.com/a?id=4&sharer=1"


def test_url_key_joins_http_and_https_and_ignores_front_pages() -> None:
    assert url_key(canonical_url("http://e.com/a/1")) == url_key(canonical_url("https://E.com/a/1/"))
    assert url_key(canonical_url("http://e.com/a/1")) != url_key(canonical_url("http://e.com/a/2"))
    assert url_key(canonical_url("http://e.com/")) is None
    assert url_key(canonical_url("http://e.com/?p=1")) is not None
    assert url_key(None) is None


# ------------------------------------------------------------------ text and fingerprints


def test_normalized_text_folds_width_case_spacing_and_punctuation() -> None:
    a = normalized_text("<p>Ｈｅｌｌｏ，  世界！ 2022年</p><div>Second  line.</div>")
    b = normalized_text("<p>hello, 世界! 2022 年</p>\n<p>SECOND line</p>")
    assert a == b == "hello世界2022年secondline"


def test_normalized_text_drops_boilerplate_blocks_only() -> None:
    body = html(PORT[:2])
    noisy = (
        "<p>（文章来源：北京商报）</p>"
        + body
        + "<p>责任编辑：王小明</p><p>Source: Daily Ledger</p><p>Read more: markets</p><p>© 2022 Example</p>"
    )
    assert normalized_text(noisy) == normalized_text(body)
    long_block = "Source" + " of the river, the harbour grew" * 10
    assert "harbour" in normalized_text(f"<p>{long_block}</p>")


def test_fingerprint_same_for_reformatted_copy_and_none_for_short_text() -> None:
    a = normalized_text(html(PORT))
    b = normalized_text("<div>" + "<br>".join(p.replace("，", ", ") for p in PORT) + "</div>")
    assert fingerprint(a) == fingerprint(b) is not None
    assert fingerprint(normalized_text("<p>Read the full story.</p>")) is None
    assert fingerprint(a) != fingerprint(normalized_text(html(PORT_RESULTS)))


def test_shingles_are_4_chinese_characters_or_8_letters() -> None:
    def wide(grams) -> set[str]:
        return {g.to_bytes(8, "little").decode("utf-16-le") for g in grams}

    def narrow(grams) -> set[str]:
        return {g.to_bytes(8, "little").decode() for g in grams}

    assert wide(shingles("临江港三期码头")) == {"临江港三", "江港三期", "港三期码", "三期码头"}
    assert len(shingles("临江港三期码头")) == 4
    assert narrow(shingles("abcdefghij")) == {"abcdefgh", "bcdefghi", "cdefghij"}
    assert len(shingles("abcdefg")) == 0 and len(shingles("")) == 0
    assert "portneed" in narrow(shingles(normalized_text("<p>the port needs</p>")))
    # Mostly Chinese with some Latin: still 4 characters; mostly Latin with some Chinese: 8 bytes.
    assert wide(shingles("临江港2022年")) == {"临江港2", "江港20", "港202", "2022", "022年"}
    assert shingles("port临江").tobytes() == b"".join("port临江".encode()[o : o + 8] for o in range(3))
    # Cyrillic takes 2 bytes a letter in UTF-8: 4 letters a shingle, like Chinese.
    assert wide(shingles("москва")) == {"моск", "оскв", "сква"}


def test_unrelated_english_texts_share_few_shingles() -> None:
    """4-letter shingles made unrelated English texts look several % alike (common letter
    groups), which offers false LSH candidates by the thousand in a big store; 8 letters do not."""
    a = normalized_text(html(EN))
    b = normalized_text(
        "<p>The city council approved a new budget for the public library on Tuesday evening, "
        "after months of debate over the cost of extending its opening hours into the weekend.</p>"
        "<p>Members of the council said that the plan would be reviewed again in the spring, and "
        "that the library board had agreed to report on the number of visitors every quarter.</p>"
    )
    sa, sb = set(shingles(a)), set(shingles(b))
    assert len(sa & sb) / len(sa | sb) < 0.005
    four = [{x[i : i + 4] for i in range(len(x) - 3)} for x in (a, b)]
    assert len(four[0] & four[1]) / len(four[0] | four[1]) > 0.02  # what 4 letters gave


def test_signature_similarity_and_bands() -> None:
    text = normalized_text(html(PORT))
    sig = signature(shingles(text))
    assert sig is not None and len(sig) == NUM_PERM * 4
    assert similarity(sig, sig) == 1.0
    other = signature(shingles(normalized_text(html(PORT_RESULTS))))
    assert other is not None and similarity(sig, other) < 0.2
    keys = band_keys(sig)
    # One key per band, the band number on top, each a positive signed 64-bit integer (BIGINT).
    assert [k >> 58 for k in keys] == list(range(BANDS))
    assert all(0 <= k < 2**63 for k in keys)
    assert len(set(keys) & set(band_keys(other))) == 0
    f = features(None, html(PORT))
    assert f.keys == (*keys, (TEXT_SPACE << 58) | (f.fingerprint & (2**58 - 1)))  # no link: no URL key
    assert signature(shingles("too short")) is None
    assert similarity(b"", b"") == 0.0


def test_index_keys_put_url_and_text_digests_beside_the_bands() -> None:
    """An entry's keys in the dedup index: its bands, then its URL key and text key, each in a
    space of its own, all positive BIGINTs (a negative digest too)."""
    f = features("https://www.example.cn/a/1.html?utm_source=x", html(PORT))
    assert f.url_key is not None and f.fingerprint is not None and f.signature is not None
    keys = index_keys(-1, f.fingerprint, f.signature)
    assert keys[:BANDS] == band_keys(f.signature)
    assert keys[BANDS:] == ((URL_SPACE << 58) | (2**58 - 1), (TEXT_SPACE << 58) | (f.fingerprint & (2**58 - 1)))
    assert all(0 <= k < 2**63 for k in keys)
    assert [kind(k) for k in keys] == [0] * BANDS + [URL_SPACE, TEXT_SPACE]
    assert f.keys == index_keys(f.url_key, f.fingerprint, f.signature)
    assert index_keys(None, None, None) == ()
    # A short text has no signature and no fingerprint: only its URL key.
    assert features("https://e.com/b", "<p>短讯。</p>").keys == index_keys(url_key("https://e.com/b"), None, None)


def test_edited_reprint_stays_similar_and_shares_a_band() -> None:
    reprint = list(PORT)
    reprint[3] = "有港航专家指出，随着中欧班列和西部陆海新通道持续扩容，港口辐射范围明显扩大，新增能力消化并不困难。"
    a = features(None, html(PORT))
    b = features(None, html(reprint) + "<p>（文章来源：经济观察报）</p>")
    assert a.fingerprint != b.fingerprint
    assert a.signature and b.signature
    assert similarity(a.signature, b.signature) >= 0.6
    assert set(a.keys[:BANDS]) & set(b.keys[:BANDS])


# ------------------------------------------------------------------ titles


def test_title_core_strips_reprint_labels() -> None:
    assert title_core("【转载】临江港三期码头明年三月试运营") == "临江港三期码头明年三月试运营"
    assert title_core("转载：【独家】Port opens!") == "port opens"
    assert title_core("Reprint: UPDATE: Harbor terminal opens") == "harbor terminal opens"
    assert title_core("[Repost] Harbor, terminal opens") == "harbor terminal opens"


def test_titles_agree_on_reprints_and_apart_on_other_stories() -> None:
    t = "临江港三期码头明年三月试运营"
    assert titles_agree("【转载】" + t, t)
    assert titles_agree(t + " - 新华财经", t)
    assert titles_agree("Harbor Logistics opens third terminal | Daily Ledger", "Harbor Logistics opens third terminal")
    # Same topic, different story: wording differs.
    assert not titles_agree("临江港前三季度吞吐量增长", t)
    assert title_similarity("Harbor Logistics to open terminal in April", "Harbor Logistics to open depot in May") < 0.8
    # Figures differ: a new day's report, even with near-identical bodies.
    assert not titles_agree("人民币中间价报6.7120，上调20个基点", "人民币中间价报6.7150，上调50个基点", 0.99)
    assert not titles_agree("Fixing set at 6.7120", "Fixing set at 6.7150", 0.99)
    # A reworded headline over a near-identical body is the same story.
    assert titles_agree("Port terminal to open in March", "New berths coming to Linjiang", 0.95)
    assert not titles_agree("Port terminal to open in March", "New berths coming to Linjiang", 0.7)
    assert title_similarity("", "x") == 0.0


def test_titles_must_agree_more_the_less_the_bodies_do() -> None:
    a, b = "Harbor Logistics plans terminal in March", "Harbor Logistics opens terminal in March"
    assert title_similarity(a, b) == pytest.approx(5 / 6)
    assert titles_agree(a, b, 0.8)  # very similar bodies: most of the words suffice
    assert not titles_agree(a, b, 0.7)  # moderately similar: one headline must contain the other
    assert titles_agree("Harbor Logistics to open terminal", "Harbor Logistics set to open terminal - Wire", 0.65)


# ------------------------------------------------------------------ rule and decisions


def test_rank_priority_then_earliest_published_then_latest_updated_then_id() -> None:
    t0 = datetime(2022, 9, 7, tzinfo=UTC)
    a = ClusterEntry(1, "blog", "t", t0, None, t0)
    b = ClusterEntry(2, "wire", "t", t0 + timedelta(hours=2), None, t0)
    assert sorted([b, a], key=lambda x: rank(x, []))[0] is a
    assert sorted([a, b], key=lambda x: rank(x, ["wire"]))[0] is b
    newer = ClusterEntry(3, "blog", "t", t0, t0 + timedelta(days=1), t0)
    assert sorted([a, newer], key=lambda x: rank(x, []))[0] is newer
    twin = ClusterEntry(4, "blog", "t", t0, None, t0)
    assert sorted([twin, a], key=lambda x: rank(x, []))[0] is a
    undated = ClusterEntry(5, "blog", "t", None, None, t0 - timedelta(days=1))
    assert sorted([a, undated], key=lambda x: rank(x, []))[0] is undated


def test_compare_layers_and_negatives() -> None:
    u = "http://news.example.cn/port/3391.html"
    a = item(1, "临江港三期码头明年三月试运营", html(PORT), u)
    assert compare(a, item(2, "x", "", u + "?utm_source=wx#p"), 0.6) == ("url", 1.0)
    assert compare(a, item(3, "另一个标题", html(PORT), "http://other.example/1"), 0.6) == ("content", 1.0)
    reprint = list(PORT)
    reprint[3] = "有港航专家指出，随着中欧班列和西部陆海新通道持续扩容，港口辐射范围明显扩大，新增能力消化并不困难。"
    r = item(4, "【转载】临江港三期码头明年三月试运营", html(reprint), "http://other.example/889")
    verdict = compare(a, r, 0.6)
    assert verdict is not None and verdict[0] == "near" and 0.6 <= verdict[1] < 1
    assert compare(a, r, 0.95) is None  # below a stricter threshold
    # Same body, other headline: not confirmed when the body is short.
    short = "<p>临江港三期码头明年三月投入试运营，新增泊位六个，设计年吞吐能力达到四百万标准箱，总投资八十二亿元。</p>"
    assert compare(item(5, "临江港三期码头试运营", short), item(6, "港口新闻", short), 0.6) is None
    assert compare(item(5, "临江港三期码头试运营", short), item(6, "【转载】临江港三期码头试运营", short), 0.6)
    # Same topic, different story.
    assert compare(a, item(7, "临江港前三季度吞吐量增长6.8%", html(PORT_RESULTS)), 0.6) is None
    # A feed pointing every item at its section page: one link, different stories.
    section = "http://news.example.cn/port/"
    other = item(8, "临江港前三季度吞吐量增长6.8%", html(PORT_RESULTS), section)
    assert compare(item(9, a.title, html(PORT), section), other, 0.6) is None
    # ...but a shared link with a short or missing body, or a similar headline, is one story.
    assert compare(item(10, "Port news", "", section), other, 0.6) == ("url", 1.0)
    assert compare(item(11, "【转载】临江港前三季度吞吐量增长6.8%", html(EN), section), other, 0.6) == ("url", 1.0)


def test_seeds_stay_distinct() -> None:
    ctx = ArticleContext("local", ZoneInfo("Asia/Shanghai"), (), {}, "http://127.0.0.1/")
    items = []
    for i, name in enumerate(["000_712fa19a513a8731.txt", "001_57b60a071cc8b6e8.txt"]):
        e = parse_article((EXAMPLES / name).read_bytes(), FileStamp(name, 0, 0), ctx)
        items.append(item(i, e.title, e.content_html, e.link))
    a, b = items
    assert a.signature and b.signature and similarity(a.signature, b.signature) < 0.2
    assert compare(a, b, 0.1) is None  # even a very low threshold: the titles disagree


def _cluster_items() -> dict[int, ClusterEntry]:
    t0 = datetime(2022, 9, 7, tzinfo=UTC)
    u = "http://news.example.cn/port/3391.html"
    return {
        1: item(1, "临江港三期码头", html(PORT), u, published=t0 + timedelta(hours=1)),
        2: item(2, "临江港三期码头", html(PORT), u + "?from=x", published=t0 + timedelta(hours=2)),
        3: item(3, "临江港三期码头", html(PORT), "http://wire.example/9", published=t0, source="wire"),
        4: item(4, "Harbor terminal opens", html(EN), None, published=t0),
    }


def test_decide_builds_one_cluster_with_the_best_ranked_entry_shown() -> None:
    items = _cluster_items()
    cands = {1: [2, 3], 2: [1, 3], 3: [1, 2], 4: []}
    out = decide(items, [1, 2, 3, 4], cands, 0.6, [])
    assert (items[3].canonical_id, items[1].canonical_id, items[2].canonical_id) == (None, 3, 3)
    # The reason is the surest link to any member: 2 shares 1's address.
    assert items[1].dup_reason == "content" and items[2].dup_reason == "url"
    assert items[4].canonical_id is None
    assert out.changed == {1, 2, 3, 4} and out.repoints == []
    # Source priority puts the local files first; of the two versions of the page (one
    # canonical URL), the later-dated one is shown.
    items = _cluster_items()
    decide(items, [1, 2, 3, 4], cands, 0.6, ["local"])
    assert (items[2].canonical_id, items[1].canonical_id, items[3].canonical_id) == (None, 2, 2)
    assert items[1].dup_reason == "url"


def test_decide_newcomer_outranking_the_canonical_takes_its_place() -> None:
    items = _cluster_items()
    items[2].canonical_id, items[2].dup_reason = 1, "url"
    out = decide(items, [3], {3: [1, 2]}, 0.6, [])
    assert items[3].canonical_id is None
    assert (items[1].canonical_id, items[2].canonical_id) == (3, 3)
    assert out.repoints == [(1, 3)] and out.changed == {1, 2, 3}


def test_decide_withdrawn_entries_neither_match_nor_stay_shown() -> None:
    items = _cluster_items()
    items[3].withdrawn = True
    items[1].canonical_id, items[1].dup_reason = 3, "content"
    items[2].canonical_id, items[2].dup_reason = 3, "content"
    decide(items, [1, 2, 3], {1: [2, 3], 2: [1, 3], 3: []}, 0.6, [])
    assert items[2].canonical_id is None  # promoted: the later version of the page
    assert items[1].canonical_id == 2 and items[1].dup_reason == "url"
    assert items[3].canonical_id is None and items[3].dup_reason is None


def test_settings_digest_tracks_what_changes_results() -> None:
    base = clustering.settings_digest(DedupSettings())
    assert clustering.settings_digest(DedupSettings()) == base
    assert clustering.settings_digest(DedupSettings(tracking_params=["x"]))[0] != base[0]
    assert clustering.settings_digest(DedupSettings(near_threshold=0.8)) == (
        base[0],
        clustering.settings_digest(DedupSettings(near_threshold=0.8))[1],
    )
    assert clustering.settings_digest(DedupSettings(near_threshold=0.8))[1] != base[1]
    assert clustering.settings_digest(DedupSettings(source_priority=["a"]))[1] != base[1]


def test_report_summary() -> None:
    r = dedup.DedupReport(examined=3, duplicates=2)
    r.reasons.update({"url": 1, "near": 1})
    assert r.summary() == "dedup: 3 examined, 2 duplicates (1 near, 1 url)"
