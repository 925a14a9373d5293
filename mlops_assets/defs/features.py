"""Feature engineering in dbt: seeds, staging, intermediate and mart models, each one asset.

Keys follow the DuckDB relation, `<schema>/<alias>` (e.g. `caravan/customer_features`), so each use
case's dbt models sit under its key prefix next to its Python assets, and dbt tests become asset checks.
"""

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, dbt_assets

from mlops_assets.dbt_manifest import ensure_fresh_manifest
from mlops_assets.defs.dbt_in_process import DbtProjectConfig, asset_events, discard_artefacts
from mlops_assets.defs.dbt_quality import with_failing_rows
from mlops_assets.defs.io_managers import Warehouse, table_metadata
from mlops_assets.defs.quality import record_validation_rows
from mlops_assets.defs.resources import WAREHOUSE_POOL, Notifier, dbt_project


class UseCaseDbtTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot"):
            return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["alias"]])
        return super().get_asset_key(dbt_resource_props)


def _column_descriptions(spec: dg.AssetSpec) -> dict[str, str]:
    schema = spec.metadata.get("dagster/column_schema")
    return {column.name: column.description for column in schema.columns} if schema else {}


def _build_dbt_step(name: str, select: str, description: str) -> dg.AssetsDefinition:
    @dbt_assets(
        manifest=dbt_project.manifest_path,
        project=dbt_project,
        select=select,
        name=name,
        dagster_dbt_translator=UseCaseDbtTranslator(),
        pool=WAREHOUSE_POOL,
    )
    def dbt_step(context: dg.AssetExecutionContext, dbt: DbtProjectConfig, warehouse: Warehouse, notifier: Notifier):
        # dbt's parse state and the folders of failed builds live next to the warehouse.
        state = Path(warehouse.database).parent / "dbt_state"
        state.mkdir(exist_ok=True)
        build = dbt.build(context, warehouse.database, state)

        # Row counts, column types and failing test rows are read once dbt has released the warehouse.
        with warehouse.get_connection() as connection:

            def alert(key: dg.AssetKey, node: dict, message: str) -> None:
                details = {"check": node["name"], "engine": "dbt"}
                notifier.notify(context, key.path[0], "data_quality", message, details, "error", connection)

            for event, rows in with_failing_rows(
                asset_events(context, build), build.params.manifest, connection, alert
            ):
                if isinstance(event, dg.Output):
                    key = context.asset_key_for_output(event.output_name)
                    descriptions = _column_descriptions(context.assets_def.specs_by_key[key])
                    metadata = table_metadata(connection, ".".join(key.path), descriptions=descriptions)
                    event = event.with_metadata({**event.metadata, **metadata})
                for schema in {row["asset"].split("/")[0] for row in rows}:
                    record_validation_rows(connection, schema, [{"run_id": context.run.run_id, **r} for r in rows])
                yield event
        if not build.succeeded:
            raise dg.Failure(
                description=f"dbt build failed ({len(build.failures)} node(s)); its files: {build.target_path}",
                metadata={"failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in build.failures))},
            )
        discard_artefacts(build)

    dbt_step.__doc__ = description
    return dbt_step


def _selection(tag: str, schemas: tuple[str, ...]) -> str:
    """dbt selection of the nodes with `tag` in the given use cases' folders (comma: and; space: or).

    A use case's models and seeds sit in folders named after it (models/<layer>/<use case>/,
    seeds/<use case>/), so its name is a part of their fully qualified names.
    """
    return " ".join(f"tag:{tag},fqn:*.{schema}.*" for schema in schemas)


@cache
def build_dbt_steps(schemas: tuple[str, ...]) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    """The dbt models, seeds and tests of these use cases (their schemas), as two steps.

    Two dbt steps, so that the staging data-quality checks (blocking) can stop a bad load before it
    reaches the customer history and the feature marts. Built on demand (reading the manifest and
    selecting nodes costs about a second) and only for the use cases a process loads; the step
    names are the same whichever use cases they hold. A manifest older than the dbt project (a new
    use case, an edited model) is refreshed first (dbt_manifest.py).
    """
    ensure_fresh_manifest()
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
