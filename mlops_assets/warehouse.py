"""Opening the DuckDB warehouse: bounded retries while another process holds it, always closed."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

# Same options for every connection of this process: DuckDB refuses a second in-process connection
# to a file with a different configuration.
CONNECTION_CONFIG = {"custom_user_agent": "dagster", "storage_compatibility_version": "v1.0.0"}


def quote_identifier(name: str) -> str:
    """`name` as a DuckDB identifier (names may hold spaces or quotes)."""
    return '"' + str(name).replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    """`value` as a SQL string literal, for the few statements that take no parameters (ATTACH, DDL)."""
    return "'" + str(value).replace("'", "''") + "'"


def table_exists(connection: duckdb.DuckDBPyConnection, schema: str, table: str, catalog: str | None = None) -> bool:
    """Whether `schema.table` exists: in `catalog` if given, else in any database attached."""
    return bool(
        connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ? "
            "and (? is null or table_catalog = ?)",
            [schema, table, catalog, catalog],
        ).fetchall()[0][0]
    )


class ConfigurationError(ValueError):
    """A setting from the environment that the platform cannot use; the message names it."""


class WarehouseLockedError(RuntimeError):
    pass


def is_lock_conflict(error: duckdb.Error) -> bool:
    """DuckDB's "Could not set lock on file ... Conflicting lock is held": another process holds the file."""
    return "lock" in str(error).lower()


@contextmanager
def warehouse_connection(
    database: str, *, attempts: int = 8, first_wait_seconds: float = 0.25
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection, closed on exit even when the body raises.

    DuckDB allows one writing process per file; while another process holds it, retry with
    exponential waits (about a minute in all) and then fail naming the file.
    """
    wait = first_wait_seconds
    for attempt in range(1, attempts + 1):
        try:
            connection = duckdb.connect(database, read_only=False, config=CONNECTION_CONFIG)
            break
        except duckdb.IOException as error:
            if not is_lock_conflict(error) or attempt == attempts:
                raise WarehouseLockedError(
                    f"{database}: cannot open the warehouse: {error}. Close other DuckDB sessions on "
                    "this file (readers should use the published files instead)."
                ) from error
            time.sleep(wait)
            wait *= 2
    try:
        yield connection
    finally:
        connection.close()


# What a load may hold in memory before DuckDB spills to its temporary folder (`<warehouse>.tmp`).
# DuckDB's default is 80% of the machine's RAM: a 1.6 GB export reached 12.9 GB RSS with it.
LOAD_MEMORY_LIMIT_VARIABLE = "MLOPS_LOAD_MEMORY_LIMIT"
LOAD_MEMORY_LIMIT = os.environ.get(LOAD_MEMORY_LIMIT_VARIABLE, "1GB")


@contextmanager
def bounded_memory(connection: duckdb.DuckDBPyConnection, limit: str | None = None) -> Iterator[None]:
    """Cap DuckDB's memory (`memory_limit`) for the body, so that a load of any size streams through
    DuckDB's buffer manager and spills instead of growing with the file; the platform's default
    (no limit set: DuckDB's own) is restored afterwards, also when the body raises. The setting
    belongs to the database instance, shared by this process's connections to the file."""
    connection.execute("select 1")  # fail here, not in the body, if the connection is unusable
    connection.execute(f"set memory_limit = '{_checked_size(limit or LOAD_MEMORY_LIMIT)}'")
    try:
        yield
    finally:
        connection.execute("reset memory_limit")


_UNITS = {"bytes": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}

# What a run may keep of the tables it wrote or read, for its later steps (defs/io_managers.py).
RUN_MEMORY_LIMIT_VARIABLE = "MLOPS_RUN_MEMORY_LIMIT"
# A size as DuckDB reads it (GB = 10^9, GiB = 2^30); the one grammar of the memory settings.
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", flags=re.IGNORECASE)
_SIZE_UNITS = {**_UNITS, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def size_in_bytes(text: str, variable: str) -> int:
    """`1GB`, `512MB`, `2.5GiB` or `0` in bytes; a clear error naming `variable` (where the value came
    from) otherwise."""
    if text.strip() == "0":
        return 0
    match = _SIZE.fullmatch(text)
    if not match:
        raise ConfigurationError(f"{variable}={text!r}: expected a size such as 1GB or 512MB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def memory_limit_bytes(connection: duckdb.DuckDBPyConnection) -> int:
    """DuckDB's memory limit in force, in bytes (it reports e.g. `953.6 MiB` for 1GB)."""
    text = connection.execute("select current_setting('memory_limit')").fetchall()[0][0]
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]+)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"DuckDB reported a memory limit I cannot read: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _checked_size(text: str) -> str:
    """`1GB`, `512MB`, `2.5 GiB`: a size DuckDB understands, never SQL (the value comes from the environment)."""
    if not _SIZE.fullmatch(text):
        raise ConfigurationError(f"{LOAD_MEMORY_LIMIT_VARIABLE}={text!r}: expected a size such as 1GB or 512MB")
    return text.strip()


@contextmanager
def transaction(connection: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """The body's writes commit together or not at all; an error in the body or in the commit is
    re-raised as it is. After a failed commit (e.g. a full disk) DuckDB has no transaction left, and
    its "cannot rollback - no transaction is active" would replace the real error in what the run
    reports, so that one is suppressed."""
    connection.execute("begin transaction")
    try:
        yield connection
        connection.execute("commit")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            connection.execute("rollback")
        raise


@contextmanager
def attached(connection: duckdb.DuckDBPyConnection, path: Path, alias: str, storage_version: str) -> Iterator[str]:
    """The DuckDB file `path` attached to `connection` as `alias` for the body, in `storage_version`
    if DuckDB creates it; detached (which writes it out) afterwards. A failed detach after a failed
    body is not reported over the body's error."""
    # ATTACH takes no parameters.
    connection.execute(f"attach {sql_literal(path)} as {alias} (storage_version '{storage_version}')")
    try:
        yield alias
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            connection.execute(f"detach {alias}")
        raise
    connection.execute(f"detach {alias}")
