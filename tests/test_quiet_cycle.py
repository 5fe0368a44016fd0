"""A cycle that finds nothing new does not build (`publish.still_published`), and everything that
changes what is published makes the next cycle build again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from sqlalchemy import select, update

from aggregator.config import load_config
from aggregator.pipeline import update as run_update
from aggregator.publish import stamp
from aggregator.store import Store
from aggregator.store.schema import ENTRIES


def titles(out: Path) -> set[str]:
    return {e.title for e in feedparser.parse((out / "all" / "atom.xml").read_bytes()).entries}


def retitle_behind_the_pipelines_back(store: Store, old: str, new: str) -> None:
    # A direct write that clears no stamp (a new version, so a build would see it changed).
    with store.engine.begin() as c:
        c.execute(update(ENTRIES).where(ENTRIES.c.title == old).values(title=new, version="retitled"))


@pytest.fixture
def published(site: Path):
    """(settings, store) of the example site, after a first update published it."""
    settings = load_config(site / "config.toml")
    store = Store(settings.database.url)
    try:
        run_update(store, settings)
        yield settings, store
    finally:
        store.close()


def test_a_quiet_update_skips_the_build_until_something_clears_the_stamp(site: Path, published):
    settings, store = published
    out = site / "out"
    assert store.published_stamp() == stamp(settings)
    before = titles(out)
    retitle_behind_the_pipelines_back(store, "多家银行下调存款利率", "Retitled")
    quiet = run_update(store, settings)
    assert titles(out) == before  # skipped: the build would have published the new title
    assert quiet.build.feeds > 0 and quiet.build.written == 0
    store.set_published_stamp(None)  # as a build that did not finish leaves it
    run_update(store, settings)
    assert "Retitled" in titles(out) and "多家银行下调存款利率" not in titles(out)


def test_pruned_entries_leave_the_feeds_at_the_next_quiet_update(site: Path, published):
    settings, store = published
    with store.engine.connect() as c:
        victim = c.execute(select(ENTRIES.c.id).where(ENTRIES.c.title == "多家银行下调存款利率")).scalar_one()
    store.remove_entries([victim], datetime.now(UTC), tombstone=True)
    assert store.published_stamp() is None
    run_update(store, settings)
    assert "多家银行下调存款利率" not in titles(site / "out")


def test_a_config_change_or_a_missing_feed_file_makes_a_quiet_update_build(site: Path, published):
    settings, store = published
    cfg = site / "config.toml"
    out = site / "out"
    (out / "all" / "atom.xml").unlink()
    run_update(store, settings)
    assert (out / "all" / "atom.xml").is_file()
    retitle_behind_the_pipelines_back(store, "多家银行下调存款利率", "Retitled")
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('title = "Test"', 'title = "Test 2"'), encoding="utf-8")
    changed = load_config(cfg)
    run_update(store, changed)
    assert "Retitled" in titles(out)


def test_a_quiet_update_imports_no_build_machinery(site: Path):
    """The CLI end to end: a second `update` with nothing new loads neither the build
    (`publish.building`, templates, renderers) nor the feed parser or dedup's MinHash."""
    from conftest import run_cli

    cfg = site / "config.toml"
    first = run_cli(cfg, "update")
    assert first.returncode == 0, first.stderr
    quiet = run_cli(cfg, "update", python=("-X", "importtime"))
    assert quiet.returncode == 0, quiet.stderr
    loaded = {line.split("|")[-1].strip() for line in quiet.stderr.splitlines() if "import time" in line}
    assert "aggregator.publish" in loaded  # the measurement works: the quiet check is there
    heavy = {"aggregator.publish.building", "aggregator.publish.render", "jinja2", "feedgen", "feedparser", "rensa",
             "lxml"}  # fmt: skip
    assert not loaded & heavy, sorted(loaded & heavy)
