"""`aggregator rules test`, and the dropped feed terms `aggregator categories` lists."""

from __future__ import annotations

import sys

import click


@click.group()
def rules() -> None:
    """Republishing rules ([[rules]] in the config)."""


@rules.command("test")
@click.argument("ref")
@click.pass_obj
def test(obj, ref: str) -> None:
    """Show which rules fire on a stored entry, and the result. REF: the entry's id, uid or link."""
    from .rules import REWRITES, apply, compile_rules

    settings = obj.settings()
    compiled = compile_rules(settings.rules) if settings.rules else ()
    with obj.store(settings) as store:
        found = store.find_entries(ref)
        if not found:
            click.echo(f"no stored entry has the id, uid or link {ref!r}", err=True)
            sys.exit(1)
        subjects = list(store.rule_subjects([i for i, _ in found], with_content=True))
    for s in subjects:
        e = s.entry
        click.echo(f"entry {s.id} of source {e.source}: {e.title}")
        click.echo(f"  link: {e.link or '-'}")
        outcome = apply(compiled, e)
        for rule in compiled:
            if not rule.covers(e.source):
                continue
            fired = rule.name in outcome.fired
            click.echo(f"  {rule.name}: {'fires' if fired else 'does not match'}")
        if not any(r.covers(e.source) for r in compiled):
            click.echo("  no rule applies to this source")
        changed = [
            f for f in ("title", "content_html", "summary", "categories") if getattr(outcome.entry, f) != getattr(e, f)
        ]
        if changed:
            click.echo(f"  rewritten: {', '.join(changed)} (rewrites apply when the entry is fetched)")
        if any(r.action in REWRITES for r in compiled):
            click.echo(f"  categories: {', '.join(outcome.entry.categories) or '-'}")
        click.echo(f"  result: {outcome.blocked or 'shown'}")
        stored = s.hidden or "shown"
        if stored != (outcome.blocked or "shown"):
            click.echo(f"  stored: {stored} (the next update applies the current rules)")


def print_dropped(store) -> None:
    """The feed terms `feed_categories = "map"` dropped, with how many entries carried each."""
    from rich.console import Console
    from rich.table import Table

    from .categorymap import count_dropped

    by_term: dict[str, set[str]] = {}
    rows = []
    for source, terms in store.dropped_terms():
        rows.append(terms)
        for t in terms:
            by_term.setdefault(t, set()).add(source)
    counted = count_dropped(rows)
    if not counted:
        return
    table = Table(
        "dropped feed term",
        "entries",
        "sources",
        box=None,
        title='not published (feed_categories = "map"); map one with [categories] "term" = "Category"',
    )
    for term, n in counted:
        table.add_row(term, str(n), ", ".join(sorted(by_term[term])))
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
