"""Dagster's SQLite event log with one open connection per database file, for the local instance.

Dagster 1.13's `SqliteEventLogStorage` builds a new SQLAlchemy engine, opens a new SQLite connection and
disposes of both for every read and write: a run of the caravan job stores 313 events, each in its
run's database and, for the 112 asset and check events, again in the index database. In-process
`mlops run`, idle machine: 4.75 s of a 30 s run went to storing events, 0.84 s to 44 reads of the
run's events; on a tmpfs home still 3.49 s, so it is the connections, not the disk. This class keeps
one connection per database file open (the last 8 files used) and changes nothing else: every use is
still one transaction, committed at its end with SQLite's default synchronous mode in WAL journaling
(Dagster creates the files in WAL mode), so a committed event is on disk as before and a killed
process leaves a write-ahead log that the next connection replays. Measured the same way: 1.58-1.80 s
to store the 313 events, 0.25-0.28 s for the reads. Whole `mlops run` processes, four alternating
pairs on one idle machine: 28.3-30.2 s (median 28.8) before, 23.3-27.2 s (median 25.2) after.

The files are where Dagster's own SQLite storage keeps them (`<instance folder>/history/runs`), so
switching loses no history and switching back loses none either.

There is no public API to subclass: Dagster's documentation configures storages by module and class
(`dagster._core.storage.event_log.SqliteEventLogStorage`), and so does `dagster_home/dagster.yaml`
with this one. The PostgreSQL deployment (`deploy/dagster-postgres.yaml`) pools its connections
already and does not use it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import sqlalchemy as db
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from sqlalchemy.pool import StaticPool

OPEN_DATABASES = 8  # a run writes two (its own and the index); the web server reads many runs


class OpenSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` whose connections stay open between uses (see the module docstring)."""

    def __init__(self, base_dir: str | None = None, inst_data=None):
        self._engines: OrderedDict[str, db.engine.Engine] = OrderedDict()
        self._inst_data = inst_data
        self._base_dir = None
        self._db_lock = threading.Lock()  # the parent's __init__ replaces it; disposal may come first
        if base_dir is not None:
            super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {"base_dir": dg.Field(dg.StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(base_dir=config_value.get("base_dir"), inst_data=inst_data)

    def register_instance(self, instance) -> None:
        # Without a base_dir, the files are where Dagster's own SQLite storage keeps them, in the
        # instance's folder: known only now (DAGSTER_HOME may name another instance's folder, e.g.
        # `DagsterInstance.from_config(folder)` under `make test`).
        if self._base_dir is None:
            super().__init__(os.path.join(instance.root_directory, "history", "runs"), inst_data=self._inst_data)
        super().register_instance(instance)

    def _engine(self, shard: str) -> db.engine.Engine:
        if shard in self._engines:
            self._engines.move_to_end(shard)
            return self._engines[shard]
        # One connection per file, shared by the threads that use the storage: `_connect` holds the
        # storage's lock for the whole use, so no two threads use it at once.
        engine = db.create_engine(
            self.conn_string_for_shard(shard),
            poolclass=StaticPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        self._engines[shard] = engine
        while len(self._engines) > OPEN_DATABASES:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.engine.Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as connection, connection.begin():
                yield connection

    def _close_connections(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._close_connections()  # the files are deleted: no connection may write to them afterwards
        super().wipe()

    def dispose(self) -> None:
        self._close_connections()
        if self._base_dir is not None:  # else never registered with an instance: nothing else to close
            super().dispose()
