"""What the read-only commands (`mlops models`, `model-card`, `audit`) need, and nothing heavier.

These commands answer in well under a second because this module imports DuckDB only: no Dagster,
Great Expectations, LightGBM or pandas (pandas alone costs about 1 s per process here;
tests/test_read_commands.py keeps it that way). The registry's own functions (registry.py, for the
assets and the review pages, which return DataFrames) run the same SQL, defined here.

While a run holds the warehouse, DuckDB refuses every other process, readers included. So each
publication also writes a **read copy** of the registry, `<published>/<use case>_registry.duckdb`
(`write_read_copy`: the registry without model texts and drift profiles, the model cards and the score
history, swapped in atomically like the published scores), and a read command that finds the warehouse
locked reads that copy instead, saying so and how old it is.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import duckdb

from mlops_assets.warehouse import attached, is_lock_conflict, table_exists

AUDIT_VIEW = "customer_score_audit"
READ_COPY_STORAGE_VERSION = "v1.0.0"
# Tables of the read copy, with the columns left out (large, and no read command shows them).
READ_COPY_TABLES = {
    "model_registry": ("model_text", "reference_profile"),
    "model_status_events": (),
    "model_validations": (),
    "model_cards": (),
    "score_history": (),
}


def models_overview_sql(schema: str) -> str:
    """Every model with its current status and its latest validation: the primary metric of the model
    and of the champion it was compared with, on the same customers (`evaluation_set` says which),
    the difference and its bootstrap interval, and the decision."""
    return f"""
        with status as (
            select model_version, status, actor, changed_at,
                   row_number() over (partition by model_version order by event_seq desc) as latest
            from {schema}.model_status_events
        ),
        validation as (
            select *, row_number() over (partition by model_version order by validated_at desc) as latest
            from {schema}.model_validations
        )
        select r.model_version, s.status, s.actor as status_by, s.changed_at as status_at, r.trained_at,
               v.decision, v.champion_version as compared_with,
               coalesce(json_extract_string(v.comparison, '$.set'), 'random_split') as evaluation_set,
               v.evaluation_rows as evaluation_customers, v.primary_metric,
               round(v.challenger_value, 4) as value, round(v.champion_value, 4) as champion_value,
               round(v.difference, 4) as difference, round(v.difference_low, 4) as ci_low,
               round(v.difference_high, 4) as ci_high,
               json_extract_string(r.lineage, '$.trigger') as trigger
        from {schema}.model_registry r
        left join status s on s.model_version = r.model_version and s.latest = 1
        left join validation v on v.model_version = r.model_version and v.latest = 1
        order by r.trained_at, r.model_version
        """


def audit_sql(schema: str, on_date: str | None) -> str:
    """Every score published for a customer (parameter 1; the date, parameter 2, if `on_date`)."""
    where = "where customer_id = ?" + (" and cast(published_at as date) = cast(? as date)" if on_date else "")
    return f"select * from {schema}.{AUDIT_VIEW} {where} order by published_at"


def models_overview_rows(connection: duckdb.DuckDBPyConnection, schema: str) -> tuple[list[str], list[tuple]]:
    cursor = connection.execute(models_overview_sql(schema))
    return [column[0] for column in cursor.description], cursor.fetchall()


def audit_rows(
    connection: duckdb.DuckDBPyConnection, schema: str, customer_id: str, on_date: str | None = None
) -> list[SimpleNamespace]:
    cursor = connection.execute(audit_sql(schema, on_date), [customer_id, on_date] if on_date else [customer_id])
    names = [column[0] for column in cursor.description]
    return [SimpleNamespace(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def format_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A plain text table (right-aligned like pandas' `to_string(index=False)`), without pandas."""
    cells = [[("" if value is None else str(value)) for value in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    lines = [" ".join(name.rjust(width) for name, width in zip(columns, widths, strict=True))]
    lines += [" ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def read_copy_path(published_dir: Path, schema: str) -> Path:
    return Path(published_dir) / f"{schema}_registry.duckdb"


@contextmanager
def reading_connection(warehouse: Path, published_dir: Path, schema: str, say) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse, read-only; while a run holds it, the read copy of the last publication (`say`
    is told which and how old). Raises SystemExit with a clear message when neither can be read."""
    warehouse, copy = Path(warehouse), read_copy_path(published_dir, schema)
    if not warehouse.exists():
        raise SystemExit(f"{warehouse}: no warehouse yet; run `mlops run` first")
    try:
        connection = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.IOException as error:
        if not is_lock_conflict(error):
            raise SystemExit(f"{warehouse}: cannot be read: {str(error).splitlines()[0]}") from error
        if not copy.exists():
            raise SystemExit(
                f"{warehouse} is in use by a run, and there is no read copy of the registry yet "
                f"({copy}; each publication writes one): try again when the run has finished"
            ) from error
        connection = duckdb.connect(str(copy), read_only=True)
        written = connection.execute("select max(copied_at) from read_copy").fetchall()[0][0]
        say(f"The warehouse is in use by a run: read from the copy of the last publication ({copy}, {written} UTC).")
    try:
        yield connection
    finally:
        connection.close()


def read_copy_spare_path(destination: Path) -> Path:
    """The copy before the current one, kept to be brought level in place by the next publication."""
    destination = Path(destination)
    return destination.with_name(f".{destination.name}.spare")


def write_read_copy(connection: duckdb.DuckDBPyConnection, schema: str, destination: Path) -> Path:
    """Copy the registry tables the read commands use from the warehouse (`connection`, read-write)
    into a DuckDB file, with the audit view, and swap it in over `destination` atomically.

    Hand-written rather than DuckDB's `COPY FROM DATABASE` because that copies every table (the model
    texts, the raw loads, the marts), and readers need a small file that no run ever holds open.

    The score history grows by a publication every run and is nearly all of the copy. Two files take
    turns: the copy readers open (`destination`) and the one before it (`read_copy_spare_path`). Each
    publication brings the spare level in place (`_sync_history` applies the publications it lacks
    or that were taken back; the small tables are written afresh), then swaps it in and keeps the
    replaced copy as the next spare (a hard link, so readers always open a complete file). So a
    publication writes the last two publications, whatever the history's length, at the price of a
    second file on disk: swiss_bank at 1M customers, 30-34M rows of history (600-790 MB), a
    publication of 1M rows each time: 0.70-0.92 s this way, 1.55-1.77 s as a byte copy of the
    file plus the new publication (growing with the file), 6.6 s rewritten whole (21M rows). When
    the spare cannot be used (none yet, a reader still holds it because it opened the copy before the
    last swap, another layout, any DuckDB or file error), the new copy starts from a byte copy of the
    current one, else from scratch.
    """
    # publishing imports pandas, which the read commands must not load: imported when writing only.
    from mlops_assets.publishing import remove_abandoned_temporaries, remove_database_file, temporary_path

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(destination)
    spare, temporary = read_copy_spare_path(destination), temporary_path(destination)
    written = None
    try:
        if spare.exists():
            try:
                _fill_read_copy(connection, schema, spare, incremental=True)
                written = spare
            except (duckdb.Error, OSError, _OutOfStep):
                remove_database_file(spare)  # a reader holding it keeps its own open file
        if written is None:
            try:
                shutil.copyfile(destination, temporary)  # FileNotFoundError before the first copy
                _fill_read_copy(connection, schema, temporary, incremental=True)
            except (duckdb.Error, OSError, _OutOfStep):
                remove_database_file(temporary)
                _fill_read_copy(connection, schema, temporary, incremental=False)
            written = temporary
        with duckdb.connect(str(written)) as copy:
            if all(table_exists(copy, schema, t) for t in ("score_history", "model_registry", "model_validations")):
                from mlops_assets.registry import create_audit_view

                create_audit_view(copy, schema)
            copy.execute("checkpoint")
        with open(written, "rb") as handle:
            os.fsync(handle.fileno())
        return _swap_keeping_spare(written, destination, spare)
    finally:
        remove_database_file(temporary)  # left only if the copy failed


def _swap_keeping_spare(written: Path, destination: Path, spare: Path) -> Path:
    """`written` becomes `destination`, and the copy it replaces the spare, each rename atomic."""
    from mlops_assets.publishing import fsync_directory, remove_database_file, temporary_path

    replaced = temporary_path(destination)
    try:
        os.link(destination, replaced)
    except FileNotFoundError:  # the first copy
        replaced = None
    except OSError:  # a file system without hard links: no spare, the next copy starts from a byte copy
        replaced = None
        remove_database_file(spare)
    os.replace(written, destination)
    if replaced is not None:
        os.replace(replaced, spare)
    fsync_directory(destination.parent)
    return destination


class _OutOfStep(Exception):
    """The previous read copy's history cannot be brought level with the warehouse's."""


def _fill_read_copy(connection: duckdb.DuckDBPyConnection, schema: str, path: Path, *, incremental: bool) -> None:
    warehouse = connection.execute("select current_database()").fetchone()[0]
    with attached(connection, path, "registry_read_copy", READ_COPY_STORAGE_VERSION) as alias:
        connection.execute(f"create schema if not exists {alias}.{schema}")
        for table, left_out in READ_COPY_TABLES.items():
            target = f"{alias}.{schema}.{table}"
            if not table_exists(connection, schema, table, catalog=warehouse):
                connection.execute(f"drop table if exists {target}")
            elif table == "score_history" and incremental and table_exists(connection, schema, table, catalog=alias):
                _sync_history(connection, f"{schema}.{table}", target)
            else:
                columns = f"* exclude ({', '.join(left_out)})" if left_out else "*"
                connection.execute(f"create or replace table {target} as select {columns} from {schema}.{table}")
        connection.execute(
            f"create or replace table {alias}.read_copy as select ?::timestamp as copied_at",
            [datetime.now(UTC).replace(tzinfo=None, microsecond=0)],
        )


def _sync_history(connection: duckdb.DuckDBPyConnection, source: str, copied: str) -> None:
    """Bring `copied` level with `source`. The history is written and taken back a publication at a
    time (one transaction each) and never updated, so publications are added or removed whole."""
    columns = [
        connection.execute(f"select column_name, column_type from (describe {t})").fetchall() for t in (source, copied)
    ]
    if columns[0] != columns[1]:
        raise _OutOfStep(f"{copied} has other columns than {source}")
    # A handful of publication ids: compare them rather than anti-join the histories row by row
    # (21M rows: 1.8 s for the two anti-joins).
    source_ids, copied_ids = (
        {row[0] for row in connection.execute(f"select distinct publication_id from {t}").fetchall()}
        for t in (source, copied)
    )
    if withdrawn := sorted(copied_ids - source_ids):
        connection.execute(f"delete from {copied} where publication_id in (select unnest(?))", [withdrawn])
    if added := sorted(source_ids - copied_ids):
        connection.execute(
            f"insert into {copied} select * from {source} where publication_id in (select unnest(?))", [added]
        )
    counts = [connection.execute(f"select count(*) from {t}").fetchone()[0] for t in (source, copied)]
    if counts[0] != counts[1]:
        raise _OutOfStep(f"{copied} holds {counts[1]} rows against {counts[0]} in {source}")
