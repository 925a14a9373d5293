"""Resources shared by every use case: the warehouse, the IO managers, the score publisher, dbt."""

import json
import logging
import os
import urllib.request
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from dagster_dbt import DbtProject

from mlops_assets.defs.dbt_in_process import DbtProjectConfig
from mlops_assets.defs.io_managers import ModelArtifactIOManager, Warehouse, WarehouseIOManager
from mlops_assets.publishing import PreparedPublication, prepare_publication, publish_tables
from mlops_assets.registry import record_alert
from mlops_assets.settings import DBT_PROJECT_DIR, Settings
from mlops_assets.warehouse import RUN_MEMORY_LIMIT_VARIABLE, size_in_bytes

# Steps that open the warehouse file share this pool; dagster_home/dagster.yaml limits it to one
# step at a time, because DuckDB allows a single writing process per file.
WAREHOUSE_POOL = "duckdb_warehouse"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class ScorePublisher(dg.ConfigurableResource):
    """Publishes score tables to `<published_dir>/<use case>.duckdb` for marketing's DuckDB clients."""

    published_dir: str

    def path_for(self, use_case: str) -> Path:
        return Path(self.published_dir) / f"{use_case}.duckdb"

    def publish(self, use_case: str, tables: dict[str, pd.DataFrame]) -> Path:
        return publish_tables(self.path_for(use_case), tables)

    def prepare(
        self, use_case: str, tables: dict[str, pd.DataFrame | str], connection: duckdb.DuckDBPyConnection | None = None
    ) -> PreparedPublication:
        """Write the publication without swapping it in yet (see publishing.prepare_publication: a
        table is a DataFrame or a query on `connection`)."""
        return prepare_publication(self.path_for(use_case), tables, connection)


def build_resources(settings: Settings) -> dict:
    warehouse = Warehouse(database=str(settings.duckdb_path))
    return {
        "warehouse": warehouse,
        "io_manager": WarehouseIOManager(
            database=str(settings.duckdb_path),
            run_memory_bytes=size_in_bytes(
                os.environ.get(RUN_MEMORY_LIMIT_VARIABLE, "1GiB"), RUN_MEMORY_LIMIT_VARIABLE
            ),
        ),
        "model_io_manager": ModelArtifactIOManager(warehouse=warehouse),
        "publisher": ScorePublisher(published_dir=str(settings.published_dir)),
        "incoming": IncomingFolder(path=str(settings.incoming_dir)),
        "dbt": DbtProjectConfig(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR)),
        "notifier": Notifier(warehouse=warehouse, webhook_url=os.environ.get("MLOPS_ALERT_WEBHOOK_URL") or None),
    }


class IncomingFolder(dg.ConfigurableResource):
    """Where new customer exports and outcome files arrive: `<path>/<use case>/` (watched by a sensor)."""

    path: str

    def folder_for(self, use_case: str) -> Path:
        folder = Path(self.path) / use_case
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class Notifier(dg.ConfigurableResource):
    """Raises platform alerts: always into `<use case>.alerts` and the run log; also to a webhook
    (JSON POST, e.g. a Teams or Slack incoming webhook) when `webhook_url` is set."""

    warehouse: dg.ResourceDependency[Warehouse]
    webhook_url: str | None = None
    webhook_timeout_seconds: float = 5.0

    def notify(
        self,
        context,
        use_case: str,
        kind: str,
        message: str,
        details: dict | None = None,
        severity: str = "warning",
        connection=None,
    ) -> None:
        run_id = context.run.run_id if context is not None else None
        if connection is None:
            with self.warehouse.get_connection() as own_connection:
                record_alert(own_connection, use_case, kind, severity, message, details, run_id)
        else:
            record_alert(connection, use_case, kind, severity, message, details, run_id)
        if context is not None:
            (context.log.warning if severity != "info" else context.log.info)(f"[{use_case} {kind}] {message}")
        if self.webhook_url:
            self._post(
                {
                    "use_case": use_case,
                    "kind": kind,
                    "severity": severity,
                    "message": message,
                    "details": details,
                }
            )

    def _post(self, payload: dict) -> None:
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(payload, default=str).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.webhook_timeout_seconds):
                pass
        except OSError as error:  # an unreachable webhook must not fail the pipeline; the alert is stored
            logging.getLogger(__name__).warning("webhook %s failed: %s", self.webhook_url, error)
