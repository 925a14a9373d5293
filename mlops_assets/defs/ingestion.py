"""Ingestion: a use case's customer export, loaded as-is into `<use case>.raw_customers`."""

from datetime import UTC, datetime
from typing import Literal

import dagster as dg
from pydantic import Field

from mlops_assets.defs.config import camel, config_class
from mlops_assets.defs.io_managers import Warehouse, table_metadata
from mlops_assets.defs.resources import WAREHOUSE_POOL
from mlops_assets.ingestion import load_source
from mlops_assets.settings import resolve_project_path
from mlops_assets.use_cases import UseCase


class IngestionConfig(dg.Config):
    source_path: str = Field(description="Customer export to load (CSV or Parquet); relative to the project root.")
    source_format: Literal["csv", "parquet"] = Field("csv", description="File format of the export.")
    delimiter: str = Field(",", description="Field delimiter (CSV only).")
    id_column: str | None = Field(
        None, description="Column holding the customer id; empty: ids are assigned from the row position."
    )


def build_ingestion_assets(use_case: UseCase) -> list[dg.AssetsDefinition]:
    source = use_case.source
    Config = config_class(
        f"{camel(use_case.name)}IngestionConfig",
        IngestionConfig,
        {
            "source_path": source.path,
            "source_format": source.format,
            "delimiter": source.delimiter,
            "id_column": source.id_column,
        },
    )
    raw_table = f"{use_case.name}.raw_customers"

    @dg.asset(
        key=[use_case.name, "raw_customers"],
        group_name="ingestion",
        kinds={"duckdb", "csv" if source.format == "csv" else "parquet"},
        pool=WAREHOUSE_POOL,
        description=(
            f"{use_case.title}: the customer export loaded as-is (every column as in the file), "
            "with a customer_id, the load's id, source file, time and source row, and per row the "
            "reason it is quarantined (if so) and its outlier columns. Each load attempt is logged in "
            f"`{use_case.name}.raw_customer_loads`, unusable rows in `{use_case.name}.quarantined_customers`."
        ),
    )
    def raw_customers(context: dg.AssetExecutionContext, config: Config, warehouse: Warehouse):
        path = resolve_project_path(config.source_path)
        load_id = f"load-{datetime.now(UTC):%Y%m%dT%H%M%S}-{context.run.run_id[:8]}"
        with warehouse.get_connection() as connection:
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
            )
            metadata = table_metadata(connection, raw_table, load.row_count)
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

    return [raw_customers]
