"""Suites that bootstrap, and use cases isolated from each other's broken suite files (issue 11, item 2).

A use case without suite files gets its structural rules from its data dictionary and its
unit-change reference from its first accepted load; a broken suite file fails only its own use
case's checks, with a message naming the file. The suite folders are temporary copies
(`quality_suites` in the use case), never the repo's.
"""

import json
import shutil

import dagster as dg
import duckdb
import pytest
from conftest import copy_of_first_run, make_harness

from mlops_assets.quality.expectations import SuiteError, load_suite, structural_suite, suite_path
from mlops_assets.use_cases import get_use_case

# The first load up to the staging checks: raw table, dictionary seeds, staging view and their checks.
FIRST_LOAD_STEPS = [
    dg.AssetKey(["caravan", name]) for name in ("raw_customers", "data_dictionary", "code_labels", "stg_customers")
]


def _with_suites(use_case, folder, copy_committed: bool = True):
    if copy_committed:
        shutil.copytree(use_case.suite_dir, folder)
    else:
        folder.mkdir()
    return use_case.model_copy(update={"quality_suites": str(folder)})


def _check_evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.asset_check_evaluation_data.asset_check_key.to_user_string(): e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _failure_messages(result) -> str:
    return "\n".join(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)


def test_a_broken_suite_file_is_named_and_a_missing_one_is_built_from_the_dictionary(tmp_path):
    caravan = _with_suites(get_use_case("caravan"), tmp_path / "suites")
    path = suite_path(caravan, "customer_features")
    path.write_text(path.read_text()[:500])  # cut off mid-file
    with pytest.raises(SuiteError, match=str(path)):
        load_suite(caravan, "customer_features")
    path.write_text(json.dumps({"expectations": [{"type": "expect_x", "meta": {"check": "nope"}}], "meta": {}}))
    with pytest.raises(SuiteError, match="meta.checks"):
        load_suite(caravan, "customer_features")
    path.unlink()
    assert load_suite(caravan, "customer_features") == structural_suite(caravan, "customer_features")


def test_without_suite_files_a_use_case_loads_and_runs_while_another_ones_broken_file_fails_alone(tmp_path):
    """caravan has no suite files at all and loads its first export; swiss_bank's staging suite file
    is broken: the definitions of both load, caravan runs, swiss_bank's check names the file."""
    caravan = _with_suites(get_use_case("caravan"), tmp_path / "caravan_suites", copy_committed=False)
    swiss_bank = _with_suites(get_use_case("swiss_bank"), tmp_path / "swiss_bank_suites")
    broken = suite_path(swiss_bank, "stg_customers")
    broken.write_text("{ not json")
    harness = make_harness(tmp_path / "home", use_cases=(caravan, swiss_bank))

    swiss_check = harness.defs.get_asset_checks_def(
        dg.AssetCheckKey(dg.AssetKey(["swiss_bank", "stg_customers"]), "unit_change")
    )
    assert str(broken) in swiss_check.node_def.description

    job = harness.defs.resolve_job_def("caravan_pipeline")
    result = job.execute_in_process(instance=harness.instance, asset_selection=FIRST_LOAD_STEPS)
    assert result.success
    checks = _check_evaluations(result)
    # Structural rules from the dictionary: GX on the raw table, dbt tests on the staging view.
    assert (
        checks["caravan/raw_customers:schema"].passed
        and checks["caravan/stg_customers:caravan_stg_valid_values"].passed
    )
    with duckdb.connect(str(harness.settings.duckdb_path), read_only=True) as connection:
        recorded = connection.execute(
            "select expectation, success from caravan.validation_results where asset = ?", ["caravan/stg_customers"]
        ).fetchall()
        reference = connection.execute("select asset, kind from caravan.quality_reference").fetchall()
    assert ("dbt:dictionary_valid_values", True) in recorded and all(success for _, success in recorded)
    assert reference == [("stg_customers", "scale")]  # the first accepted load is the reference


def test_a_broken_suite_file_stops_its_use_case_before_the_history_naming_the_file(tmp_path):
    caravan = _with_suites(get_use_case("caravan"), tmp_path / "suites")
    broken = suite_path(caravan, "raw_customers")
    broken.write_text(
        broken.read_text().replace(
            '"type": "expect_table_row_count_to_be_between"', '"type": "expect_no_such_thing"', 1
        )
    )
    harness = make_harness(tmp_path / "home", use_cases=(caravan,))
    job = harness.defs.resolve_job_def("caravan_pipeline")
    steps = [*FIRST_LOAD_STEPS, dg.AssetKey(["caravan", "int_customer_history"])]
    result = job.execute_in_process(instance=harness.instance, asset_selection=steps, raise_on_error=False)
    assert not result.success
    assert str(broken) in _failure_messages(result) and "expect_no_such_thing" in _failure_messages(result)
    materialized = {e.asset_key.path[-1] for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert "raw_customers" in materialized and "int_customer_history" not in materialized


def test_a_staged_value_outside_the_dictionary_fails_its_dbt_test_naming_column_rule_and_ids(
    tmp_path, completed_pipeline
):
    """The staging step's dbt tests of the dictionary's ranges, code lists and completeness fail on
    values ingestion never saw (the raw table edited in place, as a changed dictionary or a staging
    bug would leave it): the load stops before the history, and the checks, the alert and
    validation_results name the file, the column, the rule and the customers."""
    platform = copy_of_first_run(completed_pipeline, tmp_path / "home")
    with duckdb.connect(str(platform.settings.duckdb_path)) as connection:
        first = "select customer_id from caravan.raw_customers order by 1 limit 6"
        ids = [r[0] for r in connection.execute(first).fetchall()]
        out_of_range, off_the_code_list, missing = ids[:3], ids[3:5], ids[5:]
        edit = "update caravan.raw_customers set {} where customer_id in (select unnest(?))"
        connection.execute(edit.format("MGEMLEEF = '7'"), [out_of_range])
        connection.execute(edit.format("MOSTYPE = '42'"), [off_the_code_list])
        connection.execute(edit.format("MAANTHUI = null"), [missing])
        source_file = connection.execute("select any_value(_source_file) from caravan.raw_customers").fetchone()[0]
        history_before = connection.execute("select count(*) from caravan.int_customer_history").fetchone()[0]
    steps = [dg.AssetKey(["caravan", name]) for name in ("stg_customers", "int_customer_history")]
    job = platform.defs.resolve_job_def("caravan_pipeline")
    result = job.execute_in_process(instance=platform.instance, asset_selection=steps, raise_on_error=False)

    assert not result.success
    check = _check_evaluations(result)["caravan/stg_customers:caravan_stg_valid_values"]
    assert not check.passed
    for fragment in (source_file, "avg_age_class", "range", "1.0..6.0", ", ".join(out_of_range), "values 7"):
        assert fragment in check.description, (fragment, check.description)
    for fragment in ("customer_subtype", "code_list", "values 42", ", ".join(off_the_code_list)):
        assert fragment in check.description, (fragment, check.description)
    assert "avg_age_class" in check.metadata["failing_rows"].value
    completeness = _check_evaluations(result)["caravan/stg_customers:caravan_stg_completeness"]
    assert not completeness.passed and "number_of_houses" in completeness.description
    assert missing[0] in completeness.description
    with duckdb.connect(str(platform.settings.duckdb_path), read_only=True) as connection:
        failed = connection.execute(
            "select column_name, expectation, unexpected_count, unexpected_sample, source_file "
            "from caravan.validation_results where not success order by column_name"
        ).fetchall()
        alert = connection.execute("select message from caravan.alerts where kind = 'data_quality'").fetchall()
        history_after = connection.execute("select count(*) from caravan.int_customer_history").fetchone()[0]
    assert failed == [
        ("avg_age_class", "dbt:dictionary_valid_values:range", 3, json.dumps(out_of_range), source_file),
        ("customer_subtype", "dbt:dictionary_valid_values:code_list", 2, json.dumps(off_the_code_list), source_file),
        ("number_of_houses", "dbt:dictionary_completeness:completeness", 1, json.dumps(missing), source_file),
    ]
    completeness_alert, valid_values_alert = sorted(message for (message,) in alert)  # one per failed test
    assert "caravan_stg_completeness" in completeness_alert and "number_of_houses" in completeness_alert
    assert "avg_age_class" in valid_values_alert and "customer_subtype" in valid_values_alert
    assert history_after == history_before  # stopped before the customer history


def test_every_use_case_stages_its_dictionary_rules_as_dbt_tests_with_its_own_limits():
    """The dictionary tests are attached to each use case's staging model, with the YAML's
    quality.max_null_share (a generator writing the dbt YAML must keep them in step)."""
    from mlops_assets.defs.resources import dbt_project
    from mlops_assets.use_cases import all_use_cases

    manifest = json.loads(dbt_project.manifest_path.read_text())
    for use_case in all_use_cases():
        tests = {
            node["test_metadata"]["name"]: node
            for node in manifest["nodes"].values()
            if node["resource_type"] == "test"
            and node.get("test_metadata")
            and manifest["nodes"].get(node.get("attached_node") or "", {}).get("alias") == "stg_customers"
            and manifest["nodes"][node["attached_node"]]["schema"] == use_case.name
        }
        rules = {"dictionary_columns", "dictionary_types", "dictionary_completeness", "dictionary_valid_values"}
        assert rules <= tests.keys(), use_case.name
        completeness = tests["dictionary_completeness"]["test_metadata"]["kwargs"]
        assert float(completeness.get("max_null_share", 0.0)) == use_case.quality.max_null_share
        assert all(tests[rule]["config"]["store_failures"] for rule in rules)
