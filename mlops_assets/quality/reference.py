"""Profiled quality references, recorded from a use case's first accepted load.

The structural rules of a use case come from its data dictionary and need no data; the profiled ones
(today the unit-change reference, quality/scale.py) need a reference load. The first load that
passes every blocking check of the asset becomes that reference and is recorded in
`<use case>.quality_reference`; later loads are compared with it. Nothing here overwrites a
recorded reference: a new baseline is a deliberate act (delete its row).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb

from mlops_assets.warehouse import table_exists

TABLE = "quality_reference"
COLUMNS = "asset varchar, kind varchar, reference varchar, load_id varchar, source_file varchar, recorded_at timestamp"


def recorded_reference(connection: duckdb.DuckDBPyConnection, schema: str, asset: str, kind: str) -> dict | None:
    """The reference recorded for `asset` (e.g. `stg_customers`) of this `kind` (e.g. `scale`), or None."""
    if not table_exists(connection, schema, TABLE):
        return None
    rows = connection.execute(
        f"select reference, load_id, source_file, recorded_at from {schema}.{TABLE} "
        "where asset = ? and kind = ? order by recorded_at limit 1",
        [asset, kind],
    ).fetchall()  # fetchall: an unfinished result would block the connection's next statement
    if not rows:
        return None
    row = rows[0]
    return {"values": json.loads(row[0]), "load_id": row[1], "source_file": row[2], "recorded_at": row[3]}


def record_reference(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    asset: str,
    kind: str,
    values: dict,
    load_id: str | None,
    source_file: str | None,
) -> None:
    connection.execute(f"create table if not exists {schema}.{TABLE} ({COLUMNS})")
    connection.execute(
        f"insert into {schema}.{TABLE} values (?, ?, ?, ?, ?, ?)",
        [asset, kind, json.dumps(values, sort_keys=True), load_id, source_file, datetime.now(UTC).replace(tzinfo=None)],
    )
