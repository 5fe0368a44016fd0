"""The normalized form of an example article, as stored in tests/golden/<file>.json.

Run `python tests/golden_entries.py` to (re)write the golden files after an intended change,
then review the diff: the golden files are the specification, not a snapshot to wave through.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator.sources.articles import ArticleContext, parse_article
from aggregator.sources.walk import scan

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples" / "articles"
GOLDEN = HERE / "golden"
CONTEXT = ArticleContext(
    source="examples",
    zone=ZoneInfo("Asia/Shanghai"),
    categories=(),
    aliases={"Finance": "金融"},
    base_url="http://feeds.example.org/",
)


def normalized(path: str) -> dict:
    stamp = next(s for s in scan(EXAMPLES).files if s.path == path)
    e = parse_article((EXAMPLES / path).read_bytes(), stamp, CONTEXT)
    return {
        "key": e.key,
        "title": e.title,
        "link": e.link,
        "published": e.published.isoformat() if e.published else None,
        "updated": e.updated.isoformat() if e.updated else None,
        "authors": list(e.authors),
        "categories": list(e.categories),
        "tags": list(e.tags),
        "outlet": e.outlet,
        "image": e.image,
        "summary": e.summary,
        "content_html": e.content_html,
    }


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for stamp in scan(EXAMPLES).files:
        out = GOLDEN / (stamp.path + ".json")
        out.write_text(json.dumps(normalized(stamp.path), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print("wrote", out.relative_to(HERE.parent))
