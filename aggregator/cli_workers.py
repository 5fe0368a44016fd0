"""`aggregator run --role fetch|publish` (`roles`) and `aggregator db copy --to URL`."""

from __future__ import annotations

import sys
import time

import click

from .cli import CliContext, _first_line, fail


def run_role(obj: CliContext, settings, role: str, listen: tuple[str, int] | None) -> None:
    """Run one role of a multi-process deployment until SIGTERM; exit 2 when the database cannot host it."""
    from .roles import FetchWorker, Publisher, refusal
    from .store import backend

    why = refusal(role, backend(settings.database.url))
    if why:
        fail(f"{settings.config_path}: database.url: {why}")
    with obj.store(settings) as store:
        try:
            if role == "fetch":
                code = FetchWorker(settings, store).run()
            else:
                code = Publisher(settings, store, serve=listen).run()
        except OSError as e:  # e.g. the port is taken
            fail(f"cannot start: {e}")
    sys.exit(code)


@click.command("copy")
@click.option("--to", "target", required=True, metavar="URL", help="Database URL to copy into (empty, or new).")
@click.pass_obj
def db_copy(obj: CliContext, target: str) -> None:
    """Copy this config's database into another one (e.g. SQLite to PostgreSQL), every row kept."""
    from sqlalchemy.exc import SQLAlchemyError

    from .store import SchemaError
    from .store.copying import TargetNotEmpty, copy_database

    settings = obj.settings()
    started = time.monotonic()
    try:
        counts = copy_database(settings.database.url, target)
    except (SchemaError, TargetNotEmpty) as e:
        fail(str(e))
    except (SQLAlchemyError, OSError) as e:
        fail(f"cannot copy the database: {e.__class__.__name__}: {_first_line(e)}")
    rows = sum(counts.values())
    click.echo(f"copied {rows} rows in {len(counts)} tables in {time.monotonic() - started:.2f} s")
