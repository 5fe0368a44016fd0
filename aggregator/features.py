"""An entry's dedup features: what every copy of one story shares, computed once per version.

1. **canonical URL** and its digest (`url_key`): scheme and host case, default port, fragment,
   trailing slash, tracking parameters and query order normalized away.
2. **normalized text** and its digest (`fingerprint`): NFKC, tags and boilerplate lines
   stripped, case, whitespace and punctuation folded.
3. **MinHash signature** over character shingles of that text (works the same for Chinese,
   which has no spaces, and Latin scripts), with its LSH band keys (`lsh.index_keys`).

Pure functions, used by the article reader (in its worker processes) and the dedup stage.
"""

from __future__ import annotations

import fnmatch
import hashlib
import html
import re
import struct
import unicodedata
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from . import lsh
from .model import Features
from .text import strip_tags

# Bump when anything here changes what features come out: stored features are then
# recomputed and every cluster re-evaluated on the next run.
ALGORITHM = "9"

# Query keys that say who shared a link, never which page it is. Matched case-insensitively;
# shell-style patterns (`utm_*`) allowed. `[dedup] tracking_params` adds to this list.
TRACKING_PARAMS = (
    "utm_*",
    "spm",
    "from",
    "fbclid",
    "gclid",
    "dclid",
    "msclkid",
    "yclid",
    "igshid",
    "mc_cid",
    "mc_eid",
    "_hsenc",
    "_hsmi",
    "ref_src",
    "share_source",
    "share_medium",
    "isappinstalled",
    "scene",
    "wt.mc_id",
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}

NUM_PERM = 128
SEED = 1_301_021
MIN_FINGERPRINT_CHARS = 50  # shorter bodies ("Read more…") say nothing about the story
MIN_SHINGLES = 40  # too little text for a meaningful similarity


# ------------------------------------------------------------------ canonical URL


def tracking_patterns(extra: Iterable[str] = ()) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip().lower() for p in (*TRACKING_PARAMS, *extra) if p.strip()))


def _is_tracking(key: str, patterns: Sequence[str]) -> bool:
    k = key.lower()
    return any(fnmatch.fnmatchcase(k, p) for p in patterns)


def canonical_url(url: str | None, patterns: Sequence[str] = TRACKING_PARAMS) -> str | None:
    """The form of `url` that every copy of the same link shares, or None when it is not an http(s) URL."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    netloc = host if port is None or str(port) == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    # One spelling of each character: decode, then percent-encode whatever is not plain ASCII.
    path = quote(unquote(parts.path), safe="/:@!$&'()*+,;=-._~")
    path = re.sub(r"/{2,}", "/", path).rstrip("/")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k, patterns)]
    return urlunsplit((scheme, netloc, path or "/", urlencode(sorted(query), quote_via=quote), ""))


def without_tracking(url: str, patterns: Sequence[str] = TRACKING_PARAMS) -> str:
    """`url` less its tracking query parameters, otherwise exactly as written (the published
    link: readers follow it, so nothing else is normalized)."""
    if "?" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    pairs = parts.query.split("&")
    kept = [p for p in pairs if not _is_tracking(unquote(p.split("=", 1)[0]), patterns)]
    if len(kept) == len(pairs):
        return url
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), parts.fragment))


def _digest(data: str) -> int:
    """A 64-bit digest as a signed integer: an index entry a third the size of a hex string's,
    and a collision among a million entries about one chance in 3·10⁷."""
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "little", signed=True)


def url_key(canonical: str | None) -> int | None:
    """An indexable digest of a canonical URL; None for a site's front page, which names no story.

    http and https share a key: the same page served both ways is the same story."""
    if not canonical:
        return None
    rest = canonical.split("://", 1)[1]
    if "/" not in rest.rstrip("/") and "?" not in rest:
        return None
    return _digest(rest)


# ------------------------------------------------------------------ normalized text

# `[^<>]*`, not `[^>]*`: stopping at the next `<` keeps `<br<br<br…` (no `>`) linear.
_BLOCK_END = re.compile(r"(?i)<(?:br|/p|/div|/li|/h\d|/tr|/blockquote|/figcaption)\b[^<>]*>")
# Whole blocks that are about the page, not the story: attributions, editors, share prompts.
_BOILERPLATE = re.compile(
    r"""^\W*(?:
        (?:文章|本文|稿件)?来源[:：] | 责任编辑 | 编辑[:：] | 原标题[:：] | 本文(?:转载|转自|来自) | 转载(?:自|请注明)
        | 点击(?:阅读|查看|关注) | 扫码 | 关注(?:我们|公众号) | 免责声明 | 版权(?:声明|所有) | 声明[:：]
        | (?:source|via|editing\s+by|reporting\s+by|edited\s+by|originally\s+published|this\s+(?:article|story)\s+
           (?:was|first|originally)|read\s+more|share\s+this|follow\s+us|sign\s+up|subscribe|all\s+rights\s+reserved
           |copyright|related\s*:|advertisement)
        | [©®]
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_BOILERPLATE_MAX = 120  # a longer block is content even if it starts like boilerplate
_NOT_WORD = re.compile(r"[\W_]+")
_MARK = "\ue000"


def normalized_text(content_html: str) -> str:
    """The body as comparable text: NFKC, tags and boilerplate blocks dropped, case folded,
    whitespace and punctuation removed (so full-width vs half-width or re-spaced copies match)."""
    # One pass through nh3 with no tags allowed (what text.plain_text does, minus its whitespace
    # work, which the folding below makes moot); a private-use character marks where blocks
    # ended so boilerplate can be judged block by block.
    marked = _BLOCK_END.sub("\\g<0>" + _MARK, content_html)
    text = html.unescape(strip_tags(marked))
    kept: list[str] = []
    for block in unicodedata.normalize("NFKC", text).split(_MARK):
        block = block.strip()
        if not block or (len(block) <= _BOILERPLATE_MAX and _BOILERPLATE.match(block)):
            continue
        kept.append(block)
    return _NOT_WORD.sub("", " ".join(kept).casefold())


def fingerprint(text: str) -> int | None:
    """Exact-content digest of normalized text; None when the text is too short to identify a story."""
    if len(text) < MIN_FINGERPRINT_CHARS:
        return None
    return _digest(text)


def shingles(text: str) -> memoryview:
    """The text's shingles, each as one 64-bit number: 4 characters of Chinese (or other wide
    script), 8 bytes of UTF-8 otherwise (8 letters of English).

    Latin text needs the longer shingle: its 4-letter groups recur across unrelated texts
    ("tion", "ofthe"), so two unrelated English texts came out ~7 % alike and shared an LSH
    band about one time in 1,000, which at a million stored entries would offer every new one
    some 1,000 false candidates (docs/benchmarks.md). A Chinese character carries more than a
    letter: 4 of them are as rare. Text is "wide" when its UTF-8 form takes 2 bytes or more
    per character on average (more than half of it CJK, or a Cyrillic or Greek script).

    Built without a Python loop: the shingles are the 8-byte words of the encoded text (UTF-16,
    2 bytes a character, for wide text) read from each byte offset within the first word.
    Slicing strings instead cost ~20× more."""
    data = text.encode()
    step = 1
    if len(data) >= 2 * len(text):
        data, step = text.encode("utf-16-le"), 2  # rarer characters take 4 and simply make two shingles
    return memoryview(b"".join(data[o : o + (len(data) - o) // 8 * 8] for o in range(0, 8, step))).cast("Q")


def signature(grams: memoryview) -> bytes | None:
    """MinHash signature of shingles: NUM_PERM unsigned 32-bit values, packed little-endian
    (how it is stored); None when there is too little text for a meaningful similarity."""
    if len(grams) < MIN_SHINGLES:
        return None
    from rensa import RMinHash  # here: publishing imports this module for its URL rules only

    row = RMinHash.digest_matrix_from_flat_token_hashes(grams, [0, len(grams)], NUM_PERM, SEED).to_rows()[0]
    return struct.pack(f"<{NUM_PERM}I", *row)


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two signatures: the share of equal positions. (numpy,
    imported by the dedup stage anyway: 2.3× faster than comparing unpacked tuples, and dedup
    compares every candidate pair.)"""
    import numpy as np

    x, y = np.frombuffer(a, dtype="<u4", count=len(a) // 4), np.frombuffer(b, dtype="<u4", count=len(b) // 4)
    n = min(len(x), len(y))
    return int(np.count_nonzero(x[:n] == y[:n])) / n if n else 0.0


def similarities(a: bytes, others: Sequence[bytes]) -> list[float]:
    """`similarity` of `a` with each of `others`, in one vectorized comparison (an entry's
    band candidates are checked together: one at a time cost most of a boilerplate-heavy run)."""
    if not others or any(len(o) != len(a) for o in others):
        return [similarity(a, o) for o in others]
    import numpy as np

    x = np.frombuffer(a, dtype="<u4")
    return (np.frombuffer(b"".join(others), dtype="<u4").reshape(len(others), -1) == x).mean(axis=1).tolist()



def features(link: str | None, content_html: str, patterns: Sequence[str] = TRACKING_PARAMS) -> Features:
    curl = canonical_url(link, patterns)
    text = normalized_text(content_html)
    sig = signature(shingles(text))
    uk, fp = url_key(curl), fingerprint(text)
    return Features(curl, uk, fp, len(text), sig, lsh.index_keys(uk, fp, sig))
