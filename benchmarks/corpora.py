"""Boilerplate-heavy corpora for the benchmarks: text as machine-written market reports, wire
flashes and feeds with fixed footers read, where unrelated entries share many shingles.

- Articles: 70 % Chinese, 30 % English; each follows one of a few report formats (a fixed
  sequence of sentence templates from a pool of 60: 46 with company, figures and dates filled
  in, 14 standard sentences), plus one sentence of its own per paragraph; a shared ~300-character
  disclaimer paragraph on a third of them.
- Feed items: a short lead of their own, then the same four paragraphs in every item of every
  feed with only a tag changing, as a feed whose items carry a long fixed footer reads.

Deterministic for a seed. Used by bench_ingest.py (`--corpus boilerplate`).
"""

from __future__ import annotations

import random

ORGS_ZH = [f"{a}{b}" for a in "华宇 金川 北辰 海润 新元 盛达 天禾 恒通 东晟 瑞丰 中科 长江".split()
           for b in ("股份", "集团", "科技")]
ORGS_EN = [f"{a} {b}" for a in "Harbor Northwind Bluewater Crescent Ironbridge Meridian Summit Redwood".split()
           for b in ("Holdings", "Group", "Industries")]
THINGS_ZH = "储能电池 光伏组件 创新药 冷链物流 芯片封装 氢能重卡 数据中心 工业机器人".split()
THINGS_EN = ["energy storage", "solar panel", "generic drug", "cold-chain", "chip packaging", "hydrogen truck"]

FACT_ZH = [
    "{org}公告称，{m}月实现营业收入{a}亿元，同比增长{p}%。", "其中主营业务收入{b}亿元，占比{q}%。",
    "截至{m}月末，公司总资产{c}亿元，较年初增长{r}%。", "公司表示，业绩变动主要受{thing}需求变化影响。",
    "{org}当日股价收涨{p}%，成交额{a}亿元。", "{org}拟以{a}亿元投资建设{thing}项目，建设期{s}年。",
    "项目达产后预计年收入{b}亿元，净利润{c}亿元。", "资金来源为公司自有资金及银行贷款{a}亿元。",
    "{m}月{d}日，{org}获{n}家机构调研。", "机构关注公司{thing}业务进展及产能规划。",
    "公司回复称，{thing}产能利用率约{p}%，订单饱满。", "近{s}个月内共有{n}家机构给予买入评级。",
    "{org}今年以来股价累计上涨{q}%。", "{org}控股股东拟减持不超过{r}%股份。",
    "减持价格区间为{a}元至{b}元。", "{org}第{s}季度毛利率为{q}%，环比提升{r}个百分点。",
    "北向资金{m}月{d}日净买入{org}{a}万股。", "融资余额较前一交易日增加{b}万元。",
    "{org}中标{thing}项目，中标金额{a}亿元。", "该金额约占公司上年营业收入的{p}%。",
    "{org}研发投入{b}亿元，同比增长{q}%。", "公司在{thing}领域拥有发明专利{n}项。",
    "{org}发布{m}月经营数据，产量{a}万吨。",
]
FACT_EN = [
    "{org} said revenue in month {m} rose {p} percent to {a} million dollars.",
    "Core business made up {q} percent of the total.", "Total assets were {c} million dollars, up {r} percent.",
    "The company put the change down to demand for {thing}.", "Shares of {org} closed up {p} percent.",
    "{org} will invest {a} million dollars in a {thing} project over {s} years.",
    "The project should bring in {b} million dollars a year once running.",
    "{n} institutions visited {org} on day {d} of month {m}.", "They asked about its {thing} plans.",
    "{org} said its {thing} plants run at {p} percent of capacity.", "{n} analysts rate the stock a buy.",
    "{org} shares are up {q} percent this year.", "The main shareholder of {org} may sell up to {r} percent.",
    "{org} won a {thing} contract worth {a} million dollars.", "That is about {p} percent of last year's sales.",
    "{org} spent {b} million dollars on research, up {q} percent.", "{org} holds {n} patents in {thing}.",
    "Output at {org} reached {a} thousand tonnes in month {m}.", "Margins improved {r} points from the quarter before.",
    "Net foreign buying of {org} shares came to {a} thousand.", "Margin debt rose {b} thousand dollars.",
    "{org} guided for growth of {p} to {q} percent next year.", "The board approved a dividend of {s} cents a share.",
]
STANDARD_ZH = [
    "以上数据仅供参考，以公司公告为准。", "本文由系统自动生成，内容经编辑审核。", "投资者据此操作，风险自担。",
    "如需转载请注明出处。", "更多资讯请关注本站滚动新闻。", "行情数据来源于交易所公开信息。",
    "文中所涉个股不构成推荐。",
]
STANDARD_EN = [
    "Figures are unaudited and may be revised.", "This report was generated automatically.",
    "Investors act at their own risk.", "Please credit the source when republishing.",
    "Follow our live coverage for more updates.", "Market data come from exchange filings.",
    "Companies mentioned are not recommendations.",
]
DISCLAIMER_ZH = (
    "免责声明：本文内容仅供参考，不构成任何投资建议。市场有风险，投资需谨慎。本网站所载文章、数据仅供参考，使用前请核实，"
    "风险自负。文中观点仅代表作者本人，不代表本站立场。未经授权，任何单位及个人不得转载、摘编或以其他方式使用本文内容。"
    "如对本文内容有异议，请于发布之日起两周内与本站联系，本站将及时处理。"
)
DISCLAIMER_EN = (
    "Disclaimer: this article is provided for information only and does not constitute investment advice. Markets "
    "carry risk and past performance does not guarantee future results. The views expressed are those of the author "
    "and do not reflect the position of this site. No part of this article may be reproduced without permission."
)
FOOTER = [
    "About this feed: every market report on this service is compiled from exchange filings, company announcements "
    "and wire services, and is updated through the trading day as new information arrives.",
    "Subscribers can adjust the companies, sectors and regions they follow in their account settings, and can "
    "receive the same reports by e-mail or through the mobile application at no extra cost.",
    "Nothing in this report is an offer or a solicitation to buy or sell any security. Readers should seek "
    "independent advice before making any investment decision based on the information above.",
    "Copyright of all reports belongs to the service and its content partners. Redistribution, in whole or in part, "
    "requires prior written permission; quotations of up to two sentences with attribution are allowed.",
]
# A format is a fixed sequence of fact templates (indexes), as a report generator writes them.
FORMATS = [(0, 1, 2, 3, 4), (5, 6, 7, 4), (8, 9, 10, 11, 12), (13, 14, 4), (15, 20, 21, 22), (16, 17, 12), (18, 19, 4)]


def _facts(rng: random.Random, zh: bool) -> dict:
    return {
        "org": rng.choice(ORGS_ZH if zh else ORGS_EN), "thing": rng.choice(THINGS_ZH if zh else THINGS_EN),
        "m": rng.randint(1, 12), "d": rng.randint(1, 28), "s": rng.randint(2, 6), "n": rng.randint(3, 90),
        "a": rng.randint(10, 9999), "b": rng.randint(10, 999), "c": rng.randint(100, 9999),
        "p": rng.randint(1, 60), "q": rng.randint(1, 60), "r": rng.randint(1, 30),
    }


def _own_sentence(rng: random.Random, i: int, zh: bool) -> str:
    """A sentence no other article has: its number and words drawn from a large pool."""
    if zh:
        return f"记者注意到，第{i}号报告" + "".join(chr(0x4E00 + rng.randrange(6000)) for _ in range(14)) + "。"
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(8)]
    return f"Report {i} notes " + " ".join(words) + "."


def report_body(i: int, rng: random.Random) -> tuple[str, str, bool]:
    """(title, HTML body, is Chinese) of the boilerplate-heavy article `i`."""
    zh = rng.random() < 0.7
    facts = _facts(rng, zh)
    templates = FACT_ZH if zh else FACT_EN
    standard = STANDARD_ZH if zh else STANDARD_EN
    sep = "" if zh else " "
    paras = []
    for _ in range(3):
        fmt = FORMATS[rng.randrange(len(FORMATS))]
        sentences = [templates[t].format(**facts) for t in fmt]
        sentences.insert(rng.randrange(len(sentences) + 1), _own_sentence(rng, i, zh))
        paras.append(sep.join(sentences))
    paras.append(sep.join(rng.sample(standard, 2)))
    if i % 3 == 0:
        paras.append(DISCLAIMER_ZH if zh else DISCLAIMER_EN)
    title = (f"{facts['org']}{facts['m']}月{facts['d']}日公告第{i}号" if zh
             else f"{facts['org']}: report {i} for month {facts['m']}")
    return title, "".join(f"<p>{p}</p>" for p in paras), zh


def footer_item_html(lead: str, tag: str) -> str:
    """A feed item's body: its own lead, then the fixed footer with only the tag changing."""
    return f"<p>{lead}</p>" + "".join(f"<p>[{tag}] {p}</p>" for p in FOOTER)
