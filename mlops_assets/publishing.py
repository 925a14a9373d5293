"""Publishing score tables for marketing: a separate DuckDB file per use case, swapped atomically.

The pipeline's warehouse is held read-write while runs go on, and DuckDB refuses any other process
(readers included) while a writer holds a file. Marketing therefore reads a separate file that the
pipeline never keeps open: each publication is written completely under a temporary name in the same
folder, flushed to disk, and renamed over the previous file. A reader opens either the old file or
the new one, never a lock error or a half-written table; a failed publication leaves the old file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb
import pandas as pd

# Write published files in a storage format DuckDB 1.x clients can read too (DuckDB 2 writes a newer
# one by default that, e.g., the 1.5 CLI refuses), so marketing is free to use any DuckDB client.
PUBLISHED_STORAGE_VERSION = "v1.0.0"


def publish_tables(destination: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """Write `tables` into a new DuckDB file and atomically replace `destination` with it."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp")
    try:
        with duckdb.connect(
            str(temporary), config={"storage_compatibility_version": PUBLISHED_STORAGE_VERSION}
        ) as connection:
            for name, frame in tables.items():
                connection.register("_frame", frame)
                connection.execute(f"create table {name} as select * from _frame")
                connection.unregister("_frame")
            connection.execute("checkpoint")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, destination)
        directory = os.open(destination.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        for leftover in (temporary, temporary.with_name(temporary.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return destination


def read_published(path: Path, query: str) -> pd.DataFrame:
    """Run a query against a published file, read-only (what a marketing client does)."""
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(query).fetchdf()
