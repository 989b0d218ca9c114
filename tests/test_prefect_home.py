"""A local run's Prefect home starts from a copy of an empty, already migrated database."""
import sqlite3

import distill.cli.prefect_home as prefect_home
from distill.cli.prefect_home import seed_database


def _tables(db) -> set[str]:
    with sqlite3.connect(db) as c:
        return {r[0] for r in c.execute("select name from sqlite_master where type = 'table'")}


def test_a_new_home_starts_migrated_an_existing_database_stays_and_a_configured_one_is_left_alone(tmp_path, monkeypatch):
    """Breaks caught: the template made again for every run (the migration it saves), a database already
    there (maybe open in a running server) replaced by the template, a configured database URL ignored."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    home = tmp_path / "home"
    seed_database(home)
    db = home / "prefect.db"
    with sqlite3.connect(db) as c:
        assert c.execute("select version_num from alembic_version").fetchone()  # at Prefect's schema head
    assert {"flow", "flow_run", "task_run"} <= _tables(db)
    template = next((tmp_path / "cache" / "prefect").glob("*/prefect.db"))
    made = template.stat().st_mtime_ns

    with sqlite3.connect(db) as c:
        c.execute("create table marker (x)")
    seed_database(home)
    assert "marker" in _tables(db)
    seed_database(tmp_path / "other")
    assert template.stat().st_mtime_ns == made and "marker" not in _tables(tmp_path / "other" / "prefect.db")
    assert not list(home.glob("*partial*"))  # no half-made copy left behind

    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db.example/prefect")
    seed_database(tmp_path / "configured")
    assert not (tmp_path / "configured" / "prefect.db").exists()


def test_a_template_that_cannot_be_made_leaves_the_migration_to_prefect(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.setattr(prefect_home, "MIGRATE", "raise SystemExit(3)")
    seed_database(tmp_path / "home")
    assert not (tmp_path / "home" / "prefect.db").exists()
    assert not list((tmp_path / "cache" / "prefect").glob("*/*"))
