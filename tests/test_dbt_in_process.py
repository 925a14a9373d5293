"""dbt runs inside the step's process (mlops_assets/defs/dbt_in_process.py): its failures fail the step
with the failing node named, and the build's files (compiled SQL, dbt log) are kept for diagnosis."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
from conftest import make_harness


def _another_process_can_write(database: Path) -> bool:
    """Whether a second process can open the warehouse read-write (DuckDB refuses it while this
    process holds the file: dbt-duckdb keeps its database open for a whole invocation)."""
    opened = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(database)!r}).close()"],
        capture_output=True,
        text=True,
    )
    return opened.returncode == 0


def test_a_dbt_error_fails_the_step_naming_the_model_and_keeps_the_build_files(tmp_path):
    harness = make_harness(tmp_path)
    # The staging view alone, on a warehouse where no export was ever loaded: dbt cannot create it.
    result = harness.defs.resolve_job_def("caravan_pipeline").execute_in_process(
        instance=harness.instance,
        asset_selection=[dg.AssetKey(["caravan", "stg_customers"])],
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.user_failure_data
    assert failure.step_key == "dbt_staging"
    assert "dbt build failed (1 node(s))" in error.description
    assert "model stg_caravan__customers" in error.metadata["failures"].value
    assert "raw_customers" in error.metadata["failures"].value  # dbt's own message: what is missing
    build_folders = list((tmp_path / "dbt_state").glob("build-*"))
    assert len(build_folders) == 1 and (build_folders[0] / "dbt.log").exists()
    assert _another_process_can_write(harness.settings.duckdb_path)  # a failed build releases the file too


def test_a_successful_build_reports_each_model_and_test_and_leaves_no_files(completed_pipeline):
    instance = completed_pipeline.instance
    materialization = instance.get_latest_materialization_event(dg.AssetKey(["caravan", "customer_features"]))
    assert materialization.asset_materialization.metadata["dagster/row_count"].value == 5822
    run_events = instance.all_logs(materialization.run_id)
    checks = {
        e.dagster_event.asset_check_evaluation_data.check_name: e.dagster_event.asset_check_evaluation_data.passed
        for e in run_events
        if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks["unique_caravan__customer_features_customer_id"] is True
    assert checks["not_null_stg_caravan__customers_customer_id"] is True
    progress = [e.user_message for e in run_events if e.step_key == "dbt_marts" and "OK created" in e.user_message]
    assert any("caravan.customer_features" in line for line in progress)  # dbt's own lines, in the step's log
    assert not list((completed_pipeline.settings.home / "dbt_state").glob("build-*"))


def test_the_warehouse_is_released_when_a_dbt_build_ends(completed_pipeline):
    """dbt's database stays open for a whole build and is closed when the step's build ends: the
    pipeline ran both dbt builds in this process, and another process can still open the file."""
    assert _another_process_can_write(completed_pipeline.settings.duckdb_path)
