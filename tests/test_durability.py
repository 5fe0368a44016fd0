"""Published files survive crashes and full disks: stale temp files, damaged outputs, write errors,
and files flushed before the signatures that trust them are committed. The real CLI on real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from lxml import etree

from aggregator.config import Tuning, load_config
from aggregator.publish import build, files
from aggregator.publish.files import is_temp_name, is_whole, looks_whole, remove_stale_temps
from aggregator.store import Store


def titles(path: Path) -> list[str]:
    root = etree.parse(str(path)).getroot()
    return [t.text or "" for t in root.iter("{http://www.w3.org/2005/Atom}title", "title")]


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_temp_names_and_whole_documents():
    assert is_temp_name(".x.html.123.tmp") and is_temp_name(".atom.xml.99.tmp")
    not_ours = (".tmp", "..1.tmp", ".x.tmp", ".x.12a.tmp", "x.html.1.tmp", ".x.html.1.tmp~", ".x.١٢.tmp", ".keep")
    for name in not_ours:
        assert not is_temp_name(name), name
    assert looks_whole("atom", b'<?xml version="1.0"?>\n<feed>', b"</entry>\n</feed>\n")
    assert looks_whole("rss", b"<?xml version='1.0'?><rss>", b"</channel></rss>")
    assert looks_whole("json", b'{\n  "version"', b"]\n}\n")
    assert not looks_whole("atom", b"", b"")
    assert not looks_whole("atom", b'<?xml version="1.0"?><feed><title>cut off', b"<title>cut off")
    assert not looks_whole("rss", b"\0\0\0\0", b"\0\0\0\0")
    assert not looks_whole("json", b'{"items": [', b'"title": "x",')


def test_stale_temps_only_ours_only_inside(tmp_path: Path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "all" / "archive" / "1").mkdir(parents=True)
    ours = [out / "a" / ".x.html.123.tmp", out / "all" / "archive" / "1" / ".rss.xml.7.tmp"]
    theirs = [out / "a" / ".keep", out / "a" / "x.html.1.tmp", out / "all" / "atom.xml", tmp_path / ".y.html.5.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"x")
    (out / "link").symlink_to(tmp_path, target_is_directory=True)  # never followed out of `out`
    (out / "a" / ".z.html.8.tmp").symlink_to(tmp_path / "elsewhere")  # a dangling one of our names
    assert remove_stale_temps(out) == 3
    assert not any(p.exists() for p in ours) and not (out / "a" / ".z.html.8.tmp").is_symlink()
    assert all(p.exists() for p in theirs)
    assert remove_stale_temps(tmp_path / "missing") == 0


def test_the_next_update_removes_stale_temps_and_rewrites_damaged_outputs(site: Path):
    """A killed build's temp files, and feed files and pages left missing, empty or cut off (a
    power loss), are repaired by the next run although no signature changed."""
    assert run_cli(site / "config.toml", "update").returncode == 0
    out = site / "out"
    good = tree(out)
    stale = [out / "a" / ".x.html.123.tmp", out / "all" / ".atom.xml.99.tmp", out / "jinrong" / ".rss.xml.5.tmp"]
    for p in stale:
        p.write_bytes(b"<half")
    (out / "all" / "atom.xml").write_bytes(b"")
    (out / "jinrong" / "rss.xml").unlink()
    (out / "keji" / "atom.xml").write_bytes(
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>cut'
    )
    page = sorted((out / "a").glob("*.html"))[0]
    page.write_bytes(b"")
    r = run_cli(site / "config.toml", "update")
    assert r.returncode == 0, r.stderr
    assert not any(p.exists() for p in stale)
    assert tree(out) == good
    assert titles(out / "keji" / "atom.xml")  # parses again


def test_a_failed_write_is_one_line_exit_1_and_nothing_is_trusted(site: Path):
    cfg = site / "config.toml"
    assert run_cli(cfg, "update").returncode == 0
    out = site / "out"
    before = tree(out)
    # Something in a feed file's place that cannot be replaced: every write there fails.
    (out / "jinrong" / "rss.xml").unlink()
    (out / "jinrong" / "rss.xml").mkdir()
    (out / "jinrong" / "rss.xml" / "x").write_text("in the way")
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('title = "Test"', 'title = "Renamed"'), encoding="utf-8")
    r = run_cli(cfg, "build")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(out / "jinrong" / "rss.xml") in lines[0]
    assert "Traceback" not in r.stderr
    assert not [p for p in out.rglob(".*.tmp")]  # no half-written temp file left
    for name in tree(out):  # every file is whole: the old version or the new one
        if name.startswith("jinrong/rss.xml/"):
            continue
        assert name in before, name
        if name.endswith((".xml", ".json")):
            assert is_whole(out / name, {"atom.xml": "atom", "rss.xml": "rss", "feed.json": "json"}[Path(name).name])
    # Fixed, the next build publishes every feed with the new title: the failed one recorded
    # no signature that would let a feed it did not write be skipped.
    shutil.rmtree(out / "jinrong" / "rss.xml")
    r = run_cli(cfg, "build")
    assert r.returncode == 0, r.stderr
    for feed in out.glob("*/atom.xml"):
        assert any("Renamed" in t for t in titles(feed)), feed


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs root and a private mount namespace (unshare -m) for a small tmpfs")
def test_a_full_disk_gives_one_line_exit_1_and_keeps_the_old_files(site: Path):
    """A real ENOSPC: the output folder on a tmpfs with no room left, in a private mount namespace."""
    cfg = site / "config.toml"
    assert run_cli(cfg, "update").returncode == 0
    out = site / "out"
    before = tree(out)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('title = "Test"', 'title = "Renamed"'), encoding="utf-8")
    script = textwrap.dedent(f"""
        set -u
        cp -a {out} {site}/copy
        mount -t tmpfs -o size=2m tmpfs {out}
        cp -a {site}/copy/. {out}/
        dd if=/dev/zero of={out}/.filler bs=4k 2>/dev/null   # until the disk is full
        PYTHONPATH={ROOT} {sys.executable} -m aggregator --config {cfg} build
        echo "rc=$?"
        rm {out}/.filler
        cd {out} && find . -type f | sort | while read -r f; do sha256sum "$f"; done
    """)
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    shutil.rmtree(site / "copy")
    assert "rc=1" in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}/") and "No space left on device" in lines[0], lines
    import hashlib

    after = dict(reversed(line.split("  ./", 1)) for line in r.stdout.splitlines() if "  ./" in line)
    assert after == {name: hashlib.sha256(data).hexdigest() for name, data in before.items()}


def test_files_are_flushed_before_their_signatures_are_recorded(site: Path, monkeypatch):
    """`files.sync` is spied on, not replaced: the real flush runs, and when it does, the store
    must not yet hold the signatures of what it flushes."""
    settings = load_config(site / "config.toml")
    store = Store(settings.database.url)
    seen: list[dict] = []

    def spy(root: Path) -> None:
        seen.append(dict(store.signatures()))
        real(root)

    real = files.sync
    monkeypatch.setattr("aggregator.publish.building.sync", spy)
    try:
        from aggregator.pipeline import ingest

        ingest(store, settings)
        build(store, settings)
        assert seen == [{}] and store.signatures()  # flushed once, before any signature existed
        build(store, settings)
        assert len(seen) == 1  # a build with nothing to write or record flushes nothing
    finally:
        store.close()


def test_stale_temps_are_removed_before_this_run_writes_any(site: Path, monkeypatch):
    """On a big cold run, article pages render in workers while dedup runs, before the build
    starts: the clean-up must come before them, or it deletes their in-flight temp files (seen
    on the 20,000-article benchmark: the write then failed). Spies around the real functions."""
    import aggregator.publish.building as publish
    from aggregator.pipeline import update
    from aggregator.publish import render

    if (os.cpu_count() or 1) < 2:
        pytest.skip("render workers need two cores")
    events: list[str] = []
    real_clean, real_pages = publish.remove_stale_temps, render.Work.pages

    def clean(root: Path) -> int:
        events.append("clean")
        return real_clean(root)

    def handed(self, todo, hold=None):
        real_pages(self, todo, hold)
        if self.parallel and self._futures:
            events.append("writing")

    monkeypatch.setattr(publish, "remove_stale_temps", clean)
    monkeypatch.setattr(render.Work, "pages", handed)
    (site / "out" / "a").mkdir(parents=True)
    stale = site / "out" / "a" / ".x.html.123.tmp"
    stale.write_bytes(b"<half")
    settings = load_config(site / "config.toml")
    # The worker path, as for a big corpus, every page task handed over before dedup.
    settings = settings.model_copy(update={"tuning": Tuning(render_parallel_min=0, pages_per_task=2, early_hold=0)})
    store = Store(settings.database.url)
    try:
        update(store, settings)
    finally:
        store.close()
    assert "writing" in events and events.index("clean") < events.index("writing")
    assert events.count("clean") == 1 and not stale.exists()
