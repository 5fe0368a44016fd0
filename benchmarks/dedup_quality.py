"""Dedup quality: precision and recall on a generated, labelled corpus in Chinese and English.

The corpus holds stories written from sentence templates around shared topics (so different
stories on one topic share names, phrases and sentence shapes: the hard negatives), daily
template reports whose bodies differ only in their figures, headlines reused by different
stories, the two seed articles, and planted duplicates of each story: exact copies from
another source, tracking-parameter URLs, reprints with a prefixed or suffixed title, an edited
paragraph and added boilerplate, re-punctuated copies and link-less reprints. Translations
are out of scope.

Every entry goes through the real store and `dedup.run`; pairs placed in one cluster are
compared with the labels. Precision = merged pairs that are one story / merged pairs;
recall = one-story pairs merged / one-story pairs. Targets: precision 1.00, recall ≥ 0.95.

    .venv/bin/python benchmarks/dedup_quality.py [--seed 7] [--topics 40] [--threshold 0.7] [-v]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path
from zoneinfo import ZoneInfo

from aggregator.config import DedupSettings, Settings
from aggregator.dedup import clusters, run
from aggregator.model import Entry, FileStamp
from aggregator.sources.articles import ArticleContext, parse_article
from aggregator.store import Store

SEEDS = Path(__file__).resolve().parents[1] / "examples" / "articles"

# ------------------------------------------------------------------ Chinese

ZH_ORGS = (
    "临江港务集团 东方新能源 华北电网 南山医药 星河银行 远航物流 长城汽车研究院 "
    "青禾农业 金桥证券 海川科技 北辰地产 蓝海航运"
).split()
ZH_PLACES = "临江 东岸新区 西部陆海新通道 长三角 粤港澳大湾区 成渝地区 京津冀 海南自贸港 中原城市群 北部湾".split()
ZH_THINGS = (
    "集装箱码头 储能电站 特高压线路 创新药 数字人民币 冷链物流中心 自动驾驶测试区 智慧农场 "
    "科创债券 数据中心 光伏组件 氢能重卡 跨境电商平台 养老社区 芯片封装线"
).split()
ZH_PEOPLE = "副总经理 董事长 首席经济学家 行业分析师 研究员 市场人士 相关负责人 业内专家 基金经理 项目经理".split()
ZH_VERBS = "宣布 披露 表示 透露 介绍 指出 认为 提醒 强调 预计".split()
ZH_ADJ = "明显 稳步 大幅 小幅 持续 阶段性 结构性 显著 温和 快速".split()
ZH_TEMPLATES = [
    "{org}{verb}，位于{place}的{thing}将于{month}月投入试运营，设计能力达到{num}万单位。",
    "{org}{person}在发布会上{verb}，新项目采用{thing}技术，单位能耗比过去下降约{pct}成。",
    "据了解，{thing}项目总投资约{num}亿元，其中近{pct}成资金来自专项债券，其余由企业自筹解决。",
    "{person}分析，随着{place}的需求不断增加，新增产能有望在{small}年内被市场消化。",
    "不过也有{person}提醒，今年以来{thing}价格波动较大，扩张需要警惕{adj}过剩的风险。",
    "按照规划，{org}还将在{place}同步建设一座{thing}，重点服务{thing2}的上下游企业。",
    "当地主管部门{verb}，将在{place}试点新的审批模式，进一步压缩{thing}的建设周期。",
    "{org}方面{verb}，明年计划新增{small}条生产线，覆盖{place}主要城市。",
    "财务数据显示，{org}前{small}季度营业收入{num}亿元，同比{adj}增长{pct}个百分点。",
    "{person}认为，{thing}行业整体进入{adj}增长阶段，未来竞争将体现在服务效率上。",
    "在投资者交流会上，有机构询问{org}是否考虑分拆{thing}业务，管理层表示目前没有相关计划。",
    "此外，{org}与{org2}续签了长期合作协议，合同期为{small}年，涉及金额约{num}亿元。",
    "报告期内，{org}资产负债率较年初下降{pct}个百分点，经营性现金流{adj}改善。",
    "{place}统计部门数据显示，{month}月当地{thing}产量同比增长{pct}%，增速较上月{adj}回升。",
    "{person}{verb}，{thing}的国产化率已经超过{num}%，关键零部件供应基本稳定。",
]
ZH_PREFIXES = ["【转载】", "转载：", "【独家】", "【快讯】", "[转]"]
ZH_SUFFIXES = [" - 新华财经", "_财经频道", " | 证券日报"]
ZH_BOILER = ["（文章来源：{outlet}）", "责任编辑：{name}", "本文转载自{outlet}，版权归原作者所有。"]
ZH_OUTLETS = "北京商报 证券时报网 经济观察报 第一财经 财联社".split()

# ------------------------------------------------------------------ English

EN_ORGS = (
    "Harbor Logistics|Northwind Energy|Crescent Pharma|Bluewater Bank|Summit Motors|Greenfield Agri|"
    "Atlas Semiconductors|Pioneer Rail|Oakridge Insurance|Silverline Telecom|Meridian Steel|Cobalt Mining"
).split("|")
EN_PLACES = (
    "the east bank|the northern corridor|the river delta|the coastal zone|the capital region|the inland hub".split("|")
)
EN_THINGS = (
    "container terminal|battery plant|wind farm|cancer drug|payment network|cold-chain hub|test track|"
    "data center|solar module line|hydrogen truck fleet|chip packaging line|retirement community"
).split("|")
EN_PEOPLE = (
    "the chief executive|an industry analyst|the finance director|a senior economist|"
    "a company spokesperson|the project manager|a fund manager|a local official"
).split("|")
EN_VERBS = "said|announced|disclosed|noted|argued|warned|confirmed|estimated".split("|")
EN_ADJ = "sharply|steadily|modestly|significantly|gradually|slightly|rapidly".split("|")
EN_TEMPLATES = [
    "{org} {verb} on Wednesday that its new {thing} in {place} will start trial operations in "
    "{monthname}, adding capacity of {num} thousand units a year.",
    "Speaking at a press briefing, {person} {verb} the {thing} relies on remote-controlled "
    "equipment that cuts energy use by about {pct} percent.",
    "The project costs roughly {num} million dollars, with about a {pct2} of the money coming from "
    "bonds issued this year and the rest from bank loans.",
    "{person} {verb} that demand in {place} keeps growing, so the new capacity should be absorbed "
    "within {small} years.",
    "Still, {person} {verb} that prices in the {thing} market have swung {adj} this year and that "
    "expansion risks a temporary glut.",
    "Under the plan, {org} will also build a {thing2} in {place} to serve suppliers and customers along the route.",
    "Regulators in {place} {verb} they would pilot a faster approval process to shorten construction of the {thing}.",
    "{org} {verb} it plans to open {small} new lines next year, covering the main cities of {place}.",
    "Revenue at {org} rose {adj} to {num} million dollars in the first {small} quarters, up {pct} "
    "percent from a year earlier.",
    "{person} {verb} the {thing} industry has entered a phase of {adj} slower growth in which "
    "service quality will decide the winners.",
    "Asked by investors whether it would spin off its {thing} business, management {verb} there "
    "were no such plans for now.",
    "{org} also renewed a long-term agreement with {org2} for {small} years, worth about {num} million dollars.",
    "The debt ratio of {org} fell {pct} points from the start of the year while operating cash flow improved {adj}.",
    "Official data for {place} showed output of the {thing} grew {pct} percent in {monthname}, "
    "{adj} faster than the month before.",
    "{person} {verb} more than {num} percent of the parts for the {thing} are now sourced locally.",
]
EN_PREFIXES = ["Reprint: ", "UPDATE: ", "Exclusive: ", "[Repost] "]
EN_SUFFIXES = [" - Business Wire", " | Daily Ledger", " - Reuters"]
EN_BOILER = ["Source: {outlet}", "(Reporting by {name}; Editing by {name})", "Read more: {outlet} markets coverage"]
EN_OUTLETS = "Daily Ledger|Business Wire|Market Watcher|Coastal Times".split("|")
MONTHS = "January February March April May June July August September October November December".split()


@dataclass(frozen=True)
class Doc:
    story: str  # label: docs with the same story are duplicates of each other
    kind: str  # "original" or the kind of planted duplicate / negative
    source: str
    key: str
    title: str
    paras: tuple[str, ...]
    link: str | None
    published: datetime


def _fill(rng: random.Random, tpl: str, lang: str, topic: dict) -> str:
    if lang == "zh":
        return tpl.format(
            org=topic["org"],
            org2=rng.choice(ZH_ORGS),
            place=topic["place"],
            thing=topic["thing"],
            thing2=rng.choice(ZH_THINGS),
            person=rng.choice(ZH_PEOPLE),
            verb=rng.choice(ZH_VERBS),
            adj=rng.choice(ZH_ADJ),
            num=rng.randint(12, 980),
            pct=rng.randint(2, 9),
            small=rng.randint(2, 6),
            month=rng.randint(1, 12),
        )
    return tpl.format(
        org=topic["org"],
        org2=rng.choice(EN_ORGS),
        place=topic["place"],
        thing=topic["thing"],
        thing2=rng.choice(EN_THINGS),
        person=rng.choice(EN_PEOPLE),
        verb=rng.choice(EN_VERBS),
        adj=rng.choice(EN_ADJ),
        num=rng.randint(12, 980),
        pct=rng.randint(2, 40),
        pct2=rng.choice(["third", "quarter", "fifth", "half"]),
        small=rng.randint(2, 6),
        monthname=rng.choice(MONTHS),
    )


def _paragraph(rng: random.Random, lang: str, topic: dict) -> str:
    tpls = ZH_TEMPLATES if lang == "zh" else EN_TEMPLATES
    sep = "" if lang == "zh" else " "
    return sep.join(_fill(rng, t, lang, topic) for t in rng.sample(tpls, rng.randint(2, 3)))


def _title(rng: random.Random, lang: str, topic: dict, i: int) -> str:
    if lang == "zh":
        shapes = [
            "{org}{thing}项目{month}月试运营",
            "{org}前{small}季度营收增长{pct}%",
            "{place}{thing}产量同比增长{pct}%",
            "{org}与{org2}续签{small}年合作协议",
            "{org}明年新增{small}条{thing}生产线",
        ]
    else:
        shapes = [
            "{org} to open {place} {thing} in {monthname}",
            "{org} revenue up {pct}% in first {small} quarters",
            "{thing} output in {place} grows {pct}%",
            "{org} renews {small}-year deal with {org2}",
            "{org} plans {small} new {thing} lines",
        ]
    return _fill(rng, shapes[i % len(shapes)], lang, topic)


def _link(rng: random.Random, lang: str, n: int) -> str:
    host = "news.example.cn" if lang == "zh" else "www.example-news.com"
    return f"http://{host}/{2020 + n % 4}/{n % 12 + 1:02d}{n % 28 + 1:02d}/{10000 + n}.html"


def corpus(seed: int, topics_per_lang: int) -> list[Doc]:
    rng = random.Random(seed)
    docs: list[Doc] = []
    base = datetime(2022, 9, 1, tzinfo=UTC)
    n = 0
    for lang in ("zh", "en"):
        orgs, places, things = (ZH_ORGS, ZH_PLACES, ZH_THINGS) if lang == "zh" else (EN_ORGS, EN_PLACES, EN_THINGS)
        for t in range(topics_per_lang):
            topic = {"org": rng.choice(orgs), "place": rng.choice(places), "thing": rng.choice(things)}
            # Two or three different stories on one topic: the hard negatives.
            for s in range(rng.randint(2, 3)):
                n += 1
                story = f"{lang}-{t}-{s}"
                paras = tuple(_paragraph(rng, lang, topic) for _ in range(rng.randint(6, 9)))
                title = _title(rng, lang, topic, s)
                link = _link(rng, lang, n)
                when = base + timedelta(hours=n)
                orig = Doc(story, "original", "files", f"{story}.md", title, paras, link, when)
                docs.append(orig)
                docs += _plant(rng, lang, topic, orig, n)
        docs += _daily_reports(rng, lang, base)
        docs += _shared_headlines(rng, lang, base)
    return docs


def _plant(rng: random.Random, lang: str, topic: dict, orig: Doc, n: int) -> list[Doc]:
    """Duplicates of `orig`, each kind with some probability."""
    out: list[Doc] = []
    later = orig.published + timedelta(hours=rng.randint(1, 30))
    outlets = ZH_OUTLETS if lang == "zh" else EN_OUTLETS
    boiler = ZH_BOILER if lang == "zh" else EN_BOILER
    if rng.random() < 0.5:
        out.append(replace(orig, kind="copy", source="feed-a", key=orig.key + "#copy"))
    if rng.random() < 0.5:
        assert orig.link is not None
        tracked = orig.link.replace("http://", "HTTP://").replace(
            ".html", ".html?utm_source=wx&from=timeline&spm=1.2#p3"
        )
        out.append(replace(orig, kind="tracking-url", source="feed-b", key=orig.key + "#trk", link=tracked))
    if rng.random() < 0.7:
        paras = list(orig.paras)
        paras[rng.randrange(len(paras))] = _paragraph(rng, lang, topic)  # one edited paragraph
        if rng.random() < 0.5:
            paras.append(rng.choice(boiler).format(outlet=rng.choice(outlets), name="Li Wei"))
        title = (
            rng.choice(ZH_PREFIXES if lang == "zh" else EN_PREFIXES) + orig.title
            if rng.random() < 0.7
            else orig.title + rng.choice(ZH_SUFFIXES if lang == "zh" else EN_SUFFIXES)
        )
        out.append(
            Doc(
                orig.story,
                "reprint-edited",
                "feed-c",
                orig.key + "#re",
                title,
                tuple(paras),
                _link(rng, lang, n + 50000),
                later,
            )
        )
    if rng.random() < 0.4:
        # Re-punctuated and re-spaced, full-width digits, no link at all.
        tr = (
            str.maketrans("0123456789,.", "０１２３４５６７８９，．")
            if lang == "zh"
            else str.maketrans({",": " ,", ".": " ."})
        )
        paras = tuple(p.translate(tr) for p in orig.paras)
        out.append(Doc(orig.story, "repunctuated-nolink", "feed-d", orig.key + "#np", orig.title, paras, None, later))
    if rng.random() < 0.3:
        # An edited version at the same address: a sentence added at the end.
        paras = (
            *orig.paras[:-1],
            orig.paras[-1] + (" This story has been updated." if lang == "en" else "（本文已更新）"),
        )
        out.append(replace(orig, kind="updated-version", source="feed-a", key=orig.key + "#v2", paras=paras))
    if rng.random() < 0.4:
        # Another outlet's headline (one word changed, figures kept) over a trimmed body: the
        # last sentence of one paragraph cut, no link.
        paras = list(orig.paras)
        i = rng.randrange(len(paras))
        cut = paras[i].rstrip("。.").rsplit("。" if lang == "zh" else ". ", 1)[0]
        paras[i] = cut + ("。" if lang == "zh" else ".")
        out.append(
            Doc(
                orig.story,
                "reworded-title",
                "feed-f",
                orig.key + "#rw",
                _reword(rng, orig.title, lang),
                tuple(paras),
                None,
                later,
            )
        )
    if rng.random() < 0.3:
        # A reprint with two paragraphs rewritten and a label on the headline.
        paras = list(orig.paras)
        for i in rng.sample(range(len(paras)), 2):
            paras[i] = _paragraph(rng, lang, topic)
        title = rng.choice(ZH_PREFIXES if lang == "zh" else EN_PREFIXES) + orig.title
        out.append(Doc(orig.story, "reprint-2-edits", "feed-g", orig.key + "#r2", title, tuple(paras), None, later))
    return out


def _reword(rng: random.Random, title: str, lang: str) -> str:
    """The same headline with one word (Chinese: one character pair) replaced, figures kept."""
    if lang == "zh":
        spots = [i for i in range(len(title) - 1) if not any(ch.isdigit() for ch in title[i : i + 2])]
        i = rng.choice(spots)
        return title[:i] + rng.choice(["宣布", "计划", "拟将", "正式"]) + title[i + 2 :]
    words = title.split()
    spots = [i for i, w in enumerate(words) if not any(ch.isdigit() for ch in w)]
    words[rng.choice(spots)] = rng.choice(["plans", "set", "moves", "announces"])
    return " ".join(words)


def _daily_reports(rng: random.Random, lang: str, base: datetime) -> list[Doc]:
    """Same template every day, only the figures change: each day is its own story."""
    docs = []
    for d in range(8):
        rate = f"{6.7 + rng.randint(0, 300) / 1000:.4f}"
        bp = rng.randint(5, 90)
        day = base + timedelta(days=d)
        if lang == "zh":
            title = f"{day.month}月{day.day}日人民币对美元中间价报{rate}，上调{bp}个基点"
            paras = (
                f"中国外汇交易中心{day.month}月{day.day}日公布，当日人民币对美元汇率中间价报{rate}，较前一交易日上调{bp}个基点。",
                "市场人士表示，近期美元指数高位震荡，人民币汇率在合理均衡水平上保持基本稳定，企业结汇意愿有所上升。",
                "分析人士认为，后续人民币汇率将继续双向波动，市场主体应树立风险中性理念，合理使用外汇衍生品管理风险。",
            )
        else:
            title = f"Dollar fixing set at {rate} on {MONTHS[day.month - 1]} {day.day}, up {bp} basis points"
            paras = (
                f"The central bank set the daily reference rate at {rate} per dollar on {MONTHS[day.month - 1]} "
                f"{day.day}, {bp} basis points stronger than the previous fixing.",
                "Traders said the dollar index has been trading near recent highs while the currency held "
                "broadly stable and exporters stepped up conversions.",
                "Analysts expect two-way swings to continue and advised companies to hedge currency exposure "
                "with derivatives rather than bet on direction.",
            )
        docs.append(Doc(f"{lang}-daily-{d}", "daily-template", "feed-e", f"{lang}-daily-{d}", title, paras, None, day))
    return docs


def _shared_headlines(rng: random.Random, lang: str, base: datetime) -> list[Doc]:
    """Different stories under one recurring headline ("Market wrap")."""
    docs = []
    title = "收盘综述：市场震荡整理" if lang == "zh" else "Market wrap: stocks drift"
    for d in range(4):
        topic = {"org": rng.choice(ZH_ORGS if lang == "zh" else EN_ORGS), "place": "", "thing": ""}
        topic["place"] = rng.choice(ZH_PLACES if lang == "zh" else EN_PLACES)
        topic["thing"] = rng.choice(ZH_THINGS if lang == "zh" else EN_THINGS)
        paras = tuple(_paragraph(rng, lang, topic) for _ in range(5))
        day = base + timedelta(days=d, hours=15)
        docs.append(Doc(f"{lang}-wrap-{d}", "same-headline", "feed-e", f"{lang}-wrap-{d}", title, paras, None, day))
    return docs


def seed_docs() -> list[Doc]:
    """The two real seed articles: same trade fair, different stories."""
    ctx = ArticleContext(
        source="files", zone=ZoneInfo("Asia/Shanghai"), categories=(), aliases={}, base_url="http://127.0.0.1/"
    )
    out = []
    for p in sorted(SEEDS.glob("00[01]_*.txt")):
        e = parse_article(p.read_bytes(), FileStamp(p.name, 0, 0), ctx)
        out.append(
            Doc(p.stem, "seed", "files", p.name, e.title, (e.content_html,), e.link, e.published or datetime.now(UTC))
        )
    return out


def to_entry(d: Doc) -> Entry:
    html = d.paras[0] if d.kind == "seed" else "".join(f"<p>{p}</p>" for p in d.paras)
    return Entry(
        source=d.source, key=d.key, title=d.title, content_html=html, summary="", link=d.link, published=d.published
    )


def evaluate(docs: list[Doc], threshold: float, verbose: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/q.sqlite3")
        now = datetime.now(UTC).replace(microsecond=0)
        ids: dict[tuple[str, str], int] = {}
        for source in sorted({d.source for d in docs}):
            sid = store.source_id(source, "feed", f"http://{source}.example/")
            mine = [d for d in docs if d.source == source]
            for i in range(0, len(mine), 500):
                store.save_entries(sid, [to_entry(d) for d in mine[i : i + 500]], {}, now)
            ids.update({(source, k): v.id for k, v in store.stamps(sid).items()})
        settings = Settings(dedup=DedupSettings(near_threshold=threshold))
        run(store, settings, list(ids.values()))
        label = {ids[(d.source, d.key)]: d for d in docs}
        cluster_of = {i: i for i in label}
        reasons: dict[int, str] = {}
        for c in clusters(store):
            for m in c.members:
                cluster_of[m.id] = c.canonical.id
                reasons[m.id] = f"{m.reason} {m.score:.2f}" if m.score is not None else str(m.reason)
        store.close()
    tp = fp = fn = 0
    missed: Counter = Counter()
    wrong: list[str] = []
    for a, b in combinations(sorted(label), 2):
        same_story = label[a].story == label[b].story
        merged = cluster_of[a] == cluster_of[b]
        if same_story and merged:
            tp += 1
        elif merged:
            fp += 1
            wrong.append(f"{label[a].title!r} ~ {label[b].title!r} ({reasons.get(a) or reasons.get(b)})")
        elif same_story:
            fn += 1
            missed[" + ".join(sorted({label[a].kind, label[b].kind}))] += 1
    kinds = Counter(d.kind for d in docs)
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    originals = {d.story: ids[(d.source, d.key)] for d in docs if d.kind == "original"}
    for i, d in label.items():
        if d.kind == "original" or d.story not in originals:  # negatives and seeds: no planted copies
            continue
        per_kind[d.kind][1] += 1
        per_kind[d.kind][0] += cluster_of[i] == cluster_of[originals[d.story]]
    result = {
        "entries": len(docs),
        "kinds": dict(kinds),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "true_pairs": tp + fn,
        "merged_pairs": tp + fp,
        "per_kind": {k: f"{v[0]}/{v[1]}" for k, v in sorted(per_kind.items())},
        "missed": dict(missed),
        "wrong": wrong,
    }
    if verbose:
        for w in wrong[:20]:
            print("  merged distinct stories:", w)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--topics", type=int, default=40, help="topics per language (2-3 stories each)")
    ap.add_argument("--threshold", type=float, default=DedupSettings().near_threshold)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    docs = corpus(args.seed, args.topics) + seed_docs()
    sys.exit(0 if report(evaluate(docs, args.threshold, args.verbose), args.threshold) else 1)


def report(r: dict, threshold: float) -> bool:
    """Print an evaluation; True when it meets the targets."""
    print(f"corpus: {r['entries']} entries {r['kinds']}")
    print(f"near_threshold={threshold}  pairs: {r['true_pairs']} same-story, {r['merged_pairs']} merged")
    print(f"duplicates found, by kind: {r['per_kind']}")
    if r["missed"]:
        print(f"missed pairs by kinds: {r['missed']}")
    print(f"precision {r['precision']:.4f}  recall {r['recall']:.4f}  (targets: 1.00 and >= 0.95)")
    return r["precision"] == 1.0 and r["recall"] >= 0.95


if __name__ == "__main__":
    main()
