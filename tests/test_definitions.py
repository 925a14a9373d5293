import dataclasses

import dagster as dg
import pytest
from conftest import make_harness

from mlops_assets.definitions import defs
from mlops_assets.defs.resources import build_resources
from mlops_assets.settings import Settings


def test_definitions_load_with_the_caravan_graph():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "caravan/raw_customers",
        "caravan/stg_customers",
        "caravan/int_policy_portfolio",
        "caravan/customer_features",
        "caravan/training_set",
        "caravan/propensity_model",
        "caravan/customer_scores",
        "caravan/published_scores",
        "caravan/data_dictionary",
    } <= keys
    upstream = graph.get(dg.AssetKey(["caravan", "stg_customers"])).parent_keys
    assert dg.AssetKey(["caravan", "raw_customers"]) in upstream


def test_every_asset_has_group_description_and_kinds():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        spec = node.assets_def.specs_by_key[key]
        assert node.group_name and node.group_name != "default", key
        assert spec.description, key
        assert spec.kinds, key


def test_dbt_tests_and_python_gates_are_asset_checks():
    checks = {key.to_user_string() for key in defs.resolve_asset_graph().asset_check_keys}
    assert "caravan/customer_features:unique_caravan__customer_features_customer_id" in checks
    assert "caravan/propensity_model:meets_quality_floor" in checks
    assert "caravan/customer_scores:scores_are_complete" in checks
    for check in [
        "raw_customers:row_count_vs_previous_load",
        "raw_customers:quarantine_share",
        "stg_customers:caravan_stg_valid_values",  # dbt (the data dictionary's rules)
        "stg_customers:caravan_stg_completeness",
        "stg_customers:unit_change",  # profiled from the first accepted load
        "customer_features:target_has_both_classes",
        "customer_scores:valid_scores",
    ]:
        assert f"caravan/{check}" in checks


def test_pipeline_job_covers_the_use_case_and_runs_in_process():
    job = defs.resolve_job_def("caravan_pipeline")
    assert job.executor_def.name == "in_process"
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert "caravan/raw_customers" in selected and "caravan/published_scores" in selected


def test_only_checks_that_declare_it_request_retraining():
    """The retraining sensor watches the checks whose spec says so (drift, realized performance),
    never a data-quality check: broken data is blocked, not retrained on."""
    from mlops_assets.defs.triggers import REQUESTS_RETRAIN, retrain_trigger_checks

    checks = [d for d in defs.assets or [] if hasattr(d, "check_specs")] + list(defs.asset_checks or [])
    watched = {key.to_user_string() for key in retrain_trigger_checks(checks) if key.asset_key.path[0] == "caravan"}
    assert watched == {
        "caravan/drift_report:feature_drift",
        "caravan/drift_report:score_drift",
        "caravan/model_performance:realized_performance",
    }
    quality = [
        spec
        for d in checks
        for spec in d.check_specs
        if spec.key.asset_key.path[-1] in ("raw_customers", "stg_customers", "customer_features")
        and spec.metadata.get(REQUESTS_RETRAIN) is not None
    ]
    assert quality and all(spec.metadata[REQUESTS_RETRAIN] is False for spec in quality)
    sensor = defs.resolve_sensor_def("caravan_retrain_on_failed_checks")
    assert "stg_customers" not in sensor.description and "feature_drift" in sensor.description


# Pipeline stages: each use case's groups are `<use case>_<stage>`.
STAGES = {"ingestion", "reference_data", "features", "training", "validation", "registry", "scoring"}
STAGES |= {"serving", "monitoring"}


def test_each_use_case_has_its_own_groups_and_materialize_all_of_a_group_stays_in_it():
    graph = defs.resolve_asset_graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        use_case = key.path[0]
        assert node.group_name.removeprefix(f"{use_case}_") in STAGES, (key, node.group_name)
        assert node.tags.get("use_case") == use_case, key
        groups.setdefault(node.group_name, set()).add(use_case)
    assert {"caravan_training", "swiss_bank_training", "caravan_features", "swiss_bank_features"} <= set(groups)
    assert all(len(use_cases) == 1 for use_cases in groups.values())
    # What the UI's "Materialize all" of a group selects: that use case's assets only.
    selected = dg.AssetSelection.groups("swiss_bank_training").resolve(graph)
    assert selected and all(key.path[0] == "swiss_bank" for key in selected)


def test_schedules_and_sensors_skip_with_a_reason_until_the_use_case_has_a_champion(tmp_path):
    # A platform never built: no champion, nothing published. Schedules need a persistent instance.
    with dg.instance_for_test() as instance:
        harness = dataclasses.replace(make_harness(tmp_path), instance=instance)
        gated = [
            harness.defs.resolve_schedule_def(f"swiss_bank_{name}")
            for name in ("daily_scoring", "weekly_drift_report", "hourly_served_traffic")
        ]
        incoming = harness.settings.incoming_dir / "swiss_bank"
        incoming.mkdir(parents=True, exist_ok=True)
        (incoming / "customers_1.parquet").write_bytes(b"not read while the gate is closed")
        for schedule in gated:
            result = schedule.evaluate_tick(dg.build_schedule_context(instance=instance))
            assert not result.run_requests and "swiss_bank has no champion model yet" in result.skip_message
        for sensor in ("swiss_bank_incoming_files", "swiss_bank_retrain_on_failed_checks"):
            requests, cursor, skipped = harness.tick(sensor, None)
            assert not requests and cursor is None and "mlops run --use-case swiss_bank" in skipped

        # A champion recorded by Dagster opens the gate (a published file does too: the loop tests).
        instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(["swiss_bank", "champion_model"])))
        for schedule in gated:
            result = schedule.evaluate_tick(dg.build_schedule_context(instance=instance))
            assert len(result.run_requests) == 1 and result.skip_message is None
        requests, _, _ = harness.tick("swiss_bank_incoming_files", None)
        assert [request.job_name for request in requests] == ["swiss_bank_batch"]


def test_what_a_run_keeps_in_memory_comes_from_the_environment(tmp_path, monkeypatch):
    """MLOPS_RUN_MEMORY_LIMIT sets the warehouse IO manager's budget for the tables a run keeps
    (default 1 GiB); a value that is not a size stops the definitions with a message naming it."""
    settings = Settings.under(tmp_path)
    assert build_resources(settings)["io_manager"].run_memory_bytes == 2**30
    monkeypatch.setenv("MLOPS_RUN_MEMORY_LIMIT", "512MB")
    assert build_resources(settings)["io_manager"].run_memory_bytes == 512 * 10**6
    monkeypatch.setenv("MLOPS_RUN_MEMORY_LIMIT", "0")
    assert build_resources(settings)["io_manager"].run_memory_bytes == 0
    monkeypatch.setenv("MLOPS_RUN_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="MLOPS_RUN_MEMORY_LIMIT='lots': expected a size"):
        build_resources(settings)
