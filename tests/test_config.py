"""config.toml validation: every mistake names the file and the key; the CLI exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from aggregator.config import ConfigError, load_config, parse_interval


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "articles").mkdir(exist_ok=True)
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_and_relative_paths(tmp_path: Path):
    cfg = load_config(write(tmp_path, '[[sources]]\nname = "a"\npath = "articles"\n'))
    assert cfg.output.max_items == 50
    assert cfg.output.formats == ["atom", "rss"]
    assert cfg.output.dir == tmp_path.resolve() / "feeds"
    assert cfg.database.url == f"sqlite:///{tmp_path.resolve()}/db/aggregator.sqlite3"
    assert cfg.sources[0].path == tmp_path.resolve() / "articles"
    assert cfg.sources[0].timezone == "Asia/Shanghai"
    assert cfg.file_sources == (cfg.sources[0],)


def test_base_url_gets_a_trailing_slash_and_aliases_apply(tmp_path: Path):
    cfg = load_config(write(tmp_path, '[output]\nbase_url = "https://x.org/feeds"\n[categories]\n"Fin" = "金融"\n'))
    assert cfg.output.base_url == "https://x.org/feeds/"
    assert cfg.canonical_category("Fin") == "金融"
    assert cfg.canonical_category(" Other  name ") == "Other name"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[output]\nmax_items = "many"\n', "output.max_items"),
        ("[output]\nmax_items = 0\n", "output.max_items"),
        ('[output]\nformats = ["atom", "pdf"]\n', "output.formats"),
        ('[output]\nbase_url = "feeds.example.org"\n', "output.base_url"),
        ('[output]\ncolour = "blue"\n', "output.colour"),
        ('[databse]\nurl = "sqlite://"\n', "databse"),
        ("[database]\ncache_mb = 0\n", "database.cache_mb"),
        ('[[sources]]\nname = "a"\npath = "articles"\ntimezone = "Mars/Olympus"\n', "sources[0].timezone"),
        ('[[sources]]\nname = "a"\n', "sources[0]"),
        ('[[sources]]\nname = "a"\npath = "nowhere"\n', "sources[0].path"),
        ('[[sources]]\nname = "a"\npath = "articles"\n[[sources]]\nname = "a"\npath = "articles"\n', "two sources"),
        ('[[sources]]\nname = "a"\npath = "articles"\ncategories = "x"\n', "sources[0].categories"),
        ('[fetch]\nevery = "soon"\n', "fetch.every"),
        ("[output\n", "not valid TOML"),
        ('[dedup]\nsource_priority = ["nope"]\n[[sources]]\nname = "a"\npath = "articles"\n', "source_priority"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and key in str(e.value)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(("value", "seconds"), [("30m", 1800), ("2h", 7200), ("1d", 86400), ("45s", 45), (90, 90)])
def test_intervals(value, seconds):
    assert parse_interval(value) == seconds


@pytest.mark.parametrize("value", ["0", "-5m", "soon", True])
def test_bad_intervals(value):
    with pytest.raises(ValueError):
        parse_interval(value)


def test_cli_exits_2_naming_the_key(tmp_path: Path):
    path = write(tmp_path, '[database]\nurl = "sqlite:///x.db"\n[output]\ndir = "out"\nmax_items = "many"\n')
    r = run_cli(path, "update")
    assert r.returncode == 2
    assert "max_items" in r.stderr and str(path) in r.stderr


def test_cli_exits_2_when_the_database_is_unreachable(tmp_path: Path):
    (tmp_path / "db").write_text("a file where a folder should be", encoding="utf-8")
    path = write(tmp_path, '[database]\nurl = "sqlite:///db/agg.sqlite3"\n')
    r = run_cli(path, "update")
    assert r.returncode == 2
    assert "database.url" in r.stderr


def test_cli_exits_2_without_a_config(tmp_path: Path):
    r = run_cli(tmp_path / "absent.toml", "build")
    assert r.returncode == 2 and "not found" in r.stderr


def test_database_cache_mb_sizes_the_cli_store_page_cache(tmp_path: Path):
    from sqlalchemy import text

    from aggregator.cli import CliContext

    path = write(tmp_path, '[database]\nurl = "sqlite:///db/a.sqlite3"\ncache_mb = 128\n')
    ctx = CliContext(str(path), 0)
    with ctx.store(ctx.settings()) as store, store.engine.connect() as c:
        assert c.execute(text("PRAGMA cache_size")).scalar() == -128 * 1024


def test_the_config_and_the_store_default_to_one_page_cache_size():
    # The config cannot import the store (SQLAlchemy) to share the constant: this keeps them together.
    from aggregator.config import DatabaseSettings
    from aggregator.store import database

    assert DatabaseSettings().cache_mb == database.DEFAULT_CACHE_MB
