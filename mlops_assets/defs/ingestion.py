"""Ingestion: a use case's customer export, loaded as-is into `<use case>.raw_customers`."""

from datetime import UTC, datetime
from typing import Literal

import dagster as dg
from pydantic import Field

from mlops_assets.defs.config import camel, config_class
from mlops_assets.defs.io_managers import Warehouse, table_metadata
from mlops_assets.defs.resources import WAREHOUSE_POOL, Notifier
from mlops_assets.ingestion import (
    CsvDialect,
    LoadResourceError,
    SourceDataError,
    ensure_outcomes_table,
    load_outcomes,
    load_source,
)
from mlops_assets.settings import resolve_project_path
from mlops_assets.use_cases import UseCase


class IngestionConfig(dg.Config):
    source_path: str = Field(description="Customer export to load (CSV or Parquet); relative to the project root.")
    source_format: Literal["csv", "parquet"] = Field("csv", description="File format of the export.")
    delimiter: str = Field(",", description="Field delimiter (CSV only).")
    decimal: Literal[".", ","] = Field(".", description="Decimal mark of numbers (CSV only).")
    encoding: Literal["utf-8", "utf-16", "latin-1"] = Field("utf-8", description="Text encoding (CSV only).")
    quote: str = Field('"', description="Quote character (CSV only).")
    id_column: str | None = Field(
        None, description="Column holding the customer id; empty: ids are assigned by ingestion."
    )
    assigned_ids: Literal["row_position", "next_free"] = Field(
        "row_position",
        description=(
            "Without an id column: row_position (the full export, same customers in the same order) or "
            "next_free (a batch of other customers: numbers after every id assigned so far)."
        ),
    )


class OutcomesConfig(dg.Config):
    outcomes_path: str = Field(
        "",
        description=(
            "Outcome file to append (the customer id and the target column, in the use case's CSV dialect); "
            "empty: nothing new."
        ),
    )
    source_format: Literal["csv", "parquet"] = Field("csv", description="File format of the outcome file.")


def build_ingestion_assets(use_case: UseCase) -> list[dg.AssetsDefinition]:
    source = use_case.source
    Config = config_class(
        f"{camel(use_case.name)}IngestionConfig",
        IngestionConfig,
        {
            "source_path": source.path,
            "source_format": source.format,
            "delimiter": source.delimiter,
            "decimal": source.decimal,
            "encoding": source.encoding,
            "quote": source.quote,
            "id_column": source.id_column,
        },
    )
    name = use_case.name
    raw_table = f"{name}.raw_customers"
    target_column, target_values = use_case.target_source()

    @dg.asset(
        key=[use_case.name, "raw_customers"],
        group_name="ingestion",
        kinds={"duckdb", "csv" if source.format == "csv" else "parquet"},
        pool=WAREHOUSE_POOL,
        description=(
            f"{use_case.title}: the customer export loaded as-is (every column as in the file), "
            "with a customer_id, the load's id, source file, time and source row, and per row the "
            "reason it is quarantined (if so) and its outlier columns. A file already ingested (same "
            f"sha256, ledger `{use_case.name}.ingested_files`) is skipped. Each load attempt is logged in "
            f"`{use_case.name}.raw_customer_loads`, unusable rows in `{use_case.name}.quarantined_customers`."
        ),
    )
    def raw_customers(context: dg.AssetExecutionContext, config: Config, warehouse: Warehouse, notifier: Notifier):
        path = resolve_project_path(config.source_path)
        load_id = f"load-{datetime.now(UTC):%Y%m%dT%H%M%S}-{context.run.run_id[:8]}"
        with warehouse.get_connection() as connection:
            try:
                load = load_source(
                    connection,
                    path=path,
                    source_format=config.source_format,
                    delimiter=config.delimiter,
                    table=raw_table,
                    rules=use_case.row_rules(),
                    load_id=load_id,
                    id_column=config.id_column,
                    id_prefix=source.id_prefix,
                    max_quarantine_share=use_case.quality.max_quarantine_share,
                    dialect=CsvDialect(config.delimiter, config.decimal, config.encoding, config.quote),
                    assigned_ids=config.assigned_ids,
                )
            except (SourceDataError, LoadResourceError) as error:
                # A bad file is a data-quality alert; running out of memory or disk is the machine's.
                resources = isinstance(error, LoadResourceError)
                kind, outcome = ("load_resources", "failed") if resources else ("data_quality", "rejected")
                notifier.notify(
                    context, name, kind, f"load {outcome}: {error}", {"load_id": load_id}, "error", connection
                )
                raise
            ensure_outcomes_table(connection, name, target_column)
            metadata = table_metadata(connection, raw_table)
        if load.skipped:
            context.log.info(load.message)
            return dg.MaterializeResult(
                metadata={**metadata, "load_id": load.load_id, "skipped": True, "message": load.message}
            )
        if load.extra_columns:
            context.log.warning(
                f"{path}: columns not in the data dictionary were kept but are not used: "
                f"{', '.join(load.extra_columns)}"
            )
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "load_id": load.load_id,
                "source_file": dg.MetadataValue.path(load.source_file),
                "source_sha256": load.sha256,
                "loaded_at": load.loaded_at.isoformat(timespec="seconds"),
                "extra_columns": ", ".join(load.extra_columns) or "none",
                "quarantined_rows": load.quarantined_rows,
                "quarantine_share": load.quarantined_rows / load.row_count,
                "quarantine_summary": load.quarantine_summary,
                "outlier_rows": load.outlier_rows,
            }
        )

    @dg.asset(
        key=[name, "raw_outcomes"],
        group_name="ingestion",
        kinds={"duckdb", "csv"},
        pool=WAREHOUSE_POOL,
        description=(
            f"Campaign outcomes reported for scored customers (customer_id, {target_column} "
            f"{'/'.join(target_values)}), appended per file, never overwritten. They become the labels of "
            "the customers they name (see stg_outcomes), and let monitoring measure realized performance. "
            f"A file already ingested (same sha256, ledger `{name}.ingested_files`) is skipped."
        ),
    )
    def raw_outcomes(context: dg.AssetExecutionContext, config: OutcomesConfig, warehouse: Warehouse):
        load_id = f"outcomes-{datetime.now(UTC):%Y%m%dT%H%M%S}-{context.run.run_id[:8]}"
        with warehouse.get_connection() as connection:
            ensure_outcomes_table(connection, name, target_column)
            metadata: dict = {}
            if config.outcomes_path:
                outcomes_path = resolve_project_path(config.outcomes_path)
                loaded = load_outcomes(
                    connection,
                    path=outcomes_path,
                    schema=name,
                    target_column=target_column,
                    allowed_values=target_values,
                    load_id=load_id,
                    source_format="parquet" if outcomes_path.suffix == ".parquet" else config.source_format,
                    delimiter=source.delimiter,
                    dialect=CsvDialect.of(source),
                    id_column=source.id_column or "customer_id",
                    positive_values=use_case.positive_target_values(),
                )
                metadata = {
                    "load_id": loaded.load_id,
                    "source_file": dg.MetadataValue.path(loaded.source_file),
                    "source_sha256": loaded.sha256,
                    "new_outcomes": loaded.rows - loaded.duplicates_superseded - loaded.repeated_outcomes,
                    "new_buyers": loaded.buyers,
                    "duplicates_superseded": loaded.duplicates_superseded,
                    "repeated_outcomes_skipped": loaded.repeated_outcomes,
                    "skipped": loaded.skipped,
                }
                if loaded.skipped:
                    context.log.info(loaded.message)
                    metadata.update({"new_outcomes": 0, "message": loaded.message})
            else:
                metadata = {"new_outcomes": 0, "note": "no outcome file given (outcomes_path empty)"}
            metadata.update(table_metadata(connection, f"{name}.raw_outcomes"))
        return dg.MaterializeResult(metadata=metadata)

    return [raw_customers, raw_outcomes]
