"""Schema migrations: `db upgrade` on an empty database gives the schema the models describe,
and a database made by the last release before numbered migrations (`v0.1.0`) is upgraded in
place with every row kept and the same bytes published (SQLite; PostgreSQL too with
AGG_TEST_PG_URL)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, reset_database, run_cli, write_config
from sqlalchemy import create_engine, inspect, text

from aggregator import __version__
from aggregator.store import SchemaError, Store, database
from aggregator.store.schema import SCHEMA_REVISION

PG_URL = os.environ.get("AGG_TEST_PG_URL")
TAG = "v0.1.0"


def schema(url: str) -> dict:
    """Every table's columns (type, nullability), primary key, unique constraints and indexes."""
    engine = create_engine(url)
    try:
        i = inspect(engine)
        out = {}
        for t in sorted(i.get_table_names()):
            out[t] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in i.get_columns(t)],
                "pk": i.get_pk_constraint(t)["constrained_columns"],
                "unique": sorted(tuple(u["column_names"]) for u in i.get_unique_constraints(t)),
                "indexes": sorted((x["name"], tuple(x["column_names"]), bool(x["unique"])) for x in i.get_indexes(t)),
                "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"]) for f in i.get_foreign_keys(t)),
            }
        return out
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.sqlite3'}", f"sqlite:///{tmp_path / 'b.sqlite3'}"
        return
    if not PG_URL:
        pytest.skip("AGG_TEST_PG_URL not set")
    # Two databases in one server: the scratch one and a second made beside it.
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text("DROP DATABASE IF EXISTS agg_migrations_b"))
        c.execute(text("CREATE DATABASE agg_migrations_b"))
    reset_database(PG_URL)
    other = PG_URL.rsplit("/", 1)[0] + "/agg_migrations_b"
    yield PG_URL, other
    with admin.connect() as c:
        c.execute(text("DROP DATABASE IF EXISTS agg_migrations_b WITH (FORCE)"))
    admin.dispose()
    reset_database(PG_URL)


def test_a_migrated_database_and_a_new_one_have_one_schema(two_urls):
    migrated, made = two_urls
    assert database.upgrade(migrated) == (None, SCHEMA_REVISION)
    assert database.upgrade(migrated) == (SCHEMA_REVISION, SCHEMA_REVISION)  # nothing left to do
    Store(made).close()
    assert database.current(made) == (SCHEMA_REVISION, True)
    assert schema(migrated) == schema(made)


def test_an_older_revision_is_refused_naming_the_upgrade(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    Store(url).close()
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    with pytest.raises(SchemaError, match="aggregator db upgrade"):
        Store(url)


# ------------------------------------------------------------------ upgrading a v0.1.0 database


def _old_release(tmp_path: Path) -> Path:
    """The source of v0.1.0, from `git archive` (it runs on this venv's packages)."""
    tag = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{TAG}^{{commit}}"],
                         capture_output=True, text=True)  # fmt: skip
    if tag.returncode != 0:
        pytest.skip(f"no git tag {TAG} in this checkout")
    src = tmp_path / "v0.1.0"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", TAG], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    return src


def _run(code: Path, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(code)}
    return subprocess.run([sys.executable, "-m", "aggregator", "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=300, cwd=cfg.parent, env=env)  # fmt: skip


def _rows(url: str) -> dict[str, list]:
    """Every row of every table (but the key index, whose merges may move keys between its tables)."""
    engine = create_engine(url)
    try:
        out = {}
        with engine.connect() as c:
            for t in inspect(c).get_table_names():
                if t.startswith("dedup_keys_") or t in ("key_levels", "alembic_version"):
                    continue
                out[t] = sorted(map(tuple, c.execute(text(f"SELECT * FROM {t}"))), key=repr)
        return out
    finally:
        engine.dispose()


def _files(out: Path) -> dict[str, bytes]:
    """The output's files, the generator's version written as a placeholder."""
    return {
        str(p.relative_to(out)): p.read_bytes().replace(b"0.1.0", b"<V>").replace(__version__.encode(), b"<V>")
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_made_by_the_last_release_is_upgraded_in_place(tmp_path: Path, backend: str):
    """v0.1.0 builds a corpus with a copy (a cluster), a deleted file (a withdrawn entry), a
    tombstone and a remote source's fetch state; `db upgrade` keeps every row, and the current
    code publishes the same bytes from it, `build --force` included."""
    if backend == "postgresql" and not PG_URL:
        pytest.skip("AGG_TEST_PG_URL not set")
    old = _old_release(tmp_path)
    work = tmp_path / "work"
    shutil.copytree(EXAMPLES, work / "articles")
    first = sorted((work / "articles").iterdir())[0]
    shutil.copy(first, work / "articles" / f"copy-{first.name}")  # byte-identical: one cluster
    cfg = write_config(work, '[categories]\n"Finance" = "金融"')
    url = f"sqlite:///{work / 'db' / 'agg.sqlite3'}"
    if backend == "postgresql":
        reset_database(PG_URL)
        url = PG_URL
        cfg.write_text(cfg.read_text(encoding="utf-8").replace("sqlite:///db/agg.sqlite3", url), encoding="utf-8")
    assert _run(old, cfg, "update").returncode == 0
    sorted((work / "articles").iterdir())[3].unlink()
    r = _run(old, cfg, "update")
    assert r.returncode == 0, r.stderr
    engine = create_engine(url)
    with engine.begin() as c:  # what a remote source and retention leave behind
        c.execute(text("INSERT INTO sources (name, kind, location, etag, last_modified, error_count, moved_count, "
                       "identity, config_url, next_due) VALUES ('wire', 'feed', 'http://w.example/f.xml', '\"e1\"', "
                       "'Mon, 05 Sep 2022 01:00:00 GMT', 2, 0, 'guid', 'http://w.example/f.xml', "
                       "'2031-01-01 00:00:00')"))  # fmt: skip
        sid = c.execute(text("SELECT id FROM sources WHERE name = 'wire'")).scalar()
        c.execute(text("INSERT INTO tombstones (source_id, key, uid, fingerprint, pruned_at) VALUES "
                       f"({sid}, 'guid:gone', 'u-gone', 42, '2022-09-01 00:00:00')"))  # fmt: skip
    engine.dispose()
    before = _rows(url)
    assert any(r for r in before["entries"] if r)  # entries, a withdrawn one and a duplicate among them
    published = _files(work / "out")

    refused = run_cli(cfg, "update")
    assert refused.returncode == 2 and "aggregator db upgrade" in refused.stderr
    assert "Traceback" not in refused.stderr
    r = run_cli(cfg, "db", "upgrade")
    assert r.returncode == 0 and SCHEMA_REVISION in r.stdout, r.stderr
    after = _rows(url)
    # Columns added since (at the end of their table) are left out: every old value is kept.
    width = {t: len(rows[0]) for t, rows in before.items() if rows}
    kept = {t: sorted((r[: width.get(t)] for r in rows), key=repr) for t, rows in after.items() if t in before}
    assert kept == before
    assert {r[width["sources"]:] for r in after["sources"]} == {(None, None)}  # the lease, empty
    assert run_cli(cfg, "db", "current").stdout.strip() == f"{SCHEMA_REVISION} (head)"

    r = run_cli(cfg, "update")
    assert r.returncode == 0, r.stderr
    assert _files(work / "out") == published
    r = run_cli(cfg, "build", "--force")
    assert r.returncode == 0, r.stderr
    assert _files(work / "out") == published
    store = Store(url)
    try:
        wire = next(s for s in store.source_rows() if s.name == "wire")
        assert (wire.etag, wire.error_count, wire.next_due.year) == ('"e1"', 2, 2031)
        assert any(c.members for c in store.clusters())
    finally:
        store.close()
    if backend == "postgresql":
        reset_database(PG_URL)


def test_the_models_describe_the_last_migration():
    """`SCHEMA_REVISION` (what a new database is stamped with) is Alembic's head."""
    from alembic.script import ScriptDirectory

    from aggregator.store.database import MIGRATIONS

    assert ScriptDirectory(str(MIGRATIONS)).get_heads() == [SCHEMA_REVISION]


@pytest.mark.skipif(not PG_URL, reason="AGG_TEST_PG_URL not set")
def test_a_schema_created_by_another_process_while_opening_is_not_taken_for_a_0_1_one():
    # Workers started together on a fresh database: one creates the schema while another looks.
    # The looker must not see the tables but not yet the revision, and refuse the database as
    # made by 0.1. The creator's commit is placed right after the looker's first read.
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    reset_database(PG_URL)
    other = create_engine(PG_URL)
    creator = other.connect()
    tx = creator.begin()
    creator.exec_driver_sql(f"SELECT pg_advisory_xact_lock({database._SCHEMA_LOCK})")
    database.create_schema(creator)
    database._stamp(creator, SCHEMA_REVISION)
    reads = []

    def commit_after_first_read(conn, cursor, statement, params, context, executemany):
        if conn.engine is not other and tx.is_active:
            reads.append(statement)
            if len(reads) > 1:
                tx.commit()

    event.listen(Engine, "before_cursor_execute", commit_after_first_read)
    try:
        Store(PG_URL).close()
    finally:
        event.remove(Engine, "before_cursor_execute", commit_after_first_read)
        creator.close()
        other.dispose()
    assert len(reads) >= 2
    assert database.current(PG_URL) == (SCHEMA_REVISION, True)
