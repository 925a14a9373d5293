"""The Dagster instance on PostgreSQL (deploy/dagster-postgres.yaml), against a real PostgreSQL server.

The instance is loaded the way `dagster dev`, the daemon and `mlops` load theirs: DAGSTER_HOME holds the
deployment's dagster.yaml, the connection comes from MLOPS_PG_*. One real run of the main job goes into
it; the test reads the run, events and check evaluations back from PostgreSQL's own tables, through the
instance API, and through the retraining sensor.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import dagster as dg
from conftest import make_harness
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from postgres_server import PostgresServer, postgres_server  # noqa: F401 (the session fixture)

from mlops_assets.publishing import read_published
from mlops_assets.settings import PROJECT_ROOT

DEPLOY_CONFIG = PROJECT_ROOT / "deploy" / "dagster-postgres.yaml"
RETRAIN = "caravan_retrain_on_failed_checks"


def _postgres_instance(home, server: PostgresServer, monkeypatch) -> dg.DagsterInstance:
    """DAGSTER_HOME with the deployment's dagster.yaml, the connection from the environment."""
    home.mkdir()
    shutil.copy(DEPLOY_CONFIG, home / "dagster.yaml")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.get()


def _rows(server: PostgresServer, sql: str, *params) -> list[tuple]:
    connection = server.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        connection.close()


def test_caravan_pipeline_on_a_postgres_instance(postgres_server: PostgresServer, tmp_path, monkeypatch):  # noqa: F811
    server = postgres_server
    instance = _postgres_instance(tmp_path / "dagster_home", server, monkeypatch)
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

        harness = dataclasses.replace(make_harness(tmp_path / "platform"), instance=instance)
        result = harness.run("caravan_pipeline")
        assert result.success
        run_id = result.run_id

        # The run, its materializations and check evaluations are rows in PostgreSQL.
        assert _rows(server, "select pipeline_name, status from runs where run_id = %s", run_id) == [
            ("caravan_pipeline", "SUCCESS")
        ]
        stored = dict(
            _rows(
                server,
                "select dagster_event_type, count(*) from event_logs where run_id = %s group by dagster_event_type",
                run_id,
            )
        )
        emitted = {}
        for event in result.all_events:
            emitted[event.event_type_value] = emitted.get(event.event_type_value, 0) + 1
        for event_type in ("ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION", "STEP_SUCCESS"):
            assert stored.get(event_type) == emitted[event_type] > 0, event_type
        materialized = {
            key
            for (key,) in _rows(
                server,
                "select asset_key from event_logs where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION'",
                run_id,
            )
        }
        for asset in ("caravan/raw_customers", "caravan/champion_model", "caravan/published_scores"):
            assert dg.AssetKey.from_user_string(asset).to_string() in materialized, asset
        checks = _rows(
            server,
            "select check_name, execution_status from asset_check_executions where run_id = %s",
            run_id,
        )
        assert len(checks) == emitted["ASSET_CHECK_EVALUATION"]
        statuses = dict(checks)
        assert statuses["scores_are_complete"] == "SUCCEEDED"
        assert statuses["meets_quality_floor"] == "SUCCEEDED"
        # The warehouse steps took their pool slot from PostgreSQL (default_limit 1) and gave it back.
        assert _rows(server, 'select concurrency_key, "limit" from concurrency_limits') == [("duckdb_warehouse", 1)]
        assert _rows(server, "select count(*) from concurrency_slots where run_id is not null") == [(0,)]

        # The instance API reads the champion back from PostgreSQL; it is the model marketing got.
        event = instance.get_latest_materialization_event(dg.AssetKey(["caravan", "champion_model"]))
        assert event is not None and event.run_id == run_id
        champion = event.asset_materialization.metadata["champion_version"].value
        assert champion.startswith("caravan-")
        published = read_published(
            harness.settings.published_dir / "caravan.duckdb", "select model_version from publication"
        )
        assert published["model_version"].tolist() == [champion]
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS

        # The retraining sensor reads check evaluations from PostgreSQL: the first tick starts watching,
        # a failed drift check reported afterwards leads to exactly one retraining request.
        requests, cursor, skip = harness.tick(RETRAIN, None)
        assert requests == [] and skip and skip.startswith("started watching")
        assert set(json.loads(cursor)) == {"last_id", "last_request"}
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(["caravan", "drift_report"]),
                check_name="feature_drift",
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description="3 features drifted (reported in the Postgres instance test)",
            )
        )
        requests, cursor, _ = harness.tick(RETRAIN, cursor)
        assert len(requests) == 1
        reason = requests[0].tags["mlops/trigger_reason"]
        assert "feature_drift" in reason and "reported in the Postgres instance test" in reason
        assert json.loads(cursor)["last_id"] > 0
    finally:
        instance.dispose()
