"""Loading a customer export (CSV or Parquet) into the warehouse as-is, atomically.

Plain functions over a DuckDB connection, no Dagster: a data engineer can call them from a notebook.
A load either succeeds completely or raises SourceDataError naming the file, the row and the column,
and leaves the previous raw table untouched.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from mlops_assets import warehouse
from mlops_assets.quality.rows import ColumnRule, find_outliers, find_row_problems, summarize_problems
from mlops_assets.warehouse import (
    LOAD_MEMORY_LIMIT_VARIABLE,
    bounded_memory,
    quote_identifier,
    sql_literal,
    table_exists,
    transaction,
)

LOAD_LOG_COLUMNS = """
    load_id varchar primary key, source_file varchar, source_format varchar, sha256 varchar,
    row_count bigint, column_count integer, quarantined_rows bigint, outlier_rows bigint,
    status varchar, message varchar, loaded_at timestamp
"""
QUARANTINE_COLUMNS = """
    load_id varchar, source_file varchar, source_row bigint, customer_id varchar, column_name varchar,
    raw_value varchar, reason varchar, quarantined_at timestamp
"""
# The ledger of ingested files, one per use case (`<schema>.ingested_files`): every file accepted,
# by content hash. Ingestion consults it whatever started the run (CLI, sensor, UI), so the same
# customers or outcomes file is never loaded twice.
LEDGER_COLUMNS = """
    kind varchar, sha256 varchar, source_file varchar, load_id varchar, row_count bigint, loaded_at timestamp
"""
_DELIMITER_CANDIDATES = (";", "\t", "|", ",")
# Customer ids assigned by ingestion to exports without an id column, per load: a batch continues the
# numbering where the previous assigned ids ended, so two batches never give two customers one id.
ASSIGNED_IDS_COLUMNS = "load_id varchar, source_file varchar, first_number bigint, last_number bigint"


@dataclass(frozen=True)
class CsvDialect:
    """How a use case's CSV files are written: the same for its initial export, batches and outcomes."""

    delimiter: str = ","
    decimal: str = "."
    encoding: str = "utf-8"
    quote: str = '"'

    @classmethod
    def of(cls, source) -> CsvDialect:
        """The dialect of a use case's `source` settings (use_cases.SourceSpec)."""
        return cls(source.delimiter, source.decimal, source.encoding, source.quote)


class SourceDataError(ValueError):
    """A source export that cannot be loaded; the message names the file and what is wrong."""


class LoadResourceError(RuntimeError):
    """A load that ran out of memory or of spill space: the machine's problem, not the file's. The
    message names the file, the memory limit and the setting to raise; nothing was loaded or changed."""


def _is_resource_error(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.OutOfMemoryException) or "no space left on device" in str(error).lower()


@contextlib.contextmanager
def _resource_errors_reported(connection: duckdb.DuckDBPyConnection, path: Path) -> Iterator[None]:
    """Turn DuckDB running out of memory (or of disk for its spill files) during a load into a
    LoadResourceError that says so, instead of a data error or DuckDB's raw text. Used inside
    bounded_memory, so the limit and spill folder named are the load's."""
    try:
        yield
    except duckdb.Error as error:
        if not _is_resource_error(error):
            raise
        limit, spill = connection.execute(
            "select current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchall()[0]
        disk = f"free disk space in the spill folder {spill}" if spill else "give DuckDB a temp_directory to spill to"
        raise LoadResourceError(
            f"{path}: the load ran out of memory or disk, not a problem with the file's data: "
            f"{str(error).splitlines()[0]} (memory limit {limit}, set by {LOAD_MEMORY_LIMIT_VARIABLE}="
            f"{warehouse.LOAD_MEMORY_LIMIT}). Raise {LOAD_MEMORY_LIMIT_VARIABLE} (e.g. 2GB; RSS stays "
            f"near it) or {disk}, then load the file again; nothing was loaded or changed."
        ) from error


@dataclass(frozen=True)
class SourceLoad:
    load_id: str
    source_file: str
    source_format: str
    sha256: str
    row_count: int
    columns: list[str]
    extra_columns: list[str]
    quarantined_rows: int
    outlier_rows: int
    quarantine_summary: str
    loaded_at: datetime
    skipped: bool = False
    message: str = ""


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """Gzip-compressed, whatever the file is called (spreadsheet tools and mail gateways rename)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_text(path: Path, errors: str = "strict", encoding: str = "utf-8"):
    """A CSV export opened as text: gunzipped if compressed, a UTF-8 byte-order mark dropped."""
    encoding = "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding
    if is_gzip(path):
        return gzip.open(path, "rt", newline="", encoding=encoding, errors=errors)
    return open(path, newline="", encoding=encoding, errors=errors)


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def export_ingestion_config(path: Path, source=None) -> dict:
    """Ingestion config for a batch export, in the use case's dialect (`source`: its SourceSpec).

    The id column is the use case's; a use case without one takes a `customer_id` column if the
    batch has one, else ingestion assigns ids that continue the numbering of earlier loads.
    """
    path = Path(path)
    dialect = CsvDialect.of(source) if source is not None else CsvDialect()
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            columns = pq.read_schema(path).names
        else:
            with open_text(path, errors="replace", encoding=dialect.encoding) as handle:
                columns = next(csv.reader(handle, delimiter=dialect.delimiter, quotechar=dialect.quote), [])
    except Exception:  # unreadable: the load itself reports what is wrong, naming the file
        columns = []
    id_column = source.id_column if source is not None else None
    if id_column is None and "customer_id" in [c.strip() for c in columns]:
        id_column = "customer_id"
    config = {
        "source_path": str(path),
        "source_format": "parquet" if path.suffix == ".parquet" else "csv",
        "id_column": id_column,
        "assigned_ids": "next_free",
    }
    if source is not None:
        config.update(
            delimiter=dialect.delimiter, decimal=dialect.decimal, encoding=dialect.encoding, quote=dialect.quote
        )
    return config


def _checked_file_sha256(path: Path) -> str:
    """The file's sha256, after checking it exists, is a file and is not empty."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError as error:
            raise SourceDataError(f"{path}: the path is a symbolic link loop ({error})") from error
        except OSError:
            raise SourceDataError(f"{path}: a symbolic link to a file that does not exist") from None
    if not path.exists():
        raise SourceDataError(f"{path}: source file not found")
    if not path.is_file():
        raise SourceDataError(f"{path}: source path is not a file")
    try:
        if path.stat().st_size == 0:
            raise SourceDataError(f"{path}: the file is empty (0 bytes)")
        return file_sha256(path)
    except OSError as error:
        raise SourceDataError(f"{path}: source file cannot be read: {error}") from error


def ensure_ledger(connection: duckdb.DuckDBPyConnection, schema: str) -> None:
    connection.execute(f"create schema if not exists {schema}")
    connection.execute(f"create table if not exists {schema}.ingested_files ({LEDGER_COLUMNS})")


def previous_ingestion(connection: duckdb.DuckDBPyConnection, schema: str, kind: str, sha256: str) -> dict | None:
    """The ledger entry of a file with this content already ingested as `kind`, or None."""
    if not table_exists(connection, schema, "ingested_files"):
        return None
    rows = connection.execute(
        f"""select load_id, source_file, row_count, loaded_at from {schema}.ingested_files
            where kind = ? and sha256 = ? order by loaded_at limit 1""",
        [kind, sha256],
    ).fetchall()
    if not rows:
        return None
    load_id, source_file, row_count, loaded_at = rows[0]
    return {"load_id": load_id, "source_file": source_file, "row_count": row_count, "loaded_at": loaded_at}


def _skip_message(path: Path, kind: str, previous: dict) -> str:
    return (
        f"{path}: this {kind} file was already loaded (same content, sha256) as {previous['load_id']} "
        f"from {previous['source_file']} at {previous['loaded_at']:%Y-%m-%d %H:%M}; skipped, nothing changed"
    )


def _next_load_time(connection, schema: str) -> datetime:
    """Now, or just after the latest accepted customer load if the clock is behind it: load times
    only grow, which the feature mart's incremental latest records rely on
    (dbt_project/macros/customer_history.sql)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    if not table_exists(connection, schema, "ingested_files"):
        return now
    latest = connection.execute(
        f"select max(loaded_at) from {schema}.ingested_files where kind = 'customers'"
    ).fetchone()[0]
    return now if latest is None or now > latest else latest + timedelta(microseconds=1)


def _record_ingestion(connection, schema, kind, sha256, path, load_id, row_count, loaded_at) -> None:
    ensure_ledger(connection, schema)
    connection.execute(
        f"insert into {schema}.ingested_files values (?, ?, ?, ?, ?, ?)",
        [kind, sha256, str(path), load_id, row_count, loaded_at],
    )


def read_csv_header(path: Path, delimiter: str, encoding: str = "utf-8", quote: str = '"') -> list[str]:
    try:
        with open_text(path, encoding=encoding) as handle:
            header = next(csv.reader(handle, delimiter=delimiter, quotechar=quote), None)
    except UnicodeDecodeError as error:
        raise SourceDataError(
            f"{path}: line 1 (header) is not valid {encoding.upper()} ({error.reason}): not a CSV text export, "
            "or another encoding (set the use case's source encoding)?"
        ) from error
    except (OSError, EOFError, csv.Error) as error:  # e.g. a truncated gzip file, a NUL byte
        raise SourceDataError(f"{path}: line 1 (header) cannot be read: {error}") from error
    if not header:
        raise SourceDataError(f"{path}: the file has no header line")
    return [name.strip() for name in header]


def _check_columns(
    path: Path, columns: list[str], required: list[str], delimiter: str, known: set[str] | None = None
) -> None:
    """Reject a header without every required column, naming the missing and unexpected columns.

    Columns are matched by name, never renamed or re-keyed: a header that does not match is an error.
    """
    missing = [c for c in required if c not in columns]
    if not missing:
        return
    if len(columns) == 1:
        found = [d for d in _DELIMITER_CANDIDATES if d != delimiter and d in columns[0]]
        if found:
            raise SourceDataError(
                f"{path}: the header has a single column; the file looks delimited by {found[0]!r}, "
                f"not {delimiter!r} (set the source delimiter)"
            )
    shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
    unexpected = [c for c in columns if known is not None and c not in known]
    extra = f"; unexpected column(s) {', '.join(unexpected[:12])}" if unexpected else ""
    raise SourceDataError(
        f"{path}: missing required column(s) {', '.join(missing)}{extra} "
        f"(found {len(columns)} columns: {shown}); the header must match the data dictionary"
    )


def _csv_error_message(path: Path, error: duckdb.Error) -> str:
    text = str(error)
    line = re.search(r"CSV Error on Line: (\d+)", text)
    where = f"line {line.group(1)} (data row {int(line.group(1)) - 1})" if line else "cannot be parsed"
    for pattern, problem in (
        (r"Expected Number of Columns: (\d+) Found: (\d+)", "expected {0} fields, found {1}"),
        (r"unterminated quote", "a quoted value is not closed (bad quoting)"),
        (r"Invalid unicode", "bytes that are not valid UTF-8 (re-export the file as UTF-8)"),
    ):
        match = re.search(pattern, text)
        if match:
            return f"{path}: {where}: {problem.format(*match.groups())}"
    return f"{path}: {where}: {text.splitlines()[0]}"


def _read_source(
    connection: duckdb.DuckDBPyConnection,
    path: Path,
    source_format: str,
    delimiter: str,
    required: list[str],
    dialect: CsvDialect | None = None,
    numeric_columns: list[str] = (),
    known: set[str] | None = None,
) -> list[str]:
    """Read the export into temp table `_source` (rows in file order), after checking its columns.

    With a decimal comma, the numeric columns' commas become points here, so that everything after
    ingestion (row rules, staging casts) reads one number format.
    """
    dialect = dialect or CsvDialect(delimiter=delimiter)
    literal = sql_literal(str(path))
    if source_format == "csv":
        header = read_csv_header(path, delimiter, dialect.encoding, dialect.quote)
        _check_columns(path, header, required, delimiter, known)
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if duplicated:
            raise SourceDataError(f"{path}: column(s) {', '.join(duplicated)} appear more than once in the header")
        # An explicit dialect and all columns as text: no sniffing that guesses differently per load,
        # values kept exactly as exported, and errors that name the offending line.
        columns = "{" + ", ".join(f"{sql_literal(c)}: 'VARCHAR'" for c in header) + "}"
        relation = (
            f"read_csv({literal}, header = true, delim = {sql_literal(delimiter)}, "
            f"quote = {sql_literal(dialect.quote)}, escape = {sql_literal(dialect.quote)}, columns = {columns}, "
            "auto_detect = false, strict_mode = true, null_padding = false, "
            f"encoding = {sql_literal(dialect.encoding)}, compression = '{'gzip' if is_gzip(path) else 'none'}')"
        )
        try:
            connection.execute(f"create or replace temp table _source as select * from {relation}")
        except duckdb.Error as error:
            if _is_resource_error(error):
                raise  # the machine's problem, reported by _resource_errors_reported
            raise SourceDataError(_csv_error_message(path, error)) from error
        if dialect.decimal != "." and numeric_columns:
            present = [c for c in numeric_columns if c in header]
            if present:
                connection.execute(
                    "update _source set "
                    + ", ".join(
                        f"{quote_identifier(c)} = replace({quote_identifier(c)}, {sql_literal(dialect.decimal)}, '.')"
                        for c in present
                    )
                )
        return header
    if source_format == "parquet":
        try:
            connection.execute(f"create or replace temp table _source as select * from read_parquet({literal})")
        except duckdb.Error as error:
            if _is_resource_error(error):
                raise
            raise SourceDataError(f"{path}: cannot be read as Parquet: {str(error).splitlines()[0]}") from error
        columns = [row[0] for row in connection.execute("describe _source").fetchall()]
        _check_columns(path, columns, required, delimiter, known)
        return columns
    raise SourceDataError(f"{path}: unsupported source format {source_format!r} (use csv or parquet)")


def _reject_repeated_rows(
    connection: duckdb.DuckDBPyConnection, path: Path, columns: list[str], row_count: int, limit: float
) -> None:
    """Reject an export without ids in which too many rows repeat an earlier row in every column.

    Without ids, identical rows cannot be told apart: a few are plausible (the bundled Caravan data
    repeats 10% of its rows: coarse categorical attributes), but an export that repeats a large share
    is broken (appended twice, a join fan-out), and its copies would land on both sides of a model's
    train/test split and inflate its test metrics.
    """
    partition = ", ".join(quote_identifier(c) for c in columns)
    repeated, example_row, example_original = connection.execute(
        f"""select count(*), min(source_row), arg_min(first_row, source_row) from (
                select source_row, first_value(source_row) over (partition by {partition} order by source_row)
                       as first_row
                from _identified)
            where source_row <> first_row"""
    ).fetchall()[0]
    if repeated / row_count > limit:
        raise SourceDataError(
            f"{path}: {repeated} of {row_count} rows ({repeated / row_count:.0%}) repeat an earlier row exactly "
            f"(first: data row {example_row} repeats data row {example_original}), above the limit of {limit:.0%} "
            "for an export without a customer id column: was the export appended twice?"
        )


def load_source(connection: duckdb.DuckDBPyConnection, **arguments) -> SourceLoad:
    """Load an export in bounded memory (see `_load_source` for what a load does): DuckDB reads, checks
    and writes it in SQL, spilling to disk above `MLOPS_LOAD_MEMORY_LIMIT` (default 1 GB), so a file
    of any size loads without holding it in RAM (benchmarks/streaming_load.py). Running out of memory
    or spill space raises LoadResourceError, never SourceDataError."""
    with bounded_memory(connection), _resource_errors_reported(connection, Path(arguments["path"])):
        return _load_source(connection, **arguments)


def _load_source(
    connection: duckdb.DuckDBPyConnection,
    *,
    path: Path,
    source_format: str,
    table: str,
    rules: list[ColumnRule],
    load_id: str,
    delimiter: str = ",",
    id_column: str | None = None,
    id_prefix: str = "C",
    max_quarantine_share: float = 0.05,
    max_exact_duplicate_share: float = 0.25,
    dialect: CsvDialect | None = None,
    assigned_ids: str = "row_position",
) -> SourceLoad:
    """Replace `table` with the export at `path`, or raise SourceDataError and leave it as it was.

    Customer ids come from `id_column` when the export has one; otherwise from the row position in
    the file (`<id_prefix>0000001` for the first data row), stable while the export keeps its order
    (`assigned_ids="row_position"`, the use case's full export), or, for a batch of other customers
    (`"next_free"`), continuing after the highest number any earlier load assigned
    (`<schema>.assigned_customer_ids`), so that ids never collide across batches. CSV files are read
    in `dialect` (delimiter, decimal mark, encoding, quote; default: `delimiter` and the defaults).
    Rows breaking the data dictionary's rules (see quality/rows.py) are recorded in
    `<schema>.quarantined_customers` and marked in the raw table's `_quarantine_reason`; staging
    leaves them out. If more than `max_quarantine_share` of the rows are unusable, the load is
    rejected: the problems are recorded, the raw table is not replaced. Every attempt is logged in
    `<schema>.raw_customer_loads`. An export without ids whose share of rows repeating an earlier row
    exactly exceeds `max_exact_duplicate_share` is rejected (see _reject_repeated_rows).
    """
    path = Path(path)
    schema = table.split(".")[0]
    sha256 = _checked_file_sha256(path)
    loaded_at = _next_load_time(connection, schema)
    previous = previous_ingestion(connection, schema, "customers", sha256)
    if previous is not None:
        return _skipped_load(connection, schema, path, source_format, sha256, load_id, loaded_at, previous)

    if assigned_ids not in ("row_position", "next_free"):
        raise ValueError(f"assigned_ids must be row_position or next_free, not {assigned_ids!r}")
    required = [r.column for r in rules if r.required] + ([id_column] if id_column else [])
    known = {r.column for r in rules} | ({id_column} if id_column else set()) | {"customer_id"}
    numeric = [r.column for r in rules if r.data_type in ("integer", "float")]
    columns = _read_source(
        connection, path, source_format, delimiter, required, dialect or CsvDialect(delimiter=delimiter), numeric, known
    )
    if id_column is None and "customer_id" in columns:
        # A `customer_id` column is the customers' ids, never renamed beside an assigned one.
        id_column = "customer_id"
    # Optional columns may be left out (e.g. the target of a batch whose outcomes come later).
    for rule in rules:
        if rule.column not in columns:
            connection.execute(f"alter table _source add column {quote_identifier(rule.column)} varchar")
    row_count = connection.execute("select count(*) from _source").fetchall()[0][0]
    if row_count == 0:
        raise SourceDataError(f"{path}: the file has a header but no data rows")

    first_number = 1
    if id_column is None and assigned_ids == "next_free" and table_exists(connection, schema, "assigned_customer_ids"):
        first_number += connection.execute(
            f"select coalesce(max(last_number), 0) from {schema}.assigned_customer_ids"
        ).fetchall()[0][0]
    if id_column is None:
        id_expression = f"printf('%s%07d', {sql_literal(id_prefix)}, source_row + {first_number - 1})"
        selected = "*"
    else:
        id_expression = f"cast({quote_identifier(id_column)} as varchar)"
        selected = f"* exclude ({quote_identifier(id_column)})"
    # `_source` holds the rows in file order (DuckDB preserves insertion order), so its rowid is the
    # data row number minus one: numbering needs no sort, and `_identified` stays in file order.
    connection.execute(
        f"""
        create or replace temp table _identified as
        select {id_expression} as customer_id, {selected}
        from (select rowid + 1 as source_row, * from _source)
        """
    )
    connection.execute("drop table _source")  # its memory and spill space, for the steps ahead
    if id_column is not None:
        missing_ids = connection.execute(
            "select min(source_row), count(*) from _identified where nullif(trim(customer_id), '') is null"
        ).fetchall()[0]
        if missing_ids[1]:
            raise SourceDataError(
                f"{path}: column {id_column}: {missing_ids[1]} row(s) without a customer id "
                f"(first: data row {missing_ids[0]})"
            )
    if id_column is None:
        _reject_repeated_rows(connection, path, columns, row_count, max_exact_duplicate_share)
    find_row_problems(connection, "_identified", rules, deduplicate_ids=id_column is not None)
    quarantined_rows = connection.execute("select count(distinct source_row) from _row_problems").fetchall()[0][0]
    summary = summarize_problems(connection, "_row_problems")
    share = quarantined_rows / row_count
    rejected = share > max_quarantine_share
    message = (
        f"{quarantined_rows} of {row_count} rows ({share:.1%}) cannot be used, above the limit of "
        f"{max_quarantine_share:.0%}: {summary}"
        if rejected
        else f"{quarantined_rows} row(s) quarantined" + (f": {summary}" if quarantined_rows else "")
    )

    with transaction(connection):
        connection.execute(f"create schema if not exists {schema}")
        connection.execute(f"create table if not exists {schema}.raw_customer_loads ({LOAD_LOG_COLUMNS})")
        connection.execute(f"create table if not exists {schema}.quarantined_customers ({QUARANTINE_COLUMNS})")
        connection.execute(
            f"""insert into {schema}.quarantined_customers
                select ?, ?, source_row, customer_id, column_name, raw_value, reason, ?
                from _row_problems""",
            [load_id, str(path), loaded_at],
        )
        outlier_rows = 0
        if not rejected:
            find_outliers(connection, "_identified", rules)
            outlier_rows = connection.execute("select count(distinct customer_id) from _outliers").fetchall()[0][0]
            _write_raw_table(connection, table, [load_id, str(path), loaded_at])
        connection.execute(
            f"insert into {schema}.raw_customer_loads values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                load_id,
                str(path),
                source_format,
                sha256,
                row_count,
                len(columns),
                quarantined_rows,
                outlier_rows,
                "rejected" if rejected else "accepted",
                message,
                loaded_at,
            ],
        )
        if not rejected:
            _record_ingestion(connection, schema, "customers", sha256, path, load_id, row_count, loaded_at)
            if id_column is None:
                connection.execute(
                    f"create table if not exists {schema}.assigned_customer_ids ({ASSIGNED_IDS_COLUMNS})"
                )
                connection.execute(
                    f"insert into {schema}.assigned_customer_ids values (?, ?, ?, ?)",
                    [load_id, str(path), first_number, first_number + row_count - 1],
                )
    if rejected:
        raise SourceDataError(f"{path}: {message}")

    known = {r.column for r in rules} | ({id_column} if id_column else set())
    return SourceLoad(
        load_id=load_id,
        source_file=str(path),
        source_format=source_format,
        sha256=sha256,
        row_count=row_count,
        columns=columns,
        extra_columns=[c for c in columns if c not in known],
        quarantined_rows=quarantined_rows,
        outlier_rows=outlier_rows,
        quarantine_summary=summary,
        loaded_at=loaded_at,
    )


def _write_raw_table(connection: duckdb.DuckDBPyConnection, table: str, load_values: list) -> None:
    """Replace `table` with `_identified` in file order, each row with its quarantine reason and outlier
    columns. The rows are written as scanned (in file order, no sort: a sorted write of a 2 GB export
    ran out of a 1 GB memory limit) and the few quarantined and outlier rows are then updated in place.
    """
    connection.execute(
        f"""create or replace table {table} as
            select * exclude (source_row), ? as _load_id, ? as _source_file, ?::timestamp as _loaded_at,
                   source_row as _source_row, null::varchar as _quarantine_reason,
                   null::varchar as _outlier_columns
            from _identified""",
        load_values,
    )
    connection.execute(
        f"""update {table} as raw set _quarantine_reason = reasons.reason
            from (select source_row, string_agg(column_name || ': ' || reason, '; ') as reason
                  from _row_problems group by source_row) as reasons
            where raw._source_row = reasons.source_row"""
    )
    connection.execute(
        f"""update {table} as raw set _outlier_columns = outliers.columns
            from (select customer_id, string_agg(column_name, ', ' order by column_name) as columns
                  from _outliers group by customer_id) as outliers
            where raw.customer_id = outliers.customer_id and raw._quarantine_reason is null"""
    )


def _skipped_load(connection, schema, path, source_format, sha256, load_id, loaded_at, previous) -> SourceLoad:
    """A file already ingested: logged as skipped, the raw table left as it is."""
    message = _skip_message(path, "customers", previous)
    connection.execute(
        f"insert into {schema}.raw_customer_loads values (?, ?, ?, ?, ?, null, 0, 0, 'skipped', ?, ?)",
        [load_id, str(path), source_format, sha256, previous["row_count"], message, loaded_at],
    )
    return SourceLoad(
        load_id=load_id,
        source_file=str(path),
        source_format=source_format,
        sha256=sha256,
        row_count=previous["row_count"],
        columns=[],
        extra_columns=[],
        quarantined_rows=0,
        outlier_rows=0,
        quarantine_summary="no problems",
        loaded_at=loaded_at,
        skipped=True,
        message=message,
    )


def previous_accepted_load(
    connection: duckdb.DuckDBPyConnection, schema: str, before_load_id: str, raw_asset: str | None = None
) -> pd.Series | None:
    """The last load before `before_load_id` that was accepted and, if `raw_asset` is given, whose
    raw data passed its critical expectations (per `<schema>.validation_results`)."""
    if not table_exists(connection, schema, "raw_customer_loads"):
        return None
    failed_checks = ""
    if raw_asset and table_exists(connection, schema, "validation_results"):
        failed_checks = f"""and not exists (
            select 1 from {schema}.validation_results v
            where v.load_id = loads.load_id and v.asset = {sql_literal(raw_asset)}
              and not v.success and v.severity = 'critical')"""
    rows = connection.execute(
        f"""select * from {schema}.raw_customer_loads as loads
            where status = 'accepted' and load_id <> ?
              and loaded_at <= (select coalesce(max(loaded_at), now()::timestamp)
                                from {schema}.raw_customer_loads where load_id = ?)
              {failed_checks}
            order by loaded_at desc limit 1""",
        [before_load_id, before_load_id],
    ).fetchdf()
    return None if rows.empty else rows.iloc[0]


@dataclass(frozen=True)
class OutcomeLoad:
    load_id: str
    source_file: str
    sha256: str
    rows: int
    buyers: int
    duplicates_superseded: int
    loaded_at: datetime
    skipped: bool = False
    message: str = ""
    repeated_outcomes: int = 0


def ensure_outcomes_table(connection: duckdb.DuckDBPyConnection, schema: str, target_column: str) -> None:
    """The outcomes table dbt reads exists from the first customer load on, empty until outcomes arrive."""
    connection.execute(f"create schema if not exists {schema}")
    connection.execute(
        f"""create table if not exists {schema}.raw_outcomes (
                customer_id varchar, {quote_identifier(target_column)} varchar, _load_id varchar,
                _source_file varchar, _loaded_at timestamp, _source_row bigint)"""
    )


def load_outcomes(connection: duckdb.DuckDBPyConnection, **arguments) -> OutcomeLoad:
    """Append an outcomes file (see `_load_outcomes`) in bounded memory, as load_source does."""
    with bounded_memory(connection), _resource_errors_reported(connection, Path(arguments["path"])):
        return _load_outcomes(connection, **arguments)


def _load_outcomes(
    connection: duckdb.DuckDBPyConnection,
    *,
    path: Path,
    schema: str,
    target_column: str,
    allowed_values: tuple[str, ...],
    load_id: str,
    source_format: str = "csv",
    delimiter: str = ",",
    dialect: CsvDialect | None = None,
    id_column: str = "customer_id",
    positive_values: tuple[str, ...] | None = None,
) -> OutcomeLoad:
    """Append a campaign-outcome file (customer_id, target) to `<schema>.raw_outcomes`, or raise
    SourceDataError naming the file, row and column and append nothing. Within a file, a customer's
    last row wins; across files, the latest load wins (see stg_<use case>__outcomes). A file already
    ingested (same sha256, see the ledger) is skipped; an outcome already recorded for the customer on
    the same day with the same value is not appended again. The file is read in the use case's
    `dialect`, its customer ids from `id_column` (the use case's id column, else `customer_id`);
    `positive_values` (default: the first allowed value) count as buyers."""
    path = Path(path)
    sha256 = _checked_file_sha256(path)
    loaded_at = datetime.now(UTC).replace(tzinfo=None)
    previous = previous_ingestion(connection, schema, "outcomes", sha256)
    if previous is not None:
        return OutcomeLoad(
            load_id,
            str(path),
            sha256,
            0,
            0,
            0,
            loaded_at,
            skipped=True,
            message=_skip_message(path, "outcomes", previous),
        )
    _read_source(
        connection,
        path,
        source_format,
        delimiter,
        [id_column, target_column],
        dialect or CsvDialect(delimiter=delimiter),
        known={id_column, target_column},
    )
    connection.execute(
        f"""create or replace temp table _outcomes as
            select rowid + 1 as source_row,  -- _source is in file order (see _load_source)
                   nullif(trim(cast({quote_identifier(id_column)} as varchar)), '') as customer_id,
                   nullif(trim(cast({quote_identifier(target_column)} as varchar)), '') as outcome
            from _source"""
    )
    connection.execute("drop table _source")
    rows = connection.execute("select count(*) from _outcomes").fetchall()[0][0]
    if rows == 0:
        raise SourceDataError(f"{path}: the file has a header but no data rows")
    allowed = ", ".join(sql_literal(v) for v in allowed_values)
    bad = connection.execute(
        f"""select source_row, customer_id, outcome from _outcomes
            where customer_id is null or outcome is null or outcome not in ({allowed})
            order by source_row limit 5"""
    ).fetchall()
    if bad:
        count = connection.execute(
            f"select count(*) from _outcomes where customer_id is null or outcome is null or outcome not in ({allowed})"
        ).fetchall()[0][0]
        first_row, customer, value = bad[0]
        column = id_column if customer is None else target_column
        raise SourceDataError(
            f"{path}: {count} row(s) without a customer id or with an outcome not in {'/'.join(allowed_values)} "
            f"(first: data row {first_row}, column {column}, value {value if customer else None!r})"
        )
    # Counted before the append: after its commit nothing may fail (a failure says nothing changed).
    positives = ", ".join(sql_literal(v) for v in (positive_values or allowed_values[:1]))
    buyers, distinct = connection.execute(
        f"select count(*) filter (where outcome in ({positives})), count(distinct customer_id) from _outcomes"
    ).fetchall()[0]
    with transaction(connection):
        ensure_outcomes_table(connection, schema, target_column)
        target = quote_identifier(target_column)
        # A customer's last row in the file; not again if the same outcome was recorded the same day.
        appended = connection.execute(
            f"""insert into {schema}.raw_outcomes
                select customer_id, outcome, ?, ?, ?::timestamp, source_row
                from (select * from _outcomes
                      qualify row_number() over (partition by customer_id order by source_row desc) = 1) as new
                where not exists (
                    select 1 from {schema}.raw_outcomes as old
                    where old.customer_id = new.customer_id and old.{target} = new.outcome
                      and cast(old._loaded_at as date) = cast(?::timestamp as date))""",
            [load_id, str(path), loaded_at, loaded_at],
        ).fetchall()[0][0]
        _record_ingestion(connection, schema, "outcomes", sha256, path, load_id, rows, loaded_at)
    return OutcomeLoad(
        load_id, str(path), sha256, rows, buyers, rows - distinct, loaded_at, repeated_outcomes=distinct - appended
    )
