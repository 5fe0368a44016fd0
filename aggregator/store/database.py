"""Opening a database: the engine, the SQLite pragmas, and which schema revision it is at.

The one place for dialect-specific statements besides the dedup key index's bulk reads.
A database is only used at the revision its tables describe (`schema.SCHEMA_REVISION`):
an empty one is created at it; an older one (made by an earlier version, before numbered
migrations or at an earlier migration) is refused with a message naming `aggregator db
upgrade`, which runs the Alembic migrations in `migrations/`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine, make_url

from .schema import SCHEMA_REVISION, create_schema

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"  # Alembic's own bookkeeping: one row, the revision
UPGRADE_HINT = "run `aggregator db upgrade` first"
# PostgreSQL advisory lock key for creating or upgrading the schema: workers starting together
# on an empty database must not both create it.
_SCHEMA_LOCK = 0x61676772  # "aggr"


class SchemaError(Exception):
    """The database is not at the schema this version uses; the message says what to do."""


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for a server database or an in-memory one."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


# SQLite's page cache per connection, MB, when the caller names none (the config's default is
# `[database] cache_mb`).
DEFAULT_CACHE_MB = 32


def engine_for(url: str, cache_mb: int = DEFAULT_CACHE_MB) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine, cache_mb)
    return engine


def _sqlite_pragmas(engine: Engine, cache_mb: int) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # `cache_mb` of page cache instead of SQLite's 2 MB default: the entry and LSH indexes are
        # random-keyed B-trees, and a cold ingest otherwise re-reads their pages constantly.
        cur.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()


def insert_ignoring_conflicts(c: Connection, table):
    """`INSERT … ON CONFLICT DO NOTHING` in the connection's dialect: concurrent writers (the
    daemon's fetch jobs, fetch workers on other machines) may create the same row at once, and
    the loser must find the winner's row rather than fail its transaction."""
    if c.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def move_sequences(c: Connection, tables) -> None:
    """After rows were inserted with their ids (`copying`): on PostgreSQL, move each table's id
    sequence past the largest id, so the next insert does not collide. SQLite needs nothing."""
    if c.dialect.name != "postgresql":
        return
    for t in tables:
        key = list(t.primary_key.columns)
        if len(key) != 1 or not key[0].autoincrement or key[0].type.python_type is not int:
            continue
        seq = c.exec_driver_sql("SELECT pg_get_serial_sequence(%s, %s)", (t.name, key[0].name)).scalar()
        if seq:
            c.exec_driver_sql(
                f'SELECT setval(%s, COALESCE((SELECT max("{key[0].name}") FROM "{t.name}"), 0) + 1, false)', (seq,)
            )


def revision(c: Connection) -> str | None:
    """The schema revision stored in the database; None when it has none."""
    if not inspect(c).has_table(VERSION_TABLE):
        return None
    return c.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar()


def _is_empty(c: Connection) -> bool:
    return not inspect(c).has_table("sources") and not inspect(c).has_table(VERSION_TABLE)


def _lock_schema(c: Connection) -> None:
    if c.dialect.name == "postgresql":
        c.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")


def ensure_schema(engine: Engine, database: str) -> None:
    """Create the schema in an empty database; refuse one at another revision (SchemaError)."""
    with engine.connect() as c:
        if revision(c) == SCHEMA_REVISION:
            return
    # Looked at again under the lock: another process may be creating the schema right now, and
    # reads outside the lock could see its tables but not yet its revision (a fresh database
    # mistaken for one made by 0.1).
    with engine.begin() as c:
        _lock_schema(c)
        found = revision(c)
        if found is None and _is_empty(c):
            create_schema(c)
            _stamp(c, SCHEMA_REVISION)
            return
    if found == SCHEMA_REVISION:
        return  # another process created it meanwhile
    if found is None:
        raise SchemaError(
            f"{database}: the database was made by aggregator 0.1 (before numbered schema migrations); "
            f"{UPGRADE_HINT} (back it up before, as for any upgrade)"
        )
    raise SchemaError(
        f"{database}: the database is at schema revision {found}, this version uses {SCHEMA_REVISION}; "
        + (UPGRADE_HINT if found < SCHEMA_REVISION else "it was upgraded by a newer version of aggregator")
    )


def _stamp(c: Connection, rev: str) -> None:
    """Record the revision as Alembic does (its table, one row), without importing Alembic:
    a fresh database made from the tables is at the head revision."""
    c.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    c.exec_driver_sql(f"DELETE FROM {VERSION_TABLE}")
    c.exec_driver_sql(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{rev}')")


def _alembic_config(c: Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = c
    return cfg


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the database to the head revision with the Alembic migrations; (before, after)."""
    from alembic import command

    engine = engine_for(url)
    try:
        with engine.begin() as c:
            _lock_schema(c)
            before = revision(c)
            if before != SCHEMA_REVISION:
                command.upgrade(_alembic_config(c), "head")
            return before, revision(c) or ""
    finally:
        engine.dispose()


def current(url: str) -> tuple[str | None, bool]:
    """(revision, whether the database holds any table at all)."""
    engine = engine_for(url)
    try:
        with engine.connect() as c:
            return revision(c), not _is_empty(c)
    finally:
        engine.dispose()


def drop_everything(url: str) -> None:
    """Empty a scratch PostgreSQL database: schema public is dropped with every table in it,
    Alembic's bookkeeping included, and made anew. For the tests and benchmarks, which are
    each given a database to throw away; nothing in the application calls it."""
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            c.exec_driver_sql("DROP SCHEMA public CASCADE")
            c.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()


def database_size(engine: Engine) -> int | None:
    """Bytes the database occupies: the file (with its WAL) for SQLite, pg_database_size otherwise."""
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        if not db or db == ":memory:":
            return None
        return sum(Path(db + suffix).stat().st_size for suffix in ("", "-wal") if Path(db + suffix).exists())
    if engine.dialect.name == "postgresql":
        with engine.connect() as c:
            return c.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
    return None


def upkeep(engine: Engine) -> None:
    """Periodic maintenance, per dialect: SQLite refreshes its planner statistics (freed pages
    are reused, so the file stops growing once retention keeps the row count steady);
    PostgreSQL's autovacuum already does the equivalent."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as c:
            c.exec_driver_sql("PRAGMA optimize")


def answers(engine: Engine) -> bool:
    """Does the database answer `SELECT 1`? (/healthz asks; an error is the answer "no".)"""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
