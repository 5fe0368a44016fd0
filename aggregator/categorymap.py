"""Which of a remote feed's own `<category>` terms become published categories (`feed_categories`).

A category is a feed of its own, so a term a feed made up (`sport`, `随机标签`) would publish a
feed nobody asked for. Per source:

- "map" (the default): a term is kept when the config names it: a `[categories]` key (an alias
  maps it to its canonical name), a category some source is configured with or a rule adds; compared without
  regard to case. Other terms are dropped, and remembered with the entry so that
  `aggregator categories` can list them for the operator to map;
- "keep": every term is a category (aliases still apply);
- "ignore": none is.

The source's own `categories` are added to its entries in every mode. Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

MODES = ("map", "keep", "ignore")


def known_names(settings) -> dict[str, str]:
    """Case-folded name → canonical category, for every category the config names."""
    known: dict[str, str] = {}
    for source in settings.sources:
        for name in source.categories:
            canonical = settings.canonical_category(name)
            known.setdefault(canonical.casefold(), canonical)
    for rule in settings.rules:  # a category a rule files entries under is named too
        if isinstance(rule, Mapping) and isinstance(rule.get("category"), str) and rule["category"].strip():
            name = " ".join(rule["category"].split())
            known.setdefault(name.casefold(), settings.canonical_category(name))
    for key, options in settings.categories.items():
        name = " ".join(key.split())
        known[name.casefold()] = options.alias_of if options.alias_of is not None else name
    return known


def sort_terms(terms: Iterable[str], mode: str | bool, known: Mapping[str, str],
               aliases: Mapping[str, str]) -> tuple[list[str], list[str]]:  # fmt: skip
    """(kept, dropped): the feed's terms (whitespace collapsed) that become categories under
    `mode`, canonical names; and the ones "map" drops, as written."""
    if isinstance(mode, bool):  # True and False, as `feed_categories` once took
        mode = "keep" if mode else "ignore"
    if mode == "ignore":
        return [], []
    kept: list[str] = []
    dropped: list[str] = []
    for raw in terms:
        term = " ".join(raw.split()) if raw else ""
        if not term:
            continue
        if term in aliases:
            kept.append(aliases[term])
        elif mode == "keep":
            kept.append(term)
        elif term.casefold() in known:
            kept.append(known[term.casefold()])
        else:
            dropped.append(term)
    return kept, list(dict.fromkeys(dropped))


def count_dropped(rows: Iterable[Sequence[str]]) -> list[tuple[str, int]]:
    """Each dropped term with the number of entries that carried it, most frequent first."""
    counts: dict[str, int] = {}
    for terms in rows:
        for t in dict.fromkeys(terms):
            counts[t] = counts.get(t, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
