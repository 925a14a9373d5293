"""Opening the DuckDB warehouse: bounded retries while another process holds it, always closed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

# Same options for every connection of this process: DuckDB refuses a second in-process connection
# to a file with a different configuration.
CONNECTION_CONFIG = {"custom_user_agent": "dagster", "storage_compatibility_version": "v1.0.0"}


def table_exists(connection: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
    )


class WarehouseLockedError(RuntimeError):
    pass


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
            if "lock" not in str(error).lower() or attempt == attempts:
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
