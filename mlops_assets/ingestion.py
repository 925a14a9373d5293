"""Loading a customer export (CSV or Parquet) into the warehouse as-is, atomically.

Plain functions over a DuckDB connection, no Dagster: a data engineer can call them from a notebook.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

LOAD_COLUMNS = ("_load_id", "_source_file", "_loaded_at")


class SourceDataError(ValueError):
    """A source export that cannot be loaded; the message names the file and what is wrong."""


@dataclass(frozen=True)
class SourceLoad:
    load_id: str
    source_file: str
    source_format: str
    sha256: str
    row_count: int
    columns: list[str]
    extra_columns: list[str]
    loaded_at: datetime


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _source_relation(path: Path, source_format: str, delimiter: str) -> str:
    literal = sql_literal(str(path))
    if source_format == "csv":
        # all_varchar: keep every value exactly as exported; typing happens in dbt staging, where a
        # type change in the export fails loudly instead of being guessed differently per load.
        return (
            f"read_csv({literal}, header = true, delim = {sql_literal(delimiter)}, all_varchar = true, "
            "strict_mode = true, null_padding = false, auto_detect = true, encoding = 'utf-8')"
        )
    if source_format == "parquet":
        return f"read_parquet({literal})"
    raise SourceDataError(f"{path}: unsupported source format {source_format!r} (use csv or parquet)")


def load_source(
    connection: duckdb.DuckDBPyConnection,
    *,
    path: Path,
    source_format: str,
    table: str,
    required_columns: list[str],
    load_id: str,
    delimiter: str = ",",
    id_column: str | None = None,
    id_prefix: str = "C",
    load_log_table: str | None = None,
) -> SourceLoad:
    """Replace `table` with the export at `path`, or raise SourceDataError and change nothing.

    Customer ids: taken from `id_column` when the export has one; otherwise assigned from the row
    position in the file (`<id_prefix>0000001` for the first data row), stable while the export keeps
    its row order. Each successful load is appended to `load_log_table` in the same transaction.
    """
    path = Path(path)
    if not path.exists():
        raise SourceDataError(f"{path}: source file not found")
    if not path.is_file():
        raise SourceDataError(f"{path}: source path is not a file")
    try:
        sha256 = file_sha256(path)
    except OSError as error:
        raise SourceDataError(f"{path}: source file cannot be read: {error}") from error

    loaded_at = datetime.now(UTC).replace(tzinfo=None)
    connection.execute("begin transaction")
    try:
        try:
            relation = _source_relation(path, source_format, delimiter)
            connection.execute(f"create or replace temp table _source as select * from {relation}")
        except duckdb.Error as error:
            raise SourceDataError(
                f"{path}: cannot be read as {source_format}: {str(error).strip()}"
            ) from error

        columns = [row[0] for row in connection.execute("describe _source").fetchall()]
        missing = [c for c in required_columns if c not in columns]
        if missing:
            shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
            raise SourceDataError(
                f"{path}: missing required column(s) {', '.join(missing)} "
                f"(found {len(columns)} columns: {shown})"
            )
        row_count = connection.execute("select count(*) from _source").fetchone()[0]
        if row_count == 0:
            raise SourceDataError(f"{path}: the file has a header but no data rows")

        if id_column is None:
            id_expression = f"printf('%s%07d', {sql_literal(id_prefix)}, row_number() over (order by rowid))"
            selected = "*"
        else:
            id_expression = f"cast({quote_identifier(id_column)} as varchar)"
            selected = f"* exclude ({quote_identifier(id_column)})"
        schema = table.split(".")[0]
        connection.execute(f"create schema if not exists {schema}")
        connection.execute(
            f"""
            create or replace table {table} as
            select {id_expression} as customer_id, {selected},
                   ? as _load_id, ? as _source_file, ?::timestamp as _loaded_at
            from _source
            order by rowid
            """,
            [load_id, str(path), loaded_at],
        )
        connection.execute("drop table _source")
        if load_log_table:
            connection.execute(
                f"""
                create table if not exists {load_log_table} (
                    load_id varchar primary key, source_file varchar, source_format varchar,
                    sha256 varchar, row_count bigint, column_count integer, loaded_at timestamp
                )
                """
            )
            connection.execute(
                f"insert into {load_log_table} values (?, ?, ?, ?, ?, ?, ?)",
                [load_id, str(path), source_format, sha256, row_count, len(columns), loaded_at],
            )
        connection.execute("commit")
    except BaseException:
        connection.execute("rollback")
        raise

    known = set(required_columns)
    return SourceLoad(
        load_id=load_id,
        source_file=str(path),
        source_format=source_format,
        sha256=sha256,
        row_count=row_count,
        columns=columns,
        extra_columns=[c for c in columns if c not in known],
        loaded_at=loaded_at,
    )
