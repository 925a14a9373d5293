"""The local Dagster instance's SQLite files, committed without an fsync per event.

Dagster's SQLite storages (the instance of `make run` and `make dev`, in `dagster_home/`) open a new
connection for every event they store and commit it under SQLite's default `synchronous=FULL`: an
fsync per commit and a checkpoint with fsyncs when the connection closes, several times per event
and 4-6 events per step. SQLite's `synchronous` has no setting in Dagster's configuration, so it is
set here, on each new connection to a file in the Dagster home (SQLAlchemy's documented `connect`
event; Dagster itself is not touched).

Measured on this 2-core machine (40 trivial assets, 3 runs, load 2-5): 310-370 ms wall per step with
FULL, 90-160 ms with OFF, 20 ms with an in-memory instance; NORMAL with WAL saved 10-20 %, because
the checkpoint on close still syncs. What OFF risks: an operating-system crash or power loss during
a run may corrupt the Dagster home's run history (a killed process cannot: its writes have reached
the operating system). The platform's own records (registry, history, alerts, scores) are in DuckDB
and do not depend on it; an instance that must survive power loss uses PostgreSQL (README), or
`MLOPS_DAGSTER_SQLITE_SYNC=FULL` restores SQLite's default.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

SYNC_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
_installed: set[str] = set()


def sync_level() -> str:
    level = os.environ.get("MLOPS_DAGSTER_SQLITE_SYNC", "OFF").upper()
    if level not in SYNC_LEVELS:
        raise SystemExit(f"MLOPS_DAGSTER_SQLITE_SYNC={level!r}: expected one of {', '.join(SYNC_LEVELS)}")
    return level


def relax_dagster_sqlite_sync(dagster_home: str | os.PathLike | None = None) -> None:
    """Set `PRAGMA synchronous` on every SQLite connection opened under the Dagster home (once per process)."""
    home = dagster_home or os.environ.get("DAGSTER_HOME")
    level = sync_level()
    if not home or level == "FULL":
        return
    home = str(Path(home).resolve())
    if home in _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def set_sync(dbapi_connection, _record) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        database = dbapi_connection.execute("PRAGMA database_list").fetchone()[2]
        if database and database.startswith(home + os.sep):
            dbapi_connection.execute(f"PRAGMA synchronous={level}")

    event.listen(Engine, "connect", set_sync)
    _installed.add(home)
