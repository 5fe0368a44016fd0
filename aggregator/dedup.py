"""Deduplication: every story once, across files, feeds and outlets.

Layers, cheapest first (identity — same source and key — is an update, handled by the store):

1. **url**: the canonical form of the entry's original URL (scheme and host case, default
   port, fragment, trailing slash, tracking parameters and query order normalized away).
2. **content**: a digest of the normalized body text (NFKC, tags and boilerplate lines
   stripped, case, whitespace and punctuation folded).
3. **near**: MinHash over character shingles of that text (works the same for Chinese, which
   has no spaces, and Latin scripts), indexed by LSH band keys. The URL and text digests and
   the band keys all go into one key index (`keyindex`), so the candidates of a new entry
   are found by indexed lookups, never a pairwise scan. A near candidate
   is confirmed only when the estimated Jaccard similarity reaches `near_threshold` *and* the
   titles agree, which keeps same-topic, different stories apart.

Duplicates are linked to a canonical entry (`canonical_id`), never deleted. The canonical
entry of a cluster is the best by `rank`: configured source priority, then the earliest
published, then the latest updated (so a newer version of the same article replaces the
older), then the lowest id. Withdrawing, changing or deleting an entry re-evaluates its cluster,
which promotes the next member.

The functions above `run` are pure; `run` does the I/O against the store.
"""

from __future__ import annotations

import fnmatch
import hashlib
import html
import json
import logging
import operator
import re
import struct
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import nh3
from rensa import RMinHash
from sqlalchemy import bindparam, delete, insert, select, true, update

from . import keyindex, lsh
from .config import DedupSettings
from .model import Features

log = logging.getLogger(__name__)

# Bump when anything below changes what features or decisions come out: stored features are
# then recomputed and every cluster re-evaluated on the next run.
ALGORITHM = "9"
# The version of the canonical-choice rule (`rank`, `outranks`): a change re-decides every
# cluster once, without recomputing features.
RULES = "2"

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
SHORT_BODY = 200  # bodies this short must also agree on the headline's wording (content and near)
LINK_CONTRADICTED = 0.3  # a shared link does not join bodies and headlines less alike than this
# How much the headlines must agree (share of the shorter one's words, or CJK character bigrams,
# found in the other) falls as the bodies agree more: (body similarity from, title overlap needed).
TITLE_AGREEMENT = ((0.9, 0.0), (0.75, 0.8), (0.0, 1.0))
SAME_TEXT = TITLE_AGREEMENT[0][0]  # near-identical bodies: a reworded title is still the same story
MAX_CANDIDATES = 50  # per entry, the ones sharing the most bands

URL, CONTENT, NEAR = "url", "content", "near"

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
    text = html.unescape(nh3.clean(marked, tags=set(), strip_comments=True))
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
    row = RMinHash.digest_matrix_from_flat_token_hashes(grams, [0, len(grams)], NUM_PERM, SEED).to_rows()[0]
    return struct.pack(f"<{NUM_PERM}I", *row)


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two signatures: the share of equal positions."""
    x, y = struct.unpack(f"<{len(a) // 4}I", a), struct.unpack(f"<{len(b) // 4}I", b)
    n = min(len(x), len(y))
    return sum(map(operator.eq, x[:n], y[:n])) / n if n else 0.0


def similarities(a: bytes, others: Sequence[bytes]) -> list[float]:
    """`similarity` of `a` with each of `others`, in one vectorized comparison (an entry's
    band candidates are checked together: one at a time cost most of a boilerplate-heavy run)."""
    if not others or any(len(o) != len(a) for o in others):
        return [similarity(a, o) for o in others]
    import numpy as np

    x = np.frombuffer(a, dtype="<u4")
    return (np.frombuffer(b"".join(others), dtype="<u4").reshape(len(others), -1) == x).mean(axis=1).tolist()


# ------------------------------------------------------------------ titles

# Labels outlets put before a reprinted or updated headline.
_TITLE_PREFIX = re.compile(
    r"""^\s*(?:
        [【\[〔（(][^】\]〕）)]{1,12}[】\]〕）)]
        | (?:转载|转帖|转|独家|快讯|更新|原创|视频|图文|重磅)\s*[:：|丨]
        | (?:re|fw|fwd|reprint|repost|update|updated|breaking|exclusive|watch|live)\s*[:：|-]
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_NUMBER = re.compile(r"\d+")


def title_core(title: str) -> str:
    """A headline without reprint labels: NFKC, case folded, punctuation turned into spaces."""
    t = unicodedata.normalize("NFKC", title)
    for _ in range(3):
        stripped = _TITLE_PREFIX.sub("", t, count=1)
        if stripped == t:
            break
        t = stripped
    return " ".join(_NOT_WORD.sub(" ", t.casefold()).split())


_CJK_RUN = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+)")


def title_tokens(core: str) -> set[str]:
    """Character bigrams of Chinese/Japanese/Korean runs (no word spaces there), words elsewhere."""
    out: set[str] = set()
    for i, part in enumerate(_CJK_RUN.split(core)):
        if i % 2:  # a CJK run
            out |= {part[j : j + 2] for j in range(len(part) - 1)} if len(part) > 1 else {part}
        else:
            out.update(part.split())
    return out


def title_similarity(a: str, b: str) -> float:
    """Share of the shorter headline's tokens found in the other (1.0 when one contains the
    other, e.g. an added outlet suffix)."""
    ta, tb = title_tokens(title_core(a)), title_tokens(title_core(b))
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / min(len(ta), len(tb))


def titles_agree(a: str, b: str, text_similarity: float = 0.0) -> bool:
    """Do two headlines name the same story, given how alike their bodies are? Their numbers
    must match (a daily report with new figures is a new story); their wording must match the
    more closely the less alike the bodies are (TITLE_AGREEMENT): one headline wholly inside the
    other (a reprint label or an outlet suffix added) for a moderately similar body, most of it
    for a very similar one, none of it for a near-identical one."""
    ca, cb = title_core(a), title_core(b)
    if Counter(_NUMBER.findall(ca)) != Counter(_NUMBER.findall(cb)):
        return False
    needed = next(need for above, need in TITLE_AGREEMENT if text_similarity >= above)
    return needed == 0.0 or title_similarity(a, b) >= needed


# ------------------------------------------------------------------ features and decisions


def features(link: str | None, content_html: str, patterns: Sequence[str] = TRACKING_PARAMS) -> Features:
    curl = canonical_url(link, patterns)
    text = normalized_text(content_html)
    sig = signature(shingles(text))
    uk, fp = url_key(curl), fingerprint(text)
    return Features(curl, uk, fp, len(text), sig, lsh.index_keys(uk, fp, sig))


@dataclass(slots=True)
class Item:
    """One entry as the clustering decision sees it."""

    id: int
    source: str
    title: str
    published: datetime | None
    updated: datetime | None
    first_seen: datetime
    url_key: int | None = None
    fingerprint: int | None = None
    text_chars: int = 0
    signature: bytes | None = None
    withdrawn: bool = False
    fresh: bool = False  # features computed in this run: its index keys are not stored yet
    keys: tuple[int, ...] = ()  # its index keys, when computed in this run
    canonical_id: int | None = None
    dup_reason: str | None = None
    dup_score: float | None = None
    key: str = ""  # its key within its source: with the source name, a tie-break that survives a rebuild


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rank(item: Item, priority: Sequence[str]) -> tuple:
    """Sort key of the canonical-choice rule: the smallest is shown.

    1. source priority (`[dedup] source_priority`, listed sources first, in that order);
    2. earliest published (first seen when the entry has no date): the original, not a reprint;
    3. latest updated, so a newer version of the same story replaces the older one;
    4. source name and key: never the order things were stored in, so a rebuild from an empty
       database shows the same entry."""
    prio = priority.index(item.source) if item.source in priority else len(priority)
    published = item.published or item.first_seen
    updated = item.updated or published
    return (prio, published, -(updated - _EPOCH).total_seconds(), item.source, item.key, item.id)


def version_rank(item: Item, priority: Sequence[str]) -> tuple:
    """Sort key between versions of one page (the same canonical URL): the latest-dated
    (updated, else published) is the page as it is now, whatever the file names or mtimes."""
    prio = priority.index(item.source) if item.source in priority else len(priority)
    latest = item.updated or item.published or item.first_seen
    return (prio, -(latest - _EPOCH).total_seconds(), item.source, item.key, item.id)


def outranks(a: Item, b: Item, priority: Sequence[str]) -> bool:
    """Is `a` shown rather than `b` when they are in one cluster? Versions of one page by
    `version_rank`, anything else (reprints, copies) by `rank`."""
    if a.url_key and a.url_key == b.url_key:
        return version_rank(a, priority) < version_rank(b, priority)
    return rank(a, priority) < rank(b, priority)


def compare(a: Item, b: Item, near_threshold: float) -> tuple[str, float] | None:
    """Are two entries the same story? (reason, score) when they are, None otherwise."""
    if a.url_key and a.url_key == b.url_key and not _link_contradicted(a, b):
        return URL, 1.0
    # A short body (a news flash, a teaser) can be shared by different stories: its headline
    # must agree in wording, whatever the text similarity.
    short = min(a.text_chars, b.text_chars) < SHORT_BODY
    if a.fingerprint and a.fingerprint == b.fingerprint:
        return (CONTENT, 1.0) if titles_agree(a.title, b.title, 0.0 if short else 1.0) else None
    if a.signature and b.signature:
        score = similarity(a.signature, b.signature)
        if score >= near_threshold and titles_agree(a.title, b.title, 0.0 if short else score):
            return NEAR, round(score, 3)
    return None


def _link_contradicted(a: Item, b: Item) -> bool:
    """Some feeds point every item at one page (a section, a show): a shared link is not the
    same story when both bodies and both headlines clearly differ."""
    return bool(
        a.signature
        and b.signature
        and similarity(a.signature, b.signature) < LINK_CONTRADICTED
        and title_similarity(a.title, b.title) < LINK_CONTRADICTED
    )


def settings_digest(settings: DedupSettings) -> tuple[str, str]:
    """(features digest, decisions digest): what stored features and clusters were made with."""
    feats = json.dumps([ALGORITHM, sorted(tracking_patterns(settings.tracking_params))])
    decisions = json.dumps([feats, RULES, settings.near_threshold, list(settings.source_priority)])
    return (
        hashlib.sha256(feats.encode()).hexdigest()[:32],
        hashlib.sha256(decisions.encode()).hexdigest()[:32],
    )


# ------------------------------------------------------------------ the stage


@dataclass(slots=True)
class DedupReport:
    examined: int = 0  # entries whose cluster was (re)decided
    computed: int = 0  # entries whose features were (re)computed
    duplicates: int = 0  # of the examined, how many are now linked to a canonical entry
    promoted: int = 0  # members that became canonical because theirs left
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        by = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        return f"dedup: {self.examined} examined, {self.duplicates} duplicates" + (f" ({by})" if by else "")


_CHUNK = 400  # ids per IN (...) list


def _chunks(seq: Sequence, n: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


@dataclass(slots=True)
class Decision:
    changed: set[int] = field(default_factory=set)  # entries whose canonical_id/reason/score changed
    repoints: list[tuple[int, int]] = field(default_factory=list)  # (old canonical, new): move its members


def decide(
    items: dict[int, Item],
    ids: Iterable[int],
    candidates: dict[int, Sequence[int]],
    near_threshold: float,
    priority: Sequence[str],
    later: set[int] | frozenset[int] = frozenset(),
) -> Decision:
    """Re-cluster the entries `ids` among the loaded `items` (mutating their canonical_id,
    dup_reason and dup_score).

    They are detached and then decided best-ranked first: each joins the cluster of its surest
    match (url, then content, then near by score), and takes that cluster's place as canonical
    when it outranks the current canonical entry. An entry still waiting for its turn (in
    `ids`, or in `later` for a run decided in several batches) is not a match yet; it will
    find the others when its turn comes."""
    out = Decision()
    ids = list(ids)
    out.changed |= set(ids)
    todo = set(ids) | later
    members: dict[int, set[int]] = {}
    for it in items.values():
        if it.id in out.changed:
            it.canonical_id, it.dup_reason, it.dup_score = None, None, None
        elif it.canonical_id:
            members.setdefault(it.canonical_id, set()).add(it.id)
    for it in sorted((items[i] for i in ids), key=lambda x: rank(x, priority)):
        todo.discard(it.id)
        if it.withdrawn:
            continue
        best: tuple | None = None
        for cid in candidates.get(it.id, ()):
            cand = items.get(cid)
            if cand is None or cand.withdrawn or cid in todo:
                continue
            root = items.get(cand.canonical_id) if cand.canonical_id else cand
            if root is None or root.withdrawn or root.id == it.id:
                continue
            verdict = compare(it, cand, near_threshold)
            if verdict is None:
                continue
            order = ((URL, CONTENT, NEAR).index(verdict[0]), -verdict[1], rank(root, priority))
            if best is None or order < best[0]:
                best = (order, root, verdict)
        if best is None:
            continue
        _, root, (reason, score) = best
        if outranks(it, root, priority):
            # The newcomer outranks the cluster's canonical entry: it takes its place.
            moved = members.pop(root.id, set())
            for m in moved:
                items[m].canonical_id = it.id
            root.canonical_id, root.dup_reason, root.dup_score = it.id, reason, score
            members[it.id] = moved | {root.id}
            out.changed |= moved | {root.id}
            out.repoints.append((root.id, it.id))
        else:
            it.canonical_id, it.dup_reason, it.dup_score = root.id, reason, score
            members.setdefault(root.id, set()).add(it.id)
    return out


RUN_BATCH = 1000  # entries decided per step of a run: bounds memory on a cold start


def run(store, settings, touched_ids: Iterable[int] = ()) -> DedupReport:
    """Cluster new, changed and withdrawn entries (plus any left pending by an earlier run).

    Everything happens in one transaction: readers see the clusters before or after, never
    half-way. Members of a cluster whose canonical entry is touched are re-evaluated too, so a
    withdrawn or changed canonical entry hands its place to the next member. The entries are
    decided best-ranked first, RUN_BATCH at a time, each batch with its own indexed lookups."""
    from .runtime import paused_gc

    with paused_gc():
        return _run(store, settings, touched_ids)


def _run(store, settings, touched_ids: Iterable[int]) -> DedupReport:
    from .store import DedupStateRow, EntryRow, SourceRow

    started = time.monotonic()
    cfg: DedupSettings = settings.dedup
    priority = list(cfg.source_priority)
    patterns = tracking_patterns(cfg.tracking_params)
    report = DedupReport()
    e = EntryRow.__table__
    feat_digest, decision_digest = settings_digest(cfg)
    with store.engine.begin() as c:
        state = dict(c.execute(select(DedupStateRow.name, DedupStateRow.value)).all())
        # Features stored under other settings are recomputed. (With no digest stored yet, the
        # only features stored are the ones the ingest computed with these settings.)
        recompute_all = state.get("features") not in (None, feat_digest)
        if recompute_all:
            c.execute(update(e).values(dedup_version=None))
            # Their index keys go with them, all at once: the ones stored may have been made by
            # another version, which `delete_keys` (recomputing them) would not find.
            keyindex.clear(c)
        ids = _select(c, e, set(touched_ids), everything=state.get("decisions") != decision_digest)
        sources = dict(c.execute(select(SourceRow.id, SourceRow.name)).all())
        later = set(ids)
        affected: set[int] = set()  # canonical entries, old and new, whose borrowed categories may change
        final: dict[int, str | None] = {}  # examined entry → its duplicate reason, None when shown
        for batch in _chunks(_ranked(c, e, ids, sources, priority), RUN_BATCH):
            later.difference_update(batch)
            items: dict[int, Item] = {}
            report.computed += _compute(c, e, batch, patterns, items, sources, keys_stored=not recompute_all)
            candidates = _candidates(c, e, items, later, cfg.near_threshold)
            _load(c, e, {i for cs in candidates.values() for i in cs} - items.keys(), items, sources)
            _load(c, e, {it.canonical_id for it in items.values() if it.canonical_id} - items.keys(), items, sources)
            before = {i: (it.canonical_id, it.dup_reason, it.dup_score) for i, it in items.items()}
            decision = decide(items, batch, candidates, cfg.near_threshold, priority, later)
            _write(c, e, items, decision, before)
            affected |= decision.changed | {before[i][0] for i in batch if before[i][0]}
            affected |= {items[i].canonical_id for i in decision.changed if items[i].canonical_id}
            affected |= {i for pair in decision.repoints for i in pair}
            report.examined += len(batch)
            report.promoted += sum(1 for old, _ in decision.repoints if old in ids)
            # Counted as things stand at the end: a later batch may demote an entry of this one.
            for i in decision.changed & ids:
                it = items[i]
                final[i] = it.dup_reason if it.canonical_id and not it.withdrawn else None
        report.reasons.update(r for r in final.values() if r)
        report.duplicates = sum(report.reasons.values())
        _sync_categories(c, e, affected)
        updates = {"features": feat_digest, "decisions": decision_digest}
        if ids:  # the ingest or this run may have added index keys
            keyindex.settle(c)
        for name, value in updates.items():
            if state.get(name) != value:
                c.execute(delete(DedupStateRow).where(DedupStateRow.name == name))
                c.execute(insert(DedupStateRow).values(name=name, value=value))
    report.seconds = time.monotonic() - started
    log.info("%s; %d features computed; %.2f s", report.summary(), report.computed, report.seconds)
    return report


def _ranked(c, e, ids: set[int], sources: dict[int, str], priority: Sequence[str]) -> list[int]:
    """`ids` in the order of the canonical-choice rule."""
    keyed = []
    cols = (e.c.id, e.c.source_id, e.c.published, e.c.updated, e.c.first_seen, e.c.key)
    for chunk in _chunks(sorted(ids)):
        for i, sid, published, updated, first_seen, key in c.execute(select(*cols).where(e.c.id.in_(chunk))):
            it = Item(i, sources.get(sid, ""), "", published, updated, first_seen, key=key)
            keyed.append((rank(it, priority), i))
    keyed.sort()
    return [i for _, i in keyed]


def _select(c, e, ids: set[int], everything: bool) -> set[int]:
    """Which entries to decide: touched, pending, orphans of a deleted canonical entry (the
    foreign key set their canonical_id NULL but left dup_reason), every member of the clusters
    of those, and after a settings change all entries."""
    if everything:
        ids.update(c.scalars(select(e.c.id)))
        return ids
    # `= true`, not `IS true`: PostgreSQL answers only the former from an index.
    ids.update(c.scalars(select(e.c.id).where(e.c.dedup_pending == true())))
    ids.update(c.scalars(select(e.c.id).where(e.c.canonical_id.is_(None), e.c.dup_reason.is_not(None))))
    frontier = list(ids)
    while frontier:
        found: list[int] = []
        for chunk in _chunks(frontier):
            found += [i for i in c.scalars(select(e.c.id).where(e.c.canonical_id.in_(chunk))) if i not in ids]
        ids.update(found)
        frontier = found
    return ids


def _candidates(c, e, items: dict[int, Item], later: set[int], near_threshold: float) -> dict[int, list[int]]:
    """Per entry to decide, the ids the key index offers: same URL key, same text key, shared
    LSH band keys (the MAX_CANDIDATES sharing the most, less those whose signature shows they
    cannot reach `near_threshold`). Entries of `later` batches of this run (whose keys the
    ingest may have stored already) cannot be matches yet, so they take no candidate slot."""
    # The lookup finds the entries of this batch too (`shared` adds the probe's own holders);
    # keys of features computed in this run are stored after it.
    keys = {i: it.keys or lsh.index_keys(it.url_key, it.fingerprint, it.signature) for i, it in items.items()}
    probe = [(k, i) for i, ks in keys.items() if not items[i].withdrawn for k in ks]
    found = keyindex.shared(c, probe)
    keyindex.insert(c, [(k, i) for i, ks in keys.items() if items[i].fresh for k in ks])
    exact: dict[int, set[int]] = {}  # same URL key or text key
    shared: dict[int, Counter] = {}  # band keys in common
    for (i, j, kind), n in found.items():
        if j in later:
            continue
        if kind == lsh.BAND:
            shared.setdefault(i, Counter())[j] += n
        else:
            exact.setdefault(i, set()).add(j)
    out: dict[int, list[int]] = {}
    by_band: dict[int, set[int]] = {}  # candidates only a band offers: they can match only as near-duplicates
    for i, it in items.items():
        if it.withdrawn:
            continue
        found = exact.get(i, set())
        out[i] = sorted(found)
        by_band[i] = {j for j, _ in shared.get(i, Counter()).most_common(MAX_CANDIDATES)} - found - {i}
    # Every band-sharing pair is not a near-duplicate: unrelated texts share a band now and then,
    # and more of them the bigger the store. Their signatures alone (not whole entries) are
    # read to drop those below the threshold, which no other layer could match either.
    offered = set().union(*by_band.values())
    signatures: dict[int, bytes] = {j: items[j].signature for j in offered if j in items}
    for chunk in _chunks(sorted(offered - signatures.keys())):
        signatures.update((j, m) for j, m in c.execute(select(e.c.id, e.c.minhash).where(e.c.id.in_(chunk))))
    for i, js in by_band.items():
        sig = items[i].signature
        held = [j for j in js if signatures.get(j)] if sig else []
        scores = similarities(sig, [signatures[j] for j in held])
        near = {j for j, score in zip(held, scores, strict=True) if score >= near_threshold}
        if near:
            out[i] = sorted(set(out[i]) | near)
    return out


def _write(c, e, items: dict[int, Item], decision: Decision, before: dict[int, tuple]) -> None:
    """Store the decision. An entry it leaves in the cluster it was in (`before`: canonical id,
    reason and score as loaded) only has its pending flag cleared, by one statement per chunk:
    on a cold start that is nearly every entry."""
    for old, new in decision.repoints:
        # Members of a demoted canonical entry that were not loaded follow it.
        c.execute(update(e).where(e.c.canonical_id == old).values(canonical_id=new))
    rows, same = [], []
    for i in sorted(decision.changed):
        it = items[i]
        now = (it.canonical_id, it.dup_reason, it.dup_score)
        if now == before.get(i):
            same.append(i)
        else:
            rows.append({"b_id": i, "cid": now[0], "r": now[1], "s": now[2]})
    for chunk in _chunks(rows, 500):
        c.execute(
            update(e)
            .where(e.c.id == bindparam("b_id"))
            .values(canonical_id=bindparam("cid"), dup_reason=bindparam("r"), dup_score=bindparam("s"))
            .values(dedup_pending=False),
            list(chunk),
        )
    for chunk in _chunks(same):
        c.execute(update(e).where(e.c.id.in_(chunk)).values(dedup_pending=False))


_ITEM_COLUMNS = ("id", "source_id", "key", "title", "published", "updated", "first_seen", "url_key", "fingerprint")


def _item_query(e, *extra):
    cols = (*_ITEM_COLUMNS, "text_chars", "minhash", "withdrawn_at", "canonical_id", "dup_reason", "dup_score")
    return select(*(e.c[n] for n in cols), *extra)


def _item(row, sources: dict[int, str]) -> Item:
    return Item(
        id=row.id,
        source=sources.get(row.source_id, ""),
        key=row.key,
        title=row.title,
        published=row.published,
        updated=row.updated,
        first_seen=row.first_seen,
        url_key=row.url_key,
        fingerprint=row.fingerprint,
        text_chars=row.text_chars or 0,
        signature=row.minhash,
        withdrawn=row.withdrawn_at is not None,
        canonical_id=row.canonical_id,
        dup_reason=row.dup_reason,
        dup_score=row.dup_score,
    )


def _load(c, e, ids: Iterable[int], items: dict[int, Item], sources: dict[int, str]) -> None:
    for chunk in _chunks(sorted(ids)):
        for row in c.execute(_item_query(e).where(e.c.id.in_(chunk))):
            items[row.id] = _item(row, sources)


def _compute(
    c, e, ids: list[int], patterns: Sequence[str], items: dict[int, Item], sources: dict[int, str], keys_stored: bool
) -> int:
    """Load the entries to decide, computing features for those whose current version has none
    (once per version: an unchanged entry that is re-decided reuses its stored features).
    `keys_stored`: whether their old index keys may still be stored, to delete."""
    from .store import DedupCategoryRow, delete_keys

    computed = 0
    for chunk in _chunks(ids):
        stale: dict[int, str] = {}  # id → version, of entries whose stored features are not of it
        for row in c.execute(_item_query(e, e.c.version, e.c.dedup_version).where(e.c.id.in_(chunk))):
            items[row.id] = _item(row, sources)
            if row.dedup_version != row.version:
                stale[row.id] = row.version
        if not stale:
            continue
        # The content only for those: usually the ingest computed the features already, and
        # reading every entry's body back would cost more than the rest of the stage.
        fresh: list[dict] = []
        for row in c.execute(select(e.c.id, e.c.link, e.c.content).where(e.c.id.in_(sorted(stale)))):
            it = items[row.id]
            f = features(row.link, row.content, patterns)
            it.url_key, it.fingerprint, it.text_chars = f.url_key, f.fingerprint, f.text_chars
            it.signature, it.keys = f.signature, f.keys
            fresh.append(
                {
                    "b_id": it.id,
                    "cu": f.canonical_url,
                    "uk": f.url_key,
                    "fp": f.fingerprint,
                    "tc": f.text_chars,
                    "mh": f.signature,
                    "dv": stale[row.id],
                }
            )
            it.fresh = True
        if not fresh:
            continue
        computed += len(fresh)
        changed_ids = [r["b_id"] for r in fresh]
        if keys_stored:
            delete_keys(c, changed_ids)  # while the old features they are computed from are stored
        c.execute(
            update(e)
            .where(e.c.id == bindparam("b_id"))
            .values(canonical_url=bindparam("cu"), url_key=bindparam("uk"), fingerprint=bindparam("fp"))
            .values(text_chars=bindparam("tc"), minhash=bindparam("mh"), dedup_version=bindparam("dv")),
            fresh,
        )
        # The new index keys are stored by _candidates, just before the batch's lookups.
        # A new version's categories were rewritten by the store: none of them is borrowed any more.
        c.execute(delete(DedupCategoryRow).where(DedupCategoryRow.entry_id.in_(changed_ids)))
    return computed


def disable(store) -> None:
    """`[dedup] enabled = false`: show every entry again, and forget the settings digest so that
    enabling it later re-clusters everything. Cheap when nothing is clustered (indexed lookup)."""
    from .store import DedupCategoryRow, DedupStateRow, EntryRow

    e = EntryRow.__table__
    with store.engine.begin() as c:
        # Two statements, each answered from an index (an OR of the two would scan the table).
        for linked in (e.c.canonical_id.is_not(None), e.c.canonical_id.is_(None) & e.c.dup_reason.is_not(None)):
            c.execute(update(e).where(linked).values(canonical_id=None, dup_reason=None, dup_score=None))
        c.execute(delete(DedupStateRow).where(DedupStateRow.name == "decisions"))
        borrowed = c.execute(select(DedupCategoryRow.entry_id, DedupCategoryRow.category_id)).all()
        _unborrow(c, [(i, cid) for i, cid in borrowed])
    return None


def _sync_categories(c, e, affected: set[int]) -> None:
    """Give each shown entry of `affected` the categories of its hidden duplicates (borrowed,
    recorded in `dedup_categories`), and take back what no member carries any more: a story
    filed under another category by another source still reaches that category's feed, once."""
    from .store import DedupCategoryRow, EntryCategoryRow

    ec, dc = EntryCategoryRow.__table__, DedupCategoryRow.__table__
    for chunk in _chunks(sorted(affected)):
        rows = c.execute(select(e.c.id, e.c.canonical_id, e.c.withdrawn_at).where(e.c.id.in_(chunk))).all()
        shown = [i for i, cid, gone in rows if cid is None and gone is None]
        members: dict[int, list[int]] = {i: [] for i in shown}
        for shown_chunk in _chunks(shown):
            q = select(e.c.id, e.c.canonical_id).where(e.c.canonical_id.in_(shown_chunk), e.c.withdrawn_at.is_(None))
            for m, cid in c.execute(q):
                members[cid].append(m)
        borrowed: dict[int, set[int]] = {}
        everyone = {i for i, *_ in rows} | {m for ms in members.values() for m in ms}
        for part in _chunks(sorted(everyone)):
            for i, cat in c.execute(select(dc.c.entry_id, dc.c.category_id).where(dc.c.entry_id.in_(part))):
                borrowed.setdefault(i, set()).add(cat)
        # An entry alone in its cluster that has borrowed nothing has nothing to give or take
        # back: on a cold start, nearly all of them, whose categories need not be read.
        busy = [i for i, *_ in rows if members.get(i) or i in borrowed]
        involved = set(busy) | {m for i in busy for m in members.get(i, ())}
        cats: dict[int, set[int]] = {}
        for part in _chunks(sorted(involved)):
            for i, cat in c.execute(select(ec.c.entry_id, ec.c.category_id).where(ec.c.entry_id.in_(part))):
                cats.setdefault(i, set()).add(cat)

        own = {i: cats.get(i, set()) - borrowed.get(i, set()) for i in involved}
        give: list[tuple[int, int]] = []
        take: list[tuple[int, int]] = []
        for i in busy:
            want = set().union(*(own[m] for m in members[i])) - own[i] if i in members else set()
            # A record of a borrowed category the row of which is gone (the store rewrote the
            # entry's categories) is stale: dropped, and the category lent again if still wanted.
            recorded = borrowed.get(i, set())
            have = recorded & cats.get(i, set())
            give += [(i, cat) for cat in sorted(want - have)]
            take += [(i, cat) for cat in sorted((have - want) | (recorded - have))]
        _unborrow(c, take)
        if give:
            c.execute(insert(ec), [{"entry_id": i, "category_id": cat} for i, cat in give])
            c.execute(insert(dc), [{"entry_id": i, "category_id": cat} for i, cat in give])


def _unborrow(c, pairs: Sequence[tuple[int, int]]) -> None:
    from .store import DedupCategoryRow, EntryCategoryRow

    ec, dc = EntryCategoryRow.__table__, DedupCategoryRow.__table__
    for i, cat in pairs:
        c.execute(delete(ec).where(ec.c.entry_id == i, ec.c.category_id == cat))
        c.execute(delete(dc).where(dc.c.entry_id == i, dc.c.category_id == cat))


# ------------------------------------------------------------------ reading clusters


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    title: str
    source: str
    key: str
    link: str | None
    reason: str | None = None  # None for the canonical entry
    score: float | None = None

    def describe(self) -> str:
        why = f"near {self.score:.2f}" if self.reason == NEAR and self.score is not None else (self.reason or "")
        return f"{why:<10} {self.source}: {self.key}"


@dataclass(frozen=True, slots=True)
class Cluster:
    canonical: Member
    members: tuple[Member, ...]


def clusters(store) -> list[Cluster]:
    """Every cluster with visible duplicates: the canonical entry and its members, newest first."""
    from .store import EntryRow, SourceRow

    e = EntryRow.__table__
    cols = (e.c.id, e.c.title, SourceRow.name, e.c.key, e.c.link, e.c.dup_reason, e.c.dup_score)
    members: dict[int, list[Member]] = {}
    with store.engine.connect() as c:
        q = (
            select(e.c.canonical_id, *cols)
            .join(SourceRow, SourceRow.id == e.c.source_id)
            .where(e.c.canonical_id.is_not(None), e.c.withdrawn_at.is_(None))
            .order_by(e.c.id)
        )
        for cid, *row in c.execute(q):
            members.setdefault(cid, []).append(Member(*row))
        heads: list[tuple] = []
        for chunk in _chunks(sorted(members)):
            q = select(e.c.sort_date, *cols).join(SourceRow, SourceRow.id == e.c.source_id).where(e.c.id.in_(chunk))
            heads += c.execute(q).all()
    heads.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [Cluster(Member(*h[1:6]), tuple(members[h[1]])) for h in heads]
