"""Feature engineering in dbt: seeds, staging, intermediate and mart models, each one asset.

Keys follow the DuckDB relation, `<schema>/<alias>` (e.g. `caravan/customer_features`), so each use
case's dbt models sit under its key prefix next to its Python assets, and dbt tests become asset checks.
"""

import os
import shutil
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from mlops_assets.defs.io_managers import Warehouse, table_metadata
from mlops_assets.defs.resources import WAREHOUSE_POOL, dbt_project

PARTIAL_PARSE_FILE = "partial_parse.msgpack"


class UseCaseDbtTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot"):
            return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["alias"]])
        return super().get_asset_key(dbt_resource_props)


def _column_descriptions(spec: dg.AssetSpec) -> dict[str, str]:
    schema = spec.metadata.get("dagster/column_schema")
    return {column.name: column.description for column in schema.columns} if schema else {}


def _keep_partial_parse_state(run_target: Path, state: Path) -> None:
    produced = Path(run_target) / PARTIAL_PARSE_FILE
    if produced.exists():
        temporary = state / f".{PARTIAL_PARSE_FILE}.tmp"
        shutil.copyfile(produced, temporary)
        os.replace(temporary, state / PARTIAL_PARSE_FILE)


def _build_dbt_step(name: str, select: str, description: str) -> dg.AssetsDefinition:
    @dbt_assets(
        manifest=dbt_project.manifest_path,
        project=dbt_project,
        select=select,
        name=name,
        dagster_dbt_translator=UseCaseDbtTranslator(),
        pool=WAREHOUSE_POOL,
    )
    def dbt_step(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: Warehouse):
        # The dbt profile reads the warehouse path from the environment of the dbt process.
        os.environ["MLOPS_DUCKDB_PATH"] = warehouse.database
        # dbt re-parses the whole project (seconds) unless it finds a partial-parse state made with the
        # same profile. dagster-dbt copies that state from DBT_TARGET_PATH into each run's target
        # folder; keeping one state per warehouse (refreshed after each build) lets every build after
        # the first in a warehouse parse only what changed.
        state = Path(warehouse.database).parent / "dbt_state"
        state.mkdir(exist_ok=True)
        os.environ["DBT_TARGET_PATH"] = str(state)
        invocation = dbt.cli(["build"], context=context, raise_on_error=False)
        # dbt-duckdb holds the warehouse for the whole build, and dagster-dbt's fetch_row_counts() leaves a
        # connection open in this process that later blocks the IO manager. So the events are collected,
        # and row counts and column types are read once dbt has exited, with a connection closed after.
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
        _keep_partial_parse_state(invocation.target_path, state)
        if not invocation.is_successful():
            raise invocation.get_error() or RuntimeError("dbt build failed")
        # Each build writes its artefacts (manifest, run results, log) to a folder of its own; keep
        # those of failed builds for diagnosis, drop the others so they do not pile up.
        shutil.rmtree(invocation.target_path, ignore_errors=True)

    dbt_step.__doc__ = description
    return dbt_step


def _selection(tag: str, schemas: tuple[str, ...]) -> str:
    """dbt selection of the nodes with `tag` in the given use cases' schemas (comma: and; space: or)."""
    return " ".join(f"tag:{tag},config.schema:{schema}" for schema in schemas)


@cache
def build_dbt_steps(schemas: tuple[str, ...]) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    """The dbt models, seeds and tests of these use cases (their schemas), as two steps.

    Two dbt steps, so that the staging data-quality checks (blocking) can stop a bad load before it
    reaches the customer history and the feature marts. Built on demand (reading the manifest and
    selecting nodes costs about a second) and only for the use cases a process loads; the step
    names are the same whichever use cases they hold.
    """
    return (
        _build_dbt_step(
            "dbt_staging",
            _selection("staging", schemas),
            "Seeds and staging views of the latest load (typed, usable rows).",
        ),
        _build_dbt_step(
            "dbt_marts",
            _selection("marts", schemas),
            "Customer history (incremental) and feature marts, after the staging checks passed.",
        ),
    )
