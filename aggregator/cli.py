"""The `aggregator` command: parse arguments, load the config, call a pipeline stage, print a summary."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import click

from . import __version__
from .config import DEFAULT_CONFIG, ConfigError, Settings, load_config

EXIT_CONFIG = 2


@dataclass
class Context:
    config_path: str
    verbosity: int

    def settings(self) -> Settings:
        try:
            return load_config(self.config_path)
        except ConfigError as e:
            fail(str(e))

    @contextmanager
    def store(self, settings: Settings) -> Iterator:
        from sqlalchemy.exc import SQLAlchemyError

        from .store import Store

        try:
            store = Store(settings.database.url)
        except (SQLAlchemyError, OSError) as e:
            reason = f"{e.__class__.__name__}: {_first_line(e)}"
            fail(f"{settings.config_path}: database.url: cannot open the database: {reason}")
        try:
            yield store
        finally:
            store.close()


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_CONFIG)


def _setup_logging(verbosity: int) -> None:
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", "config_path", default=DEFAULT_CONFIG, show_default=True, help="Config file.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary line.")
@click.version_option(__version__, prog_name="aggregator")
@click.pass_context
def main(ctx: click.Context, config_path: str, verbose: int, quiet: bool) -> None:
    """Ingest article files and feeds, deduplicate, and publish per-category Atom and RSS feeds."""
    verbosity = -1 if quiet else verbose
    _setup_logging(verbosity)
    ctx.obj = Context(config_path, verbosity)


@contextmanager
def _progress(enabled: bool) -> Iterator:
    """A progress bar on an interactive terminal; nothing in CI or logs."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("ingesting", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@main.command()
@click.pass_obj
def update(obj: Context) -> None:
    """Ingest every source, then rebuild the feeds that changed."""
    from .pipeline import update as run_update

    settings = obj.settings()
    with obj.store(settings) as store, _progress(obj.verbosity >= 0) as progress:
        report = run_update(store, settings, progress)
    click.echo(report.summary())


@main.command()
@click.pass_obj
def ingest(obj: Context) -> None:
    """Ingest every article folder into the database, without publishing."""
    from .pipeline import ingest as run_ingest

    settings = obj.settings()
    started = time.monotonic()
    with obj.store(settings) as store, _progress(obj.verbosity >= 0) as progress:
        r = run_ingest(store, settings, progress)
    click.echo(
        f"{r.seen} files seen: {r.new} new, {r.updated} updated, {r.unchanged} unchanged, "
        f"{len(r.rejected)} rejected, {r.withdrawn} withdrawn; {time.monotonic() - started:.2f} s"
    )


@main.command()
@click.option("--force", is_flag=True, help="Re-render every feed even if its entries did not change.")
@click.pass_obj
def build(obj: Context, force: bool) -> None:
    """Publish the feeds from what is in the database."""
    from .publish import build as run_build

    settings = obj.settings()
    started = time.monotonic()
    with obj.store(settings) as store:
        b = run_build(store, settings, force=force)
    click.echo(f"{b.written} files written for {b.rebuilt} of {b.feeds} feeds; {time.monotonic() - started:.2f} s")


@main.command()
@click.pass_obj
def categories(obj: Context) -> None:
    """List categories: name, slug, entries, newest entry, feed paths."""
    from rich.console import Console
    from rich.table import Table

    from .publish.feeds import FILENAMES

    settings = obj.settings()
    with obj.store(settings) as store:
        counts = store.category_counts()
        table = Table("name", "slug", "entries", "newest", "feeds", box=None)
        for c in store.categories():
            n, newest = counts.get(c.id, (0, None))
            paths = " ".join(f"{c.slug}/{FILENAMES[f]}" for f in settings.output.formats)
            table.add_row(c.name, c.slug, str(n), newest.strftime("%Y-%m-%d %H:%M") if newest else "-", paths)
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


# ---- dedup


@main.command()
@click.pass_obj
def duplicates(obj: Context) -> None:
    """List duplicate clusters: the entry shown, then each member with its source and reason."""
    from .dedup import clusters

    settings = obj.settings()
    with obj.store(settings) as store:
        found = clusters(store)
    for cluster in found:
        head = cluster.canonical
        click.echo(f"{head.title}\n  {'shown':<10} {head.source}: {head.key}")
        for m in cluster.members:
            click.echo(f"  {m.describe()}")
    n = sum(len(c.members) for c in found)
    click.echo(f"{len(found)} clusters, {n} duplicates hidden")
