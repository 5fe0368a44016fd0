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
class CliContext:
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

        from .store import SchemaError, Store

        try:
            store = Store(settings.database.url, cache_mb=settings.database.cache_mb)
        except SchemaError as e:
            fail(f"{settings.config_path}: database.url: {e}")
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
    ctx.obj = CliContext(config_path, verbosity)


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
@click.option("--wait", type=float, default=0.0, help="Wait up to this many seconds for another writer to finish.")
@click.pass_obj
def update(obj: CliContext, wait: float) -> None:
    """Ingest every source, then rebuild the feeds that changed."""
    from .pipeline import update as run_update

    settings = obj.settings()
    with (
        obj.store(settings) as store,
        _writer(store, "update", wait),
        _progress(obj.verbosity >= 0) as progress,
        _publishing(),
    ):
        try:
            report = run_update(store, settings, progress)
        except ConfigError as e:  # e.g. an unusable `opml` file
            fail(str(e))
    click.echo(report.summary())


@main.command()
@click.pass_obj
def ingest(obj: CliContext) -> None:
    """Ingest every article folder into the database, without publishing."""
    from .pipeline import ingest as run_ingest

    settings = obj.settings()
    started = time.monotonic()
    with obj.store(settings) as store, _writer(store, "ingest"), _progress(obj.verbosity >= 0) as progress:
        r = run_ingest(store, settings, progress)
        if settings.dedup.enabled:  # clusters belong to the stored state; a later build shows them
            from .dedup import run as run_dedup

            run_dedup(store, settings, r.touched)
    click.echo(
        f"{r.seen} files seen: {r.new} new, {r.updated} updated, {r.unchanged} unchanged, "
        f"{len(r.rejected)} rejected, {r.withdrawn} withdrawn; {time.monotonic() - started:.2f} s"
    )


@main.command()
@click.option("--force", is_flag=True, help="Re-render every feed even if its entries did not change.")
@click.pass_obj
def build(obj: CliContext, force: bool) -> None:
    """Publish the feeds from what is in the database."""
    from .publish import build as run_build

    settings = obj.settings()
    started = time.monotonic()
    with obj.store(settings) as store, _writer(store, "build"), _publishing():
        b = run_build(store, settings, force=force)
    click.echo(f"{b.written} files written for {b.rebuilt} of {b.feeds} feeds; {time.monotonic() - started:.2f} s")


@main.command()
@click.pass_obj
def categories(obj: CliContext) -> None:
    """List categories: name, slug, entries, newest entry, feed paths."""
    from rich.console import Console
    from rich.table import Table

    from .cli_rules import print_dropped
    from .publish.formats import FILENAMES

    settings = obj.settings()
    with obj.store(settings) as store:
        counts = store.category_counts()
        table = Table("name", "slug", "entries", "newest", "feeds", box=None)
        for c in store.categories():
            found = counts.get(c.id)
            n, newest = (found.entries, found.newest) if found else (0, None)
            paths = " ".join(f"{c.slug}/{FILENAMES[f]}" for f in settings.output.formats)
            table.add_row(c.name, c.slug, str(n), newest.strftime("%Y-%m-%d %H:%M") if newest else "-", paths)
        Console(width=200 if not sys.stdout.isatty() else None).print(table)
        print_dropped(store)


# ---- duplicates


@main.command()
@click.pass_obj
def duplicates(obj: CliContext) -> None:
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


EXIT_FAILED = 1


@contextmanager
def _publishing() -> Iterator:
    """An output file that cannot be written (a full disk, say) ends the command with one line
    naming it, not a traceback; the build has recorded nothing, so the next one retries."""
    from .publish.files import PublishError

    try:
        yield
    except PublishError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_FAILED)


# ---- the daemon: the writer lock, `run`, `serve`, `status`

EXIT_LOCKED = 3


@contextmanager
def _writer(store, command: str, wait: float = 0.0) -> Iterator:
    """Hold the database's writer lock, or exit 3 naming the process that holds it."""
    from .lock import LockHeld, writer

    try:
        lock = writer(store, command, wait)
        lock.__enter__()
    except LockHeld as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_LOCKED)
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@main.command()
@click.option("--serve", "serve_too", is_flag=True, help="Also serve the output folder over HTTP.")
@click.option("--host", default=None, help="Address to serve on (default: [serve] host).")
@click.option("--port", type=int, default=None, help="Port to serve on (default: [serve] port).")
@click.option("--json-logs", is_flag=True, help="Log JSON lines instead of text.")
@click.option("--role", type=click.Choice(["all", "fetch", "publish"]), default="all", show_default=True,
              help="fetch or publish: one of several processes sharing a PostgreSQL database (see docs/deployment.md).")
@click.pass_obj
def run(obj: CliContext, serve_too: bool, host: str | None, port: int | None, json_logs: bool, role: str) -> None:
    """Run the daemon: fetch, scan, dedup and publish on schedule until SIGTERM; SIGHUP reloads the config."""
    from .logs import configure_logging
    from .schedule import Daemon

    settings = obj.settings()
    configure_logging(json_logs, obj.verbosity)
    listen = (host or settings.serve.host, settings.serve.port if port is None else port) if serve_too else None
    if role != "all":
        from .cli_workers import run_role

        run_role(obj, settings, role, listen)
    with obj.store(settings) as store, _writer(store, "run"):
        try:
            code = Daemon(settings, store, serve=listen).run()
        except OSError as e:  # e.g. the port is taken
            fail(f"cannot start: {e}")
    sys.exit(code)


@main.command()
@click.pass_obj
def status(obj: CliContext) -> None:
    """Is the daemon running; its last cycle; each source's health; entries per category; database size."""
    from rich.console import Console
    from rich.table import Table

    from .status import status as read_status

    settings = obj.settings()
    with obj.store(settings) as store:
        st = read_status(store)
        alerts = store.alert_state()["open"]
    console = Console(width=200 if not sys.stdout.isatty() else None)
    console.print(f"daemon: {'running, ' + (st.holder or '') if st.running else 'not running'}")
    if settings.alerts.urls or alerts:
        console.print(f"alerts open: {', '.join(alerts) or 'none'}")
    if st.last_cycle:
        c = st.last_cycle
        console.print(
            f"last cycle: {c.get('at')}: {c.get('touched', 0)} entries changed, {c.get('written', 0)} files written "
            f"for {c.get('rebuilt', 0)} of {c.get('feeds', 0)} feeds in {c.get('seconds', 0)} s"
        )
    else:
        console.print("last cycle: none yet")
    size = f"{st.database_bytes / 1e6:.1f} MB" if st.database_bytes is not None else "unknown"
    console.print(f"database: {size}")

    def when(d) -> str:
        return d.strftime("%Y-%m-%d %H:%M") if d else "-"

    table = Table("source", "kind", "entries", "last fetch", "status", "errors", "next due", "last error", box=None)
    for s in st.sources:
        table.add_row(s.name, s.kind, str(s.entries), when(s.last_fetch), str(s.last_status or "-"),
                      str(s.error_count), when(s.next_due), (s.last_error or "")[:60])  # fmt: skip
    console.print(table)
    cats = Table("category", "slug", "entries", box=None)
    for name, slug, n in st.categories:
        cats.add_row(name, slug, str(n))
    console.print(cats)


# ---- remote sources: `fetch`, `sources`, `sources import-opml` / `export-opml`


@main.command()
@click.argument("names", nargs=-1)
@click.pass_obj
def fetch(obj: CliContext, names: tuple[str, ...]) -> None:
    """Fetch remote sources now, ignoring their schedule: the NAMEs given, else every enabled one."""
    from .pipeline import fetch as run_fetch

    settings = obj.settings()
    with obj.store(settings) as store, _writer(store, "fetch"):
        try:
            report = run_fetch(store, settings, list(names) or None)
        except ConfigError as e:
            fail(str(e))
    click.echo(report.summary())


@main.group(invoke_without_command=True)
@click.pass_context
def sources(ctx: click.Context) -> None:
    """Tables of sources: article folders (layout, files taken and skipped, entries) and remote
    feeds (URL, last fetch and status, entries, errors, next fetch, last error)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from .sources.opml import remote_sources
    from .store import now_utc
    from .tables import ago, folder_table

    obj: CliContext = ctx.obj
    settings = obj.settings()
    try:
        configured = remote_sources(settings)
    except ConfigError as e:
        fail(str(e))
    with obj.store(settings) as store:
        rows = {r.name: r for r in store.source_rows()}
        counts = store.entries_per_source()
        found = store.discoveries()
    console = Console(width=250 if not sys.stdout.isatty() else None)
    if settings.file_sources:
        console.print(folder_table(settings, rows, counts))
    if not configured and settings.file_sources:
        return
    now = now_utc()
    columns = ("name", "url", "last fetch", "status", "entries", "errors", "next due", "last error")
    table = Table(*columns, box=None, pad_edge=False)
    for s in configured:
        r = rows.get(s.name)
        if r is None or r.kind != "feed":
            table.add_row(s.name, s.url or "", "never", "-", "0", "0", "now" if s.enabled else "disabled", "")
            continue
        due = "disabled" if r.disabled or not s.enabled else ago(r.next_due, now) if r.next_due else "now"
        url = r.location + (f" (moving to {r.moved_to})" if r.moved_to else "")
        if r.id in found and found[r.id][1] == r.location:
            url = f"{found[r.id][0]} → {url}"  # the page configured, and the feed found on it
        error = r.disabled or r.last_error or (f"ill-formed: {r.feed_flags}" if r.feed_flags else "")
        table.add_row(
            s.name,
            url,
            ago(r.last_fetch, now) if r.last_fetch else "never",
            str(r.last_status) if r.last_status is not None else "-",
            str(counts.get(r.id, 0)),
            str(r.error_count or 0),
            due,
            error[:200],
        )
    console.print(table)


@main.command()
@click.argument("names", nargs=-1)
@click.option("--dry-run", is_flag=True, help="List what each article folder's rules take and skip; read nothing.")
@click.pass_obj
def scan(obj: CliContext, names: tuple[str, ...], dry_run: bool) -> None:
    """Scan article folders: the ones named, else every enabled one (with --dry-run, list every file's fate)."""
    from .pipeline import ingest_files, scan_source
    from .sources.sites import describe

    settings = obj.settings()
    folders = {s.name: s for s in settings.sources if s.path is not None}
    unknown = [n for n in names if n not in folders]
    if unknown:
        fail(f"{settings.config_path}: no article folder named {', '.join(map(repr, unknown))}")
    chosen = [folders[n] for n in names] if names else list(settings.file_sources)
    if dry_run:
        for s in chosen:
            found = scan_source(s, explain=True)
            click.echo(f"{s.name}: {s.path}: {describe(found.site)}")
            for path, what, rule in found.decisions or ():
                click.echo(f"  {what:<8} {path}  ({rule})")
            click.echo(f"  {found.taken()} taken, {found.skipped()} skipped")
        return
    started = time.monotonic()
    with obj.store(settings) as store, _writer(store, "scan"):
        touched: list[int] = []
        for s in chosen:
            r = ingest_files(store, settings, s)
            touched += r.touched
            click.echo(f"{s.name}: {r.seen} files: {r.new} new, {r.updated} updated, {r.unchanged} unchanged, "
                       f"{r.held} held back, {len(r.rejected)} rejected, {r.withdrawn} withdrawn")
        if settings.dedup.enabled:
            from .dedup import run as run_dedup

            run_dedup(store, settings, touched)
    click.echo(f"{len(chosen)} folders scanned; {time.monotonic() - started:.2f} s")


@sources.command("import-opml")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.pass_obj
def import_opml(obj: CliContext, file: str) -> None:
    """Append the feeds of an OPML FILE to the config as [[sources]] (folders become categories)."""
    import os
    from pathlib import Path

    from .sources.opml import OpmlError, private_warnings, read_opml_file, toml_blocks

    settings = obj.settings()
    try:
        subs = read_opml_file(Path(file))
    except OpmlError as e:
        fail(f"{file}: {e}")
    for warning in private_warnings(subs, settings.fetch.allow_private):
        click.echo(f"warning: {warning}", err=True)
    try:
        text, added, skipped = toml_blocks(subs, settings)
    except ConfigError as e:
        fail(str(e))
    if added:
        path = settings.config_path
        old = path.read_text(encoding="utf-8")
        tmp = path.with_name(f".{path.name}.import")
        tmp.write_text(old + ("" if old.endswith("\n") else "\n") + "\n" + text, encoding="utf-8")
        try:
            load_config(tmp)  # never leave a config behind that does not load
        except ConfigError as e:
            tmp.unlink()
            fail(f"{file}: the imported sources would make the config invalid: {e}")
        os.replace(tmp, path)
    click.echo(f"{added} sources added to {settings.config_path}, {skipped} already subscribed or without a URL")


@sources.command("export-opml")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), help="Write here instead of stdout.")
@click.pass_obj
def export_opml(obj: CliContext, output: str | None) -> None:
    """Write every remote source as OPML (folder = first category)."""
    from .sources.opml import remote_sources, subscriptions, write_opml

    settings = obj.settings()
    try:
        data = write_opml(subscriptions(remote_sources(settings)), settings.output.title)
    except ConfigError as e:
        fail(str(e))
    if output:
        with open(output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)


# Registered last: the `db` commands use this module's helpers; `serve` and `discover` live in
# their own module so this one stays readable.
from .cli_db import db  # noqa: E402
from .cli_ops import discover, serve  # noqa: E402
from .cli_rules import rules  # noqa: E402

main.add_command(db)
main.add_command(serve)
main.add_command(discover)
main.add_command(rules)

