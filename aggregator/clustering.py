"""The clustering rules: when two entries are one story, and which of a cluster is shown.

Pure functions over `model.ClusterEntry` records; the dedup stage (`dedup.py`) loads the
records from the store, calls these, and stores what they decide.

Layers, cheapest first (identity, the same source and key, is an update, handled by the store):
**url** (same canonical URL), **content** (same normalized text), **near** (MinHash
similarity of at least `near_threshold`, confirmed by the headlines: same-topic, different
stories stay apart). Candidates come from the key index (`keyindex`), never a pairwise scan.

The canonical entry of a cluster is the best by `rank`: configured source priority, then the
earliest published, then the latest updated (so a newer version of the same article replaces
the older), then source name and key. Withdrawing, changing or deleting an entry re-evaluates
its cluster, which promotes the next member.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from . import lsh
from .config import DedupSettings
from .features import ALGORITHM, similarities, similarity, tracking_patterns
from .model import ClusterEntry
from .sharing import Sharing

# The version of the canonical-choice rule (`rank`, `outranks`): a change re-decides every
# cluster once, without recomputing features.
RULES = "2"

SHORT_BODY = 200  # bodies this short must also agree on the headline's wording (content and near)
LINK_CONTRADICTED = 0.3  # a shared link does not join bodies and headlines less alike than this
# How much the headlines must agree (share of the shorter one's words, or CJK character bigrams,
# found in the other) falls as the bodies agree more: (body similarity from, title overlap needed).
TITLE_AGREEMENT = ((0.9, 0.0), (0.75, 0.8), (0.0, 1.0))
SAME_TEXT = TITLE_AGREEMENT[0][0]  # near-identical bodies: a reworded title is still the same story
MAX_CANDIDATES = 50  # per entry, the ones sharing the most bands

URL, CONTENT, NEAR = "url", "content", "near"
_NOT_WORD = re.compile(r"[\W_]+")

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


# Cached: an entry's headline is compared with each of its candidates (up to MAX_CANDIDATES)
# and each candidate with many entries of a batch; normalizing it anew each time was half of
# the comparisons' cost.
@lru_cache(maxsize=1 << 14)
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


@lru_cache(maxsize=1 << 14)
def title_tokens(core: str) -> frozenset[str]:
    """Character bigrams of Chinese/Japanese/Korean runs (no word spaces there), words elsewhere."""
    out: set[str] = set()
    for i, part in enumerate(_CJK_RUN.split(core)):
        if i % 2:  # a CJK run
            out |= {part[j : j + 2] for j in range(len(part) - 1)} if len(part) > 1 else {part}
        else:
            out.update(part.split())
    return frozenset(out)


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


# ------------------------------------------------------------------ the canonical entry


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rank(item: ClusterEntry, priority: Sequence[str]) -> tuple:
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


def version_rank(item: ClusterEntry, priority: Sequence[str]) -> tuple:
    """Sort key between versions of one page (the same canonical URL): the latest-dated
    (updated, else published) is the page as it is now, whatever the file names or mtimes."""
    prio = priority.index(item.source) if item.source in priority else len(priority)
    latest = item.updated or item.published or item.first_seen
    return (prio, -(latest - _EPOCH).total_seconds(), item.source, item.key, item.id)


def outranks(a: ClusterEntry, b: ClusterEntry, priority: Sequence[str]) -> bool:
    """Is `a` shown rather than `b` when they are in one cluster? Versions of one page by
    `version_rank`, anything else (reprints, copies) by `rank`."""
    if a.url_key and a.url_key == b.url_key:
        return version_rank(a, priority) < version_rank(b, priority)
    return rank(a, priority) < rank(b, priority)


def compare(a: ClusterEntry, b: ClusterEntry, near_threshold: float) -> tuple[str, float] | None:
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


def _link_contradicted(a: ClusterEntry, b: ClusterEntry) -> bool:
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



@dataclass(slots=True)
class Decision:
    changed: set[int] = field(default_factory=set)  # entries whose canonical_id/reason/score changed
    repoints: list[tuple[int, int]] = field(default_factory=list)  # (old canonical, new): move its members


def decide(
    items: dict[int, ClusterEntry],
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



# ------------------------------------------------------------------ candidates


def index_keys(items: dict[int, ClusterEntry]) -> dict[int, tuple[int, ...]]:
    """Each entry's keys in the dedup key index: computed in this run, else from its stored features."""
    return {i: it.keys or lsh.index_keys(it.url_key, it.fingerprint, it.signature) for i, it in items.items()}


def offered(
    found: Sharing, items: dict[int, ClusterEntry], later: set[int]
) -> tuple[dict[int, list[int]], dict[int, set[int]]]:
    """From the key index's answer (`sharing.Sharing`): per entry to decide, the ids sharing
    its URL or text key (exact), and the MAX_CANDIDATES sharing the most band keys besides those
    (by_band: they can match only as near-duplicates; ties go to the newest). Entries of `later`
    batches of this run (whose keys the ingest may have stored already) cannot be matches yet,
    so they take no candidate slot."""
    import numpy as np

    entry, other, kind, _ = found
    if later:
        keep = ~np.isin(other, np.fromiter(later, dtype=np.int64, count=len(later)))
        entry, other, kind = entry[keep], other[keep], kind[keep]
    exact: dict[int, set[int]] = {}
    is_band = kind == lsh.BAND
    for i, j in zip(entry[~is_band].tolist(), other[~is_band].tolist(), strict=True):
        exact.setdefault(i, set()).add(j)
    # Band pairs come most-shared first within each entry: its first MAX_CANDIDATES are kept.
    entry, other = entry[is_band], other[is_band]
    top = np.arange(len(entry)) - np.searchsorted(entry, entry) < MAX_CANDIDATES
    entry, other = entry[top], other[top]
    firsts = np.flatnonzero(np.diff(entry)) + 1
    band: dict[int, set[int]] = {
        int(entry[at]): set(group.tolist())
        for at, group in zip([0, *firsts.tolist()], np.split(other, firsts), strict=True)
        if len(group)
    }
    out: dict[int, list[int]] = {}
    by_band: dict[int, set[int]] = {}
    for i, it in items.items():
        if it.withdrawn:
            continue
        same = exact.get(i, set())
        out[i] = sorted(same)
        by_band[i] = band.get(i, set()) - same - {i}
    return out, by_band


def with_near(exact: dict[int, list[int]], by_band: dict[int, set[int]], items: dict[int, ClusterEntry],
              signatures: dict[int, bytes | None], near_threshold: float) -> dict[int, list[int]]:  # fmt: skip
    """The candidates: the exact ones plus the band-sharing ones whose signature reaches
    `near_threshold`. Every band-sharing pair is not a near-duplicate: unrelated texts share a
    band now and then, and more of them the bigger the store; a pair below the threshold no
    other layer could match either."""
    out = dict(exact)
    for i, js in by_band.items():
        sig = items[i].signature
        held = [j for j in js if signatures.get(j)] if sig else []
        scores = similarities(sig, [signatures[j] for j in held])
        near = {j for j, score in zip(held, scores, strict=True) if score >= near_threshold}
        if near:
            out[i] = sorted(set(out[i]) | near)
    return out


def ranked(entries: Iterable[ClusterEntry], priority: Sequence[str]) -> list[int]:
    """The ids of `entries` in the order of the canonical-choice rule."""
    return [i for _, i in sorted((rank(it, priority), it.id) for it in entries)]
