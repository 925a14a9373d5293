"""Feature engineering in dbt: seeds, staging, intermediate and mart models, each one asset.

Keys follow the DuckDB relation, `<schema>/<alias>` (e.g. `caravan/customer_features`), so each use
case's dbt models sit under its key prefix next to its Python assets, and dbt tests become asset checks.
"""

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from mlops_assets.defs.io_managers import Warehouse, table_metadata
from mlops_assets.defs.resources import WAREHOUSE_POOL, dbt_project


class UseCaseDbtTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot"):
            return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["alias"]])
        return super().get_asset_key(dbt_resource_props)


def _column_descriptions(spec: dg.AssetSpec) -> dict[str, str]:
    schema = spec.metadata.get("dagster/column_schema")
    return {column.name: column.description for column in schema.columns} if schema else {}


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=UseCaseDbtTranslator(),
    pool=WAREHOUSE_POOL,
)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: Warehouse):
    # dbt-duckdb holds the warehouse for the whole build, and dagster-dbt's fetch_row_counts() leaves a
    # connection open in this process that later blocks the IO manager. So the events are collected,
    # and row counts and column types are read once dbt has exited, with a connection closed after.
    # The dbt profile reads the warehouse path from the environment of the dbt process.
    os.environ["MLOPS_DUCKDB_PATH"] = warehouse.database
    invocation = dbt.cli(["build"], context=context, raise_on_error=False)
    events = list(invocation.stream())
    with warehouse.get_connection() as connection:
        for event in events:
            if isinstance(event, dg.Output):
                key = context.asset_key_for_output(event.output_name)
                spec = context.assets_def.specs_by_key[key]
                relation = ".".join(key.path)
                event = event.with_metadata(
                    {
                        **event.metadata,
                        **table_metadata(connection, relation, descriptions=_column_descriptions(spec)),
                    }
                )
            yield event
    if not invocation.is_successful():
        raise invocation.get_error() or RuntimeError("dbt build failed")
