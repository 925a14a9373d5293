"""Publishing score tables for marketing: a separate DuckDB file per use case, swapped atomically.

The pipeline's warehouse is held read-write while runs go on, and DuckDB refuses any other process
(readers included) while a writer holds a file. Marketing therefore reads a separate file that the
pipeline never keeps open: each publication is written completely under a temporary name in the same
folder, flushed to disk, and renamed over the previous file. A reader opens either the old file or
the new one, never a lock error or a half-written table; a failed publication leaves the old file.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path

import duckdb
import pandas as pd

from mlops_assets.warehouse import attached

# Write published files in a storage format DuckDB 1.x clients can read too (DuckDB 2 writes a newer
# one by default that, e.g., the 1.5 CLI refuses), so marketing is free to use any DuckDB client.
PUBLISHED_STORAGE_VERSION = "v1.0.0"


# Temporary files of a publication: `.<file>.<pid>.<random>.tmp` (+ DuckDB's `.wal`), so that a later
# publication can tell the leftovers of a killed writer (pid gone) from a write in progress.
_TEMPORARY = re.compile(r"^\.(?P<file>.+)\.(?P<pid>\d+)\.[0-9a-f]{32}\.tmp(\.wal)?$")
_OLD_TEMPORARY = re.compile(r"^\.(?P<file>.+)\.[0-9a-f]{32}\.tmp(\.wal)?$")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_temporaries(destination: Path) -> list[Path]:
    """Delete temporary files of publications to `destination` whose writer is gone (killed mid-write)."""
    destination = Path(destination)
    removed = []
    if not destination.parent.exists():
        return removed
    for candidate in destination.parent.iterdir():
        match = _TEMPORARY.match(candidate.name)
        if match and match["file"] == destination.name and not _process_exists(int(match["pid"])):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
        # Names without a pid come from earlier versions, which never left a write running behind.
        old = _OLD_TEMPORARY.match(candidate.name)
        if old and old["file"] == destination.name:
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def temporary_path(destination: Path) -> Path:
    """A new temporary name next to `destination` that `remove_abandoned_temporaries` recognizes."""
    destination = Path(destination)
    return destination.with_name(f".{destination.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def remove_database_file(path: Path) -> None:
    """Delete a DuckDB file and its write-ahead log, if there."""
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    """Make renames in `directory` durable."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class PreparedPublication:
    """A publication written completely under a temporary name, not yet visible to readers.

    Lets the caller commit its own records (e.g. the score history) between writing and `swap()`, so
    that nothing it records can be missing once readers see the new file. `discard()` (always call it,
    e.g. in `finally`) removes the temporary file if it was not swapped in.
    """

    def __init__(self, destination: Path, temporary: Path):
        self.destination, self.temporary = destination, temporary

    def swap(self) -> Path:
        os.replace(self.temporary, self.destination)
        fsync_directory(self.destination.parent)
        return self.destination

    def discard(self) -> None:
        remove_database_file(self.temporary)


def prepare_publication(
    destination: Path,
    tables: dict[str, pd.DataFrame | str],
    connection: duckdb.DuckDBPyConnection | None = None,
) -> PreparedPublication:
    """Write `tables` into a new DuckDB file next to `destination`, flushed to disk, not yet swapped in.

    A table is a DataFrame or a query on `connection`, e.g. `select * from caravan.customer_scores`
    on the warehouse: DuckDB then copies it file to file. At 1M scores that took 0.26 s; loading them
    into pandas took 0.6-0.7 s and writing them out from there 0.7 s.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(destination)
    prepared = PreparedPublication(destination, temporary_path(destination))
    try:
        with contextlib.ExitStack() as stack:
            if connection is None:
                connection = stack.enter_context(duckdb.connect())
            with attached(connection, prepared.temporary, "prepared_publication", PUBLISHED_STORAGE_VERSION) as alias:
                for name, table in tables.items():
                    if isinstance(table, str):
                        connection.execute(f"create table {alias}.main.{name} as {table}")
                        continue
                    connection.register("_published_frame", table)
                    try:
                        connection.execute(f"create table {alias}.main.{name} as select * from _published_frame")
                    finally:
                        connection.unregister("_published_frame")
                connection.execute(f"checkpoint {alias}")
        with open(prepared.temporary, "rb") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        prepared.discard()
        raise
    return prepared


def publish_tables(destination: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """Write `tables` into a new DuckDB file and atomically replace `destination` with it."""
    prepared = prepare_publication(destination, tables)
    try:
        return prepared.swap()
    finally:
        prepared.discard()


def drop_unpublished_history(connection: duckdb.DuckDBPyConnection, schema: str, published_file: Path) -> int:
    """Delete score-history rows newer than the publication in `published_file`.

    The history commits before the file is swapped in; a writer killed between the two leaves history
    rows of a publication nobody could read. One run per use case at a time (see run_guard), so any
    history row newer than the file's own publication is such a leftover. Returns the rows deleted.
    """
    if not Path(published_file).exists():
        return 0
    has_history = connection.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = 'score_history'",
        [schema],
    ).fetchall()[0][0]
    if not has_history:
        return 0
    published_at = read_published(Path(published_file), "select max(published_at) as at from publication")["at"].iloc[0]
    return connection.execute(f"delete from {schema}.score_history where published_at > ?", [published_at]).fetchall()[
        0
    ][0]


def read_published(path: Path, query: str) -> pd.DataFrame:
    """Run a query against a published file, read-only (what a marketing client does)."""
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(query).fetchdf()
