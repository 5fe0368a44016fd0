"""`aggregator db copy --to URL`: a database moved (SQLite to PostgreSQL, or to another SQLite
file) keeps every row, and publishes the same bytes from its new home."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from sqlalchemy import create_engine, select

from aggregator.config import load_config
from aggregator.store.schema import metadata
from tests.test_pipeline import digest


def _rows(url: str) -> dict[str, list]:
    """Every row of every table, read through the models' column types (each backend stores
    datetimes its own way)."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return {
                t.name: sorted(map(tuple, c.execute(select(t))), key=repr)
                for t in metadata.sorted_tables
                if t.name != "daemon_state"
            }
    finally:
        engine.dispose()


def test_a_database_copied_elsewhere_keeps_its_rows_and_publishes_the_same(site: Path, tmp_path: Path, db_url: str):
    if db_url.startswith("sqlite"):  # the site's own database may be at that path: another file
        db_url = f"sqlite:///{tmp_path}/moved/db/copy.sqlite3"
    cfg = site / "config.toml"
    site_url = load_config(cfg).database.url  # SQLite, or a PostgreSQL schema with AGG_TEST_DB=postgresql
    if site_url == db_url:
        pytest.skip("the site's database is the target")
    # A duplicate makes a cluster: an entry that refers to another (copied in a second pass).
    shutil.copy(site / "articles" / next(p.name for p in (site / "articles").iterdir() if p.suffix == ".md"),
                site / "articles" / "zz-copy.md")  # fmt: skip
    assert run_cli(cfg, "update").returncode == 0
    before = _rows(site_url)
    assert before["entries"] and before["categories"]

    r = run_cli(cfg, "db", "copy", "--to", db_url)
    assert r.returncode == 0, r.stderr
    assert "copied" in r.stdout
    assert _rows(db_url) == before

    moved = tmp_path / "moved"
    shutil.copytree(site / "articles", moved / "articles")
    text_cfg = re.sub(r'url = "[^"]*"', f'url = "{db_url}"', cfg.read_text(encoding="utf-8"), count=1)
    (moved / "config.toml").write_text(text_cfg, encoding="utf-8")
    r = run_cli(moved / "config.toml", "build", "--force")
    assert r.returncode == 0, r.stderr
    assert {k: v[0] for k, v in digest(moved / "out").items()} == {k: v[0] for k, v in digest(site / "out").items()}
    # The ids went along, and new rows get new ones (PostgreSQL's sequences were moved past them).
    (moved / "articles" / "new-after-copy.md").write_text("---\ntitle: After the copy\n---\nfresh\n", "utf-8")
    r = run_cli(moved / "config.toml", "update")
    assert r.returncode == 0 and "1 new" in r.stdout, r.stderr

    again = run_cli(cfg, "db", "copy", "--to", db_url)  # the target now holds sources: refused
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
