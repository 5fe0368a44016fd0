"""Republishing rules: `[[rules]]` in the config, applied in order to each entry of their sources.

    [[rules]]
    sources = ["wire"]                                  # optional: these sources only
    when = { title = "(?i)sponsored|广告", url = "/ads/" }  # optional: every field given must match
    action = "block"        # block | keep | remove | replace | add_category | set_category

`when` patterns are searched with RE2, whose matching time is linear in the text whatever the
pattern: a rule an operator copied from a forum cannot stall a run. Fields: title, content,
summary, url, author, categories (a pattern matches if it matches any one of the authors or
categories). Actions:

- block: the entry is hidden (it stays stored, so removing the rule brings it back);
- keep: when any keep rule applies to a source, only its entries that match one of them pass;
- remove: `selector = "div.ad, p.share"`, CSS, drops the matching elements of the content;
- replace: `field` (title, content or summary), `pattern`, `replacement` (RE2 syntax, `\\1` groups);
- add_category / set_category: `category = "Name"`, added to or replacing the entry's categories.

Pure: `compile_rules` turns the config's tables into `Rule`s (a `RuleError` names the bad key),
`rewrite` runs the rewriting ones where an entry is parsed, `verdict` says whether block and keep
hide the entry as stored, and `apply` runs all of them on one entry and says what happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .model import Entry

FIELDS = ("title", "content", "summary", "url", "author", "categories")
ACTIONS = ("block", "keep", "remove", "replace", "add_category", "set_category")
REPLACEABLE = ("title", "content", "summary")
_KEYS = {
    "block": set(),
    "keep": set(),
    "remove": {"selector"},
    "replace": {"field", "pattern", "replacement"},
    "add_category": {"category"},
    "set_category": {"category"},
}


class RuleError(ValueError):
    """A rule cannot be used; the message names it (`rules[2].when.title: …`)."""


@dataclass(frozen=True, slots=True)
class Rule:
    index: int  # position in the config, for messages and `rules test`
    action: str
    sources: frozenset[str] | None = None  # None: every source
    when: tuple[tuple[str, Any], ...] = ()  # (field, compiled RE2 pattern)
    selector: str | None = None
    field: str | None = None
    pattern: Any = None
    replacement: str = ""
    category: str | None = None

    @property
    def name(self) -> str:
        return f"rules[{self.index}] ({self.action})"

    def covers(self, source: str) -> bool:
        return self.sources is None or source in self.sources

    def matches(self, entry: Entry) -> bool:
        return all(any(p.search(v) for v in _values(entry, f)) for f, p in self.when)


@dataclass(slots=True)
class Outcome:
    """What the rules made of one entry."""

    entry: Entry
    blocked: str | None = None  # why it is hidden, None when it passes
    fired: list[str] = field(default_factory=list)  # names of the rules that matched


def _re2(pattern: object, where: str):
    import re2

    if not isinstance(pattern, str):
        raise RuleError(f"{where}: expected a regular expression, got {type(pattern).__name__}")
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise RuleError(f"{where}: not a valid regular expression ({reason}): {pattern!r}") from None


def compile_rules(raw: Sequence[Mapping[str, Any]], known_sources: Iterable[str] | None = None) -> tuple[Rule, ...]:
    """The config's `[[rules]]` tables → rules, or RuleError naming the first bad key."""
    known = set(known_sources) if known_sources is not None else None
    out = []
    for i, table in enumerate(raw):
        where = f"rules[{i}]"
        if not isinstance(table, Mapping):
            raise RuleError(f"{where}: expected a table")
        action = table.get("action")
        if action not in ACTIONS:
            raise RuleError(f"{where}.action: unknown action {action!r} (one of {', '.join(ACTIONS)})")
        extra = set(table) - {"action", "sources", "when"} - _KEYS[action]
        if extra:
            raise RuleError(f"{where}.{sorted(extra)[0]}: not an option of a {action} rule")
        missing = {k for k in _KEYS[action] if k not in table and k != "replacement"}
        if missing:
            raise RuleError(f"{where}.{sorted(missing)[0]}: required by a {action} rule")
        sources = table.get("sources")
        if sources is not None:
            if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
                raise RuleError(f"{where}.sources: expected a list of source names")
            unknown = [s for s in sources if known is not None and s not in known]
            if unknown:
                raise RuleError(f"{where}.sources: no source is named {unknown[0]!r}")
        when = table.get("when", {})
        if not isinstance(when, Mapping):
            raise RuleError(f"{where}.when: expected a table of field = pattern")
        compiled = []
        for f, pattern in when.items():
            if f not in FIELDS:
                raise RuleError(f"{where}.when.{f}: unknown field (one of {', '.join(FIELDS)})")
            compiled.append((f, _re2(pattern, f"{where}.when.{f}")))
        rule = Rule(i, action, frozenset(sources) if sources is not None else None, tuple(compiled))
        if action == "remove":
            rule = replace(rule, selector=check_selector(table["selector"], f"{where}.selector"))
        elif action == "replace":
            if table["field"] not in REPLACEABLE:
                allowed = ", ".join(REPLACEABLE)
                raise RuleError(f"{where}.field: {table['field']!r} cannot be replaced (one of {allowed})")
            replacement = table.get("replacement", "")
            if not isinstance(replacement, str):
                raise RuleError(f"{where}.replacement: expected text")
            rule = replace(rule, field=table["field"], pattern=_re2(table["pattern"], f"{where}.pattern"),
                           replacement=replacement)
        elif action in ("add_category", "set_category"):
            category = table["category"]
            if not isinstance(category, str) or not category.strip():
                raise RuleError(f"{where}.category: expected a category name")
            rule = replace(rule, category=" ".join(category.split()))
        out.append(rule)
    return tuple(out)


def check_selector(value: object, where: str) -> str:
    from cssselect import GenericTranslator, SelectorError

    if not isinstance(value, str) or not value.strip():
        raise RuleError(f"{where}: expected a CSS selector")
    try:
        GenericTranslator().css_to_xpath(value)
    except SelectorError as e:
        raise RuleError(f"{where}: not a CSS selector ({e}): {value!r}") from None
    return value


def selector_problem(value: str) -> str | None:
    """Why `value` is not a CSS selector, or None."""
    try:
        check_selector(value, "selector")
    except RuleError as e:
        return str(e).removeprefix("selector: ")
    return None


def config_problem(settings) -> str | None:
    """The first bad key of the settings' `[[rules]]`, or None. Source names are checked unless
    an OPML file names some (they are known only once it is read)."""
    known = None if any(s.opml is not None for s in settings.sources) else [s.name for s in settings.sources]
    try:
        compile_rules(settings.rules, known)
    except RuleError as e:
        return str(e)
    return None


def _values(entry: Entry, name: str) -> Sequence[str]:
    if name == "title":
        return (entry.title,)
    if name == "content":
        return (entry.content_html,)
    if name == "summary":
        return (entry.summary,)
    if name == "url":
        return (entry.link or "",)
    if name == "author":
        return entry.authors or ("",)
    return entry.categories or ("",)


REWRITES = ("remove", "replace", "add_category", "set_category")
VERDICTS = ("block", "keep")


def apply(rules: Sequence[Rule], entry: Entry) -> Outcome:
    """Run the rules covering the entry's source, in order: what `aggregator rules test` shows.
    The pipeline runs the same rules in two steps, `rewrite` where the entry is parsed and
    `verdict` on the entry as stored."""
    out = Outcome(entry)
    for rule in rules:
        if not rule.covers(entry.source) or not rule.matches(out.entry):
            continue
        out.fired.append(rule.name)
        if rule.action in REWRITES:
            out.entry = _rewrite_one(rule, out.entry)
    out.blocked = verdict(rules, out.entry)
    if out.entry is not entry:
        out.entry = replace(out.entry, features=None)  # dedup's features described the text before
    return out


def rewrites_for(rules: Sequence[Rule], source: str) -> tuple[Rule, ...]:
    """The rewriting rules that cover `source`: what its parser runs on each item (`rewrite`)."""
    return tuple(r for r in rules if r.action in REWRITES and r.covers(source))


def rewrite(rules: Sequence[Rule], entry: Entry) -> Entry:
    """The entry after the rewriting rules (remove, replace, add_category, set_category) that
    cover its source and match it, in order. The parsers call it on the entry as fetched, before
    its content is sanitized, so a `remove` selector still sees classes and ids."""
    before = entry
    for rule in rules:
        if rule.action in REWRITES and rule.covers(entry.source) and rule.matches(entry):
            entry = _rewrite_one(rule, entry)
    if entry is not before and entry.features is not None:
        entry = replace(entry, features=None)  # dedup's features described the text before
    return entry


def verdict(rules: Sequence[Rule], entry: Entry) -> str | None:
    """Why the block and keep rules hide the entry, or None when it is shown. Decided on the
    entry as stored, so changing these rules needs no refetch (`aggregator.hiding`)."""
    for rule in rules:
        if rule.action == "block" and rule.covers(entry.source) and rule.matches(entry):
            return f"blocked by {rule.name}"
    keeps = [r for r in rules if r.action == "keep" and r.covers(entry.source)]
    if keeps and not any(r.matches(entry) for r in keeps):
        return f"not kept by {', '.join(r.name for r in keeps)}"
    return None


def _rewrite_one(rule: Rule, entry: Entry) -> Entry:
    if rule.action == "remove":
        return replace(entry, content_html=remove_elements(entry.content_html, rule.selector or ""))
    if rule.action == "replace":
        name = _ATTRIBUTE[rule.field or "title"]
        return replace(entry, **{name: rule.pattern.sub(rule.replacement, getattr(entry, name))})
    if rule.action == "add_category":
        return replace(entry, categories=tuple(dict.fromkeys((*entry.categories, rule.category))))
    return replace(entry, categories=(rule.category,))  # set_category


def fingerprint(raw: Sequence[Mapping[str, Any]]) -> str:
    """What the block and keep rules of the config are, with their positions (a reason names
    its rule by position): when it changes, every stored entry is judged again."""
    import hashlib
    import json

    chosen = [(i, t) for i, t in enumerate(raw) if isinstance(t, Mapping) and t.get("action") in VERDICTS]
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()


_ATTRIBUTE = {"title": "title", "content": "content_html", "summary": "summary"}


def remove_elements(html: str, selector: str) -> str:
    """`html` without the elements `selector` (CSS) matches; unchanged when nothing matches."""
    if not html.strip():
        return html
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        return html
    found = root.cssselect(selector)
    if not found:
        return html
    for el in found:
        el.drop_tree()  # keeps the text that followed the element (its tail)
    inner = (root.text or "") + "".join(etree.tostring(c, encoding="unicode", method="html") for c in root)
    return inner
