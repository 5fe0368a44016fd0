"""Dedup quality on boilerplate-heavy text: precision and recall when unrelated articles share a
long disclaimer paragraph and standard sentences, as Chinese finance sites' pages do.

The labelled corpus of `dedup_quality.py` (stories, their planted copies and reprints, hard
negatives), and on top of it:

- a third of the stories carry a fixed ~300-character disclaimer paragraph (every copy of such
  a story carries it too), Chinese or English by the story's language;
- every story gets a paragraph of two standard sentences from a pool of 14 ("数据仅供参考",
  "Figures are unaudited", …), copies included;
- machine-written reports: for each language, 60 reports that follow one of three fixed
  formats (the same five template sentences with the company, figures and date filled in),
  end with the disclaimer, and each tell a different story. None may merge with another.

Every entry goes through the real store and `dedup.run`. Targets: precision 1.00, recall ≥ 0.95.

    .venv/bin/python benchmarks/dedup_quality_boilerplate.py [--seed 7] [--topics 40] [-v]
"""

from __future__ import annotations

import argparse
import random
import sys
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup_quality import Doc, corpus, evaluate, report

DISCLAIMER = {
    "zh": "免责声明：本文内容仅供参考，不构成任何投资建议。市场有风险，投资需谨慎。本网站所载文章、数据仅供参考，"
    "使用前请核实，风险自负。文中观点仅代表作者本人，不代表本站立场。未经授权，任何单位及个人不得转载、摘编或以其他"
    "方式使用本文内容，违者必究。如对本文内容有异议，请于发布之日起两周内与本站联系，本站将及时处理。",
    "en": "Disclaimer: this article is provided for information only and does not constitute investment advice. "
    "Markets carry risk and past performance does not guarantee future results. The views expressed are those of "
    "the author and do not reflect the position of this site. Figures are believed reliable but are not guaranteed. "
    "No part of this article may be reproduced without written permission.",
}
STANDARD = {
    "zh": [
        "以上数据仅供参考，以公司公告为准。", "本文由系统自动生成，内容经编辑审核。", "投资者据此操作，风险自担。",
        "如需转载请注明出处。", "更多资讯请关注本站滚动新闻。", "行情数据来源于交易所公开信息。",
        "文中所涉个股不构成推荐。",
    ],
    "en": [
        "Figures are unaudited and may be revised.", "This report was generated automatically and reviewed by an "
        "editor.", "Investors act at their own risk.", "Please credit the source when republishing.",
        "Follow our live coverage for more updates.", "Market data come from exchange filings.",
        "Companies mentioned are not recommendations.",
    ],
}
# Machine-written report formats: the same sentences in the same order, only the facts change.
FORMATS = {
    "zh": [
        ["{org}发布公告称，公司{month}月实现营业收入{num}亿元，同比增长{pct}%。",
         "其中主营业务收入{num2}亿元，占比{pct2}%。", "截至{month}月末，公司总资产{num3}亿元，较年初增长{pct3}%。",
         "公司表示，业绩变动主要受{thing}需求变化影响。", "{org}当日股价收涨{pct4}%，成交额{num4}亿元。"],
        ["{org}{month}月{day}日晚间披露，拟以{num}亿元投资建设{thing}项目。",
         "项目建设期{small}年，预计达产后年收入{num2}亿元。", "资金来源为公司自有资金及银行贷款。",
         "公司称该项目有利于完善{thing}产业布局。", "{org}最新市值约{num3}亿元。"],
        ["{month}月{day}日，{org}获{count}家机构调研。", "机构关注公司{thing}业务进展及产能规划。",
         "公司回复称，{thing}产能利用率约{pct}%，订单饱满。", "近{small}个月内共有{count2}家机构给予买入评级。",
         "{org}今年以来股价累计上涨{pct2}%。"],
    ],
    "en": [
        ["{org} said revenue in {monthname} rose {pct} percent from a year earlier to {num} million dollars.",
         "Core business accounted for {pct2} percent of the total.",
         "Total assets stood at {num3} million dollars at the end of the month, up {pct3} percent this year.",
         "The company attributed the change to demand for its {thing}.",
         "Shares of {org} closed up {pct4} percent on turnover of {num4} million dollars."],
        ["{org} said on {monthname} {day} it would invest {num} million dollars in a {thing} project.",
         "Construction will take {small} years and the project should bring {num2} million dollars a year.",
         "It will be funded from the company's own cash and bank loans.",
         "The company said the project rounds out its {thing} business.",
         "{org} is worth about {num3} million dollars."],
        ["{count} institutions visited {org} on {monthname} {day}.",
         "They asked about its {thing} business and capacity plans.",
         "The company said its {thing} plants run at about {pct} percent of capacity with full order books.",
         "{count2} institutions have rated the stock a buy in the past {small} months.",
         "Shares of {org} are up {pct2} percent this year."],
    ],
}
ORGS = {
    "zh": "华宇电子 金川实业 北辰科技 海润化工 新元能源 盛达矿业 天禾种业 恒通物流 东晟制药 瑞丰光电".split(),
    "en": "Harbor Tech|Northwind Mining|Bluewater Foods|Crescent Energy|Ironbridge Steel|Meridian Pharma|"
    "Summit Logistics|Redwood Chemicals|Pioneer Seeds|Lakeside Optics".split("|"),
}
THINGS = {"zh": "储能电池 光伏组件 创新药 冷链物流 芯片封装 氢能重卡".split(),
          "en": ["energy storage", "solar panel", "drug", "cold-chain", "chip packaging", "hydrogen truck"]}
MONTHS = "January February March April May June July August September October November December".split()


def _lang(doc: Doc) -> str:
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in doc.title) else "en"


def with_boilerplate(docs: list[Doc]) -> list[Doc]:
    """Every story's documents get the same standard sentences, and a third of the stories the disclaimer."""
    out = []
    for d in docs:
        h = zlib.crc32(d.story.encode())
        lang = _lang(d)
        pool = STANDARD[lang]
        sep = "" if lang == "zh" else " "
        extra = (sep.join([pool[h % len(pool)], pool[(h // 7 + 1) % len(pool)]]),)
        if h % 3 == 0:
            extra += (DISCLAIMER[lang],)
        out.append(replace(d, paras=d.paras + extra))
    return out


def reports(seed: int, per_lang: int = 60) -> list[Doc]:
    """Machine-written reports in fixed formats: each one a different story."""
    rng = random.Random(seed)
    base = datetime(2024, 3, 1, tzinfo=UTC)
    out = []
    for lang in ("zh", "en"):
        for n in range(per_lang):
            fmt = FORMATS[lang][n % len(FORMATS[lang])]
            org = ORGS[lang][n % len(ORGS[lang])]
            facts = {
                "org": org, "thing": rng.choice(THINGS[lang]), "month": rng.randint(1, 12),
                "monthname": rng.choice(MONTHS), "day": rng.randint(1, 28), "small": rng.randint(2, 5),
                "count": rng.randint(5, 90), "count2": rng.randint(2, 30),
                **{f"num{s}": rng.randint(10, 990) for s in ("", "2", "3", "4")},
                **{f"pct{s}": rng.randint(1, 60) for s in ("", "2", "3", "4")},
            }
            sentences = [t.format(**facts) for t in fmt]
            sep = "" if lang == "zh" else " "
            title = (f"{org}{facts['month']}月{facts['day']}日公告：{sentences[0][:18]}" if lang == "zh"
                     else f"{org}: {sentences[0][:60]}")
            out.append(Doc(f"report-{lang}-{n}", "format-report", "wire", f"report/{lang}/{n}.md", title,
                           (sep.join(sentences[:3]), sep.join(sentences[3:]), DISCLAIMER[lang]),
                           f"http://wire.example.com/{lang}/{n}.html", base + timedelta(minutes=7 * n)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--topics", type=int, default=40)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    docs = with_boilerplate(corpus(args.seed, args.topics)) + reports(args.seed)
    sys.exit(0 if report(evaluate(docs, args.threshold, args.verbose), args.threshold) else 1)

if __name__ == "__main__":
    main()
