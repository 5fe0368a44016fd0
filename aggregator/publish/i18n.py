"""The words the output shows to people, in the site's language (`[output] language`).

Feeds carry what their sources wrote; but the index page, article pages, the browser view of a
feed (feed.xsl) and the "Also reported by" line are the site's own words, and a Chinese site
should not greet its readers in English. Languages are matched by their first part (`zh-CN`,
`zh-TW` → zh); any other falls back to English.
"""

from __future__ import annotations

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "all_feeds": "← All feeds",
        "also_reported_by": "Also reported by:",
        "entries_one": "{n} entry",
        "entries_many": "{n} entries",
        "categories_one": "{n} category",
        "categories_many": "{n} categories",
        "in": "in",
        "newest": "newest",
        "note": "These are web feeds: copy a feed's address into a feed reader to subscribe. All of them at once:",
        "subscribe": "Subscribe:",
        "feed": "feed",
        "this_is_a_feed": "This is a web feed",
        "archive_page": " archive page",
        "to_subscribe": "To subscribe, copy its address into your feed reader:",
        "newest_entries": "Newest entries",
        "older_entries": "Older entries →",
        "updated": "updated",
        "tags": "Tags:",
    },
    "zh": {
        "all_feeds": "← 全部订阅源",
        "also_reported_by": "其他报道来源：",
        "entries_one": "{n} 篇",
        "entries_many": "{n} 篇",
        "categories_one": "{n} 个分类",
        "categories_many": "{n} 个分类",
        "in": "，",
        "newest": "最新",
        "note": "以下是订阅源：把订阅地址复制到阅读器中即可订阅。一次订阅全部：",
        "subscribe": "订阅：",
        "feed": "订阅源",
        "this_is_a_feed": "这是一个订阅源",
        "archive_page": "的存档页",
        "to_subscribe": "订阅方法：把下面的地址复制到阅读器中：",
        "newest_entries": "最新条目",
        "older_entries": "更早的条目 →",
        "updated": "更新于",
        "tags": "标签：",
    },
}


def table(language: str | None) -> dict[str, str]:
    return STRINGS.get((language or "en").split("-")[0].split("_")[0].lower(), STRINGS["en"])


def text(language: str | None, key: str, n: int | None = None) -> str:
    """The string `key` in `language`; with `n`, its singular or plural form with the number."""
    words = table(language)
    if n is not None:
        key = f"{key}_one" if n == 1 else f"{key}_many"
        return words.get(key, STRINGS["en"][key]).format(n=n)
    return words.get(key, STRINGS["en"][key])
