"""The Prefect home of a run started from the command line: its own ephemeral API and database, unless
PREFECT_API_URL names a server (then that server is used as is)."""
from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from distill.io import atomic_path
from distill.models.load import cache_dir
from distill.rundir import RunDir

MIGRATE = ("import asyncio; from prefect.server.database import provide_database_interface as db; "
           "asyncio.run(db().create_db())")


def use_local_prefect(rd: RunDir) -> None:
    """A local run gets its own Prefect home (ephemeral API, no shared state); a configured server is used as is."""
    if os.environ.get("PREFECT_API_URL"):
        return
    home = Path(os.environ.setdefault("PREFECT_HOME", str(rd.prefect_home.resolve())))
    # the temporary server's telemetry heartbeat only fails (offline) and locks its SQLite file
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # a new database is migrated at first start; Prefect's default 20 s is too short on 2 cold cores
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    seed_database(home)


class _NoTraceback(logging.Filter):
    def __init__(self, expected: tuple[type[BaseException], ...]):
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.expected):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_tracebacks(expected: tuple[type[BaseException], ...]) -> None:
    """Prefect logs a failed flow or task run with its traceback; for the errors `distill run` ends in
    one line of its own, the traceback says nothing more."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoTraceback) for f in log.filters):  # once per process
            log.addFilter(_NoTraceback(expected))


def seed_database(home: Path) -> None:
    """Start a new Prefect home's database as a copy of an empty one already migrated to this Prefect's
    schema (made once per Prefect version, in the cache): the temporary server migrating a new database
    took 7 of the 10 s it needed to start on 2 cores, in every run. A configured database is left alone;
    whatever fails here leaves the migration to the server, only slower."""
    import prefect

    db = home / "prefect.db"
    if db.exists() or any(os.environ.get(f"PREFECT_{k}_DATABASE_CONNECTION_URL") for k in ("API", "SERVER")):
        return
    template = cache_dir() / "prefect" / prefect.__version__ / "prefect.db"
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=template.parent) as tmp, atomic_path(template) as migrated:
                subprocess.run([sys.executable, "-c", MIGRATE], env={**os.environ, "PREFECT_HOME": tmp}, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                _copy(str(Path(tmp) / "prefect.db"), migrated)  # with any journal; racing runs each write a whole file
        # the template is only ever replaced whole, never written: read without locks or journal files;
        # a database another process already opened stays
        with atomic_path(db, keep_existing=True) as partial:
            _copy(f"{template.as_uri()}?immutable=1", partial)
    except (OSError, subprocess.CalledProcessError, sqlite3.Error):
        return


def _copy(source: str, target: Path) -> None:
    """A consistent copy of an SQLite database (source: a path or a file: URI) into target."""
    src = sqlite3.connect(source, uri=source.startswith("file:"))
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
