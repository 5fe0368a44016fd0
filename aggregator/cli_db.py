"""`aggregator db upgrade` and `aggregator db current`: the database's schema revision."""

from __future__ import annotations

import time

import click

from .cli import CliContext, _first_line, fail


@click.group()
def db() -> None:
    """The database's schema: `db upgrade` after installing a new version, `db current` to see it."""


def _database_url(obj: CliContext) -> tuple:
    settings = obj.settings()
    return settings, settings.database.url


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: CliContext) -> None:
    """Bring the database's schema to this version (Alembic migrations; rows are kept)."""
    from sqlalchemy.exc import SQLAlchemyError

    from .store import database

    settings, url = _database_url(obj)
    started = time.monotonic()
    try:
        before, after = database.upgrade(url)
    except (SQLAlchemyError, OSError) as e:
        reason = f"{e.__class__.__name__}: {_first_line(e)}"
        fail(f"{settings.config_path}: database.url: cannot upgrade the database: {reason}")
    seconds = time.monotonic() - started
    if before == after:
        click.echo(f"database already at revision {after} (the latest); nothing to do")
    else:
        click.echo(f"database upgraded from revision {before or 'none (aggregator 0.1)'} to {after}; {seconds:.2f} s")


@db.command("current")
@click.pass_obj
def db_current(obj: CliContext) -> None:
    """Print the database's schema revision, and whether it is the one this version uses."""
    from sqlalchemy.exc import SQLAlchemyError

    from .store import database
    from .store.schema import SCHEMA_REVISION

    settings, url = _database_url(obj)
    try:
        found, has_tables = database.current(url)
    except (SQLAlchemyError, OSError) as e:
        reason = f"{e.__class__.__name__}: {_first_line(e)}"
        fail(f"{settings.config_path}: database.url: cannot open the database: {reason}")
    if found == SCHEMA_REVISION:
        click.echo(f"{found} (head)")
    elif found is None and not has_tables:
        click.echo(f"none: an empty database (head is {SCHEMA_REVISION}; any command creates it)")
    elif found is None:
        click.echo(f"none: made by aggregator 0.1 (head is {SCHEMA_REVISION}; run `aggregator db upgrade`)")
    else:
        click.echo(f"{found} (head is {SCHEMA_REVISION}; run `aggregator db upgrade`)")


from .cli_workers import db_copy  # noqa: E402  (registered here, with the other `db` commands)

db.add_command(db_copy)
