from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from aggregator.store.database import drop_everything

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "articles"


def run_cli(
    config: Path, *args: str, timeout: float = 120, env: dict | None = None, python: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, as an operator would run it; `env`: variables to add;
    `python`: interpreter options (`("-X", "importtime")`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, *python, "-m", "aggregator", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=config.parent,
        env=env,
    )


def write_config(
    folder: Path, body: str = "", *, articles: str = "articles", extra_sources: str = "", url: str | None = None
) -> Path:
    """`url`: the database, when a test needs a given one rather than the pass's (`config_db_url`)."""
    cfg = folder / "config.toml"
    cfg.write_text(
        f'[database]\nurl = "{url or config_db_url()}"\n'
        '[output]\ndir = "out"\nbase_url = "http://feeds.example.org/"\ntitle = "Test"\n'
        f"{body}\n"
        f'[[sources]]\nname = "local"\npath = "{articles}"\n{extra_sources}',
        encoding="utf-8",
    )
    return cfg


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A work folder with a copy of the example articles and a config pointing at it."""
    shutil.copytree(EXAMPLES, tmp_path / "articles")
    write_config(tmp_path, '[categories]\n"Finance" = "金融"')
    return tmp_path


reset_database = drop_everything  # empties a scratch PostgreSQL database (AGG_TEST_PG_URL)


def config_database_url(cfg: Path) -> str:
    """The database URL `cfg` names, resolved as the CLI resolves it (a SQLite path made absolute)."""
    from aggregator.config import load_config

    return load_config(cfg).database.url


def dump_database(url: str) -> list[tuple[str, list[str]]]:
    """Every table of the database at `url` with its rows (as sorted reprs): for checking that
    a run changed no row, on SQLite and PostgreSQL alike."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as c:
            tables = sorted(inspect(c).get_table_names())
            return [(t, sorted(map(repr, c.execute(text(f'SELECT * FROM "{t}"'))))) for t in tables]
    finally:
        engine.dispose()


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 (concurrent fetches reach it at once)."""
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.clear()
    srv.stop()


PG_URL = os.environ.get("AGG_TEST_PG_URL")  # a scratch PostgreSQL database the tests may empty


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file always; PostgreSQL too when AGG_TEST_PG_URL is set."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/agg.sqlite3"
    if not PG_URL:
        pytest.skip("AGG_TEST_PG_URL not set")
    reset_database(PG_URL)
    return PG_URL


# AGG_TEST_DB=postgresql (with AGG_TEST_PG_URL): the configs the tests write (`write_config`)
# name a fresh PostgreSQL schema of that database instead of a SQLite file, so the CLI and
# pipeline tests run on PostgreSQL too (`.ci/run` runs the suite once per database).
TEST_DB = os.environ.get("AGG_TEST_DB", "sqlite")
_SCHEMA_PREFIX = "aggt_"
_schemas = itertools.count()


def config_db_url() -> str:
    """The database URL a test's config names: SQLite beside the config, or a new PostgreSQL schema."""
    if TEST_DB != "postgresql":
        return "sqlite:///db/agg.sqlite3"
    if not PG_URL:
        raise RuntimeError("AGG_TEST_DB=postgresql needs AGG_TEST_PG_URL")
    from sqlalchemy import create_engine

    name = f"{_SCHEMA_PREFIX}{os.getpid()}_{next(_schemas)}"
    engine = create_engine(PG_URL)
    with engine.begin() as c:
        c.exec_driver_sql(f"CREATE SCHEMA {name}")
    engine.dispose()
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{name}"


@pytest.fixture(scope="session", autouse=True)
def _drop_test_schemas():
    """The schemas `config_db_url` made, dropped when the session ends."""
    yield
    if TEST_DB != "postgresql" or not PG_URL:
        return
    from sqlalchemy import create_engine

    engine = create_engine(PG_URL)
    with engine.begin() as c:
        names = c.exec_driver_sql(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{_SCHEMA_PREFIX}{os.getpid()}_%",)
        ).scalars().all()
        for name in names:
            c.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
    engine.dispose()


# Tests left out of the PostgreSQL pass, each with why. These run PostgreSQL themselves in the
# SQLite pass (with AGG_TEST_PG_URL), against the public schema of AGG_TEST_PG_URL rather than
# the config's: on the PostgreSQL pass they would only run again, or compare PostgreSQL with itself.
_COVERS_POSTGRESQL = "covers PostgreSQL in the SQLite pass already (with AGG_TEST_PG_URL)"
NOT_ON_THE_POSTGRESQL_PASS = {
    "tests/test_lease.py::test_the_daemon_on_postgresql_stops_when_its_lease_is_taken": _COVERS_POSTGRESQL,
    "tests/test_migrations.py::test_a_database_made_by_the_last_release_is_upgraded_in_place": (
        "parametrized by backend: both its cases, postgresql included, run in the SQLite pass already"
    ),
    "tests/test_pipeline.py::test_postgresql_publishes_the_same_bytes_as_sqlite": (
        "compares PostgreSQL with SQLite, which the SQLite pass does already"
    ),
}


def pytest_collection_modifyitems(config, items) -> None:
    if TEST_DB != "postgresql":
        return
    for item in items:
        for prefix, reason in NOT_ON_THE_POSTGRESQL_PASS.items():
            if item.nodeid.startswith(prefix):
                item.add_marker(pytest.mark.skip(reason=reason))
