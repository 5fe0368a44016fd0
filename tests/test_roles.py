"""The roles' decisions, without I/O: which database hosts which role, how long an idle lane sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import run_cli, write_config

from aggregator.roles import IDLE_LEAST, idle_wait, refusal

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_only_postgresql_hosts_the_fetch_and_publish_roles() -> None:
    assert refusal("all", "sqlite") is None and refusal("all", "postgresql") is None
    assert refusal("fetch", "postgresql") is None and refusal("publish", "postgresql") is None
    for role in ("fetch", "publish"):
        why = refusal(role, "sqlite")
        assert why and "PostgreSQL" in why and f"--role {role}" in why


def test_an_idle_lane_sleeps_until_the_next_source_is_due_at_most_poll() -> None:
    assert idle_wait(None, NOW, 2.0) == 2.0  # nothing will ever be due: look again after poll
    assert idle_wait(NOW + timedelta(seconds=0.5), NOW, 2.0) == 0.5
    assert idle_wait(NOW + timedelta(minutes=5), NOW, 2.0) == 2.0
    assert idle_wait(NOW - timedelta(seconds=3), NOW, 2.0) == IDLE_LEAST  # overdue: soon, never a busy loop


def test_the_fetch_role_on_sqlite_is_refused_by_the_cli(tmp_path) -> None:
    (tmp_path / "articles").mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text('[database]\nurl = "sqlite:///db/agg.sqlite3"\n', encoding="utf-8")
    r = run_cli(cfg, "run", "--role", "fetch", timeout=30)
    assert r.returncode == 2 and "needs PostgreSQL" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "db" / "agg.sqlite3").exists()  # refused before opening anything


def test_workers_settings_are_validated_like_the_rest(tmp_path) -> None:
    (tmp_path / "articles").mkdir()
    cfg = write_config(tmp_path, '[workers]\nlease = "2h"\n')
    r = run_cli(cfg, "run", "--role", "fetch", timeout=30)
    assert r.returncode == 2 and "workers.lease" in r.stderr
    cfg = write_config(tmp_path, "[workers]\nlanes = 0\n")
    assert "workers.lanes" in run_cli(cfg, "status", timeout=30).stderr
    cfg = write_config(tmp_path, "[workers]\nleese = 3\n")
    assert "workers.leese" in run_cli(cfg, "status", timeout=30).stderr
