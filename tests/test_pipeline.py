"""The whole caravan graph materialized into a temporary warehouse, on the bundled real data."""

import json
from collections import Counter

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import copy_of_first_run, make_harness

from mlops_assets.defs import io_managers
from mlops_assets.defs.io_managers import WarehouseIOManager
from mlops_assets.defs.resources import dbt_project
from mlops_assets.ml.artifacts import ModelArtifact, artifact_sha256
from mlops_assets.ml.datasets import dataset_fingerprint
from mlops_assets.publishing import read_published
from mlops_assets.quality.expectations import (
    SUITE_ASSETS,
    _batch_definition,
    build_suites,
    columns_read,
    load_suite,
    numeric_features,
    validate,
)
from mlops_assets.quality.scale import scale_reference


def _warehouse(harness) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(harness.settings.duckdb_path), read_only=True)


def test_every_customer_is_scored_exactly_once_with_scores_in_0_1(completed_pipeline, caravan):
    with _warehouse(completed_pipeline) as connection:
        scores = connection.execute("select * from caravan.customer_scores").fetchdf()
        customers = connection.execute("select customer_id from caravan.customer_features").fetchdf()
    assert len(customers) == 5822
    assert len(scores) == 5822 and scores["customer_id"].is_unique
    assert set(scores["customer_id"]) == set(customers["customer_id"])
    assert scores["score"].between(0, 1).all()
    assert sorted(scores["rank"]) == list(range(1, 5823))
    assert scores.groupby("decile").size().between(582, 583).all()
    assert scores["model_version"].nunique() == 1


def test_model_beats_the_roc_auc_floor_on_the_test_split(completed_pipeline):
    metadata = completed_pipeline.latest_metadata("caravan/propensity_model")
    assert metadata["test_roc_auc"] > 0.70
    assert metadata["test_top_decile_lift"] > 1.5
    assert 0 < metadata["test_brier_score"] < metadata["test_base_rate_brier"]


def test_published_scores_are_probabilities_of_buying(completed_pipeline):
    """Done-means of issue 9: on the bundled data the mean published score is within 20% of the buyer
    rate (348 of 5,822), and the Brier score beats predicting the base rate for everyone."""
    published = read_published(
        completed_pipeline.settings.published_dir / "caravan.duckdb", "select avg(score) as mean from customer_scores"
    )
    buyer_rate = 348 / 5822
    assert abs(published["mean"].item() - buyer_rate) < 0.2 * buyer_rate
    metadata = completed_pipeline.latest_metadata("caravan/model_validation")
    assert metadata["decision_challenger_brier_score"] < metadata["decision_challenger_base_rate_brier"]
    assert metadata["decision_challenger_ece"] < 0.05
    assert "random test split" in metadata["evaluation_set"]  # one period: no out-of-time set yet


def test_equal_scores_are_ranked_by_customer_id(completed_pipeline):
    """Ranks do not depend on the mart's row order, which changes from run to run: equal scores (common
    with trees) are ranked by customer id, so a re-run on the same data publishes the same ranks."""
    published = read_published(
        completed_pipeline.settings.published_dir / "caravan.duckdb",
        "select customer_id, score, rank from customer_scores order by rank",
    )
    tied = published[published.duplicated("score", keep=False)]
    assert tied["score"].nunique() > 10  # the bundled data has many ties: the rule is exercised
    for _, group in tied.groupby("score"):
        assert group["customer_id"].is_monotonic_increasing, group.head()


def test_every_search_trial_is_recorded_and_the_best_summarized(completed_pipeline, caravan):
    with _warehouse(completed_pipeline) as connection:
        trials = connection.execute("select * from caravan.model_search_trials order by trial").fetchdf()
        lineage = json.loads(connection.execute("select lineage from caravan.propensity_model").fetchone()[0])
    assert len(trials) == caravan.training.search_trials and trials["is_best"].sum() == 1
    assert json.loads(trials["params"].iloc[0])["num_leaves"] == caravan.training.num_leaves  # trial 0: configured
    best = trials[trials["is_best"]].iloc[0]
    assert lineage["search"]["best_cv_mean"] == best["cv_mean"] == trials["cv_mean"].max()
    assert best["best_rounds"] >= caravan.training.min_rounds
    metadata = completed_pipeline.latest_metadata("caravan/propensity_model")
    assert "validation curve" in metadata["validation_curve"] and metadata["best_iteration"] == best["best_rounds"]


def test_stored_model_verifies_and_reproduces_the_published_scores(completed_pipeline):
    with _warehouse(completed_pipeline) as connection:
        record = connection.execute("select * from caravan.propensity_model").fetchdf().iloc[0].to_dict()
        features = connection.execute("select * from caravan.customer_features").fetchdf()
        history = connection.execute("select model_version from caravan.model_registry").fetchall()
    artifact = ModelArtifact.from_record(record)
    assert artifact_sha256(artifact.model_text, artifact.calibration) == artifact.sha256
    assert artifact.calibration["method"] == "sigmoid"
    assert (artifact.model_version,) in history
    published = read_published(
        completed_pipeline.settings.published_dir / "caravan.duckdb",
        "select customer_id, score, model_version from customer_scores",
    )
    assert set(published["model_version"]) == {artifact.model_version}
    rescored = pd.Series(artifact.predict(features), index=features["customer_id"])
    assert np.allclose(rescored.loc[published["customer_id"]].to_numpy(), published["score"].to_numpy(), atol=1e-12)


def test_training_split_is_recorded_and_stratified(completed_pipeline):
    with _warehouse(completed_pipeline) as connection:
        split = (
            connection.execute(
                "select split, count(*) n, sum(purchased_caravan_policy) buyers from caravan.training_set group by 1"
            )
            .fetchdf()
            .set_index("split")
        )
    assert split["n"].sum() == 5822 and split["buyers"].sum() == 348
    rates = split["buyers"] / split["n"]
    assert (rates - 348 / 5822).abs().max() < 0.005


def test_the_training_set_is_in_customer_order_sorted_by_the_warehouse_load(completed_pipeline, tmp_path):
    """LightGBM's bagging depends on row order, so the training set is always in customer id order;
    an input whose metadata names `order_by` is sorted by DuckDB as it loads, others keep the stored
    order."""
    with _warehouse(completed_pipeline) as connection:
        stored = [r[0] for r in connection.execute("select customer_id from caravan.training_set").fetchall()]
    assert stored == sorted(stored) and len(stored) == 5822

    shuffled = [f"C{i:05d}" for i in np.random.default_rng(0).permutation(500)]
    loaded = {}

    @dg.asset(key=["s", "mart"])
    def mart() -> pd.DataFrame:
        return pd.DataFrame({"customer_id": shuffled, "n": range(500)})

    def reader(name: str, metadata: dict):
        @dg.asset(key=["s", name], ins={"mart": dg.AssetIn(key=["s", "mart"], metadata=metadata)})
        def read(mart: pd.DataFrame) -> None:
            loaded[name] = mart

        return read

    assets = [mart, reader("ordered", {"order_by": "customer_id", "columns": ["customer_id"]}), reader("as_stored", {})]
    io_manager = WarehouseIOManager(database=str(tmp_path / "warehouse.duckdb"))
    assert dg.materialize(assets, resources={"io_manager": io_manager}).success
    assert loaded["ordered"]["customer_id"].tolist() == sorted(shuffled)
    assert list(loaded["ordered"].columns) == ["customer_id"]
    assert loaded["as_stored"]["customer_id"].tolist() == shuffled


@pytest.fixture
def duckdb_reads(monkeypatch) -> list[str]:
    """The tables the warehouse IO manager reads from DuckDB (not from what its run kept), in order."""
    reads = []
    read_from_duckdb = io_managers._ReplacingPandasTypeHandler.load_input

    def counted(self, context, table_slice, connection):
        reads.append(table_slice.table)
        return read_from_duckdb(self, context, table_slice, connection)

    monkeypatch.setattr(io_managers._ReplacingPandasTypeHandler, "load_input", counted)
    return reads


def test_a_run_reads_each_table_once_and_every_step_gets_its_own_copy(tmp_path, duckdb_reads):
    """Within a run, a table the run wrote or read is handed to later steps from memory: as a copy of
    the columns they ask for, so one step's changes never reach another, and in the order they ask."""
    reads = duckdb_reads
    ids = [f"C{i:03d}" for i in np.random.default_rng(1).permutation(300)]
    seen = {}

    @dg.asset(key=["s", "table"])
    def table() -> pd.DataFrame:
        return pd.DataFrame({"customer_id": ids, "x": np.arange(300.0), "y": np.ones(300)})

    @dg.asset(key=["s", "changes_its_input"], ins={"table": dg.AssetIn(key=["s", "table"])})
    def changes_its_input(table: pd.DataFrame) -> None:
        table.loc[:, "x"] = -1.0
        table["y"] = 0.0

    @dg.asset(
        key=["s", "reads_some_columns"],
        ins={"table": dg.AssetIn(key=["s", "table"], metadata={"columns": ["x", "customer_id"]})},
        deps=[changes_its_input],
    )
    def reads_some_columns(table: pd.DataFrame) -> None:
        seen["columns"] = table

    @dg.asset(
        key=["s", "reads_in_order"],
        ins={"table": dg.AssetIn(key=["s", "table"], metadata={"order_by": "customer_id"})},
        deps=[reads_some_columns],
    )
    def reads_in_order(table: pd.DataFrame) -> None:
        seen["ordered"] = table

    io_manager = WarehouseIOManager(database=str(tmp_path / "warehouse.duckdb"))
    assets = [table, changes_its_input, reads_some_columns, reads_in_order]
    assert dg.materialize(assets, resources={"io_manager": io_manager}).success
    # the written table was not read back, but for the ordered read (the kept one is in no order)
    assert reads == ["table"]
    assert list(seen["columns"].columns) == ["x", "customer_id"]
    assert seen["columns"]["x"].tolist() == list(np.arange(300.0))
    assert seen["columns"]["customer_id"].tolist() == ids
    assert seen["ordered"]["customer_id"].tolist() == sorted(ids)
    assert (seen["ordered"]["y"] == 1.0).all()

    # A run without the writing step reads the table from DuckDB once, then hands out copies.
    seen.clear()
    reads.clear()
    assert dg.materialize(assets, resources={"io_manager": io_manager}, selection=assets[1:3]).success
    assert reads == ["table"]
    assert seen["columns"]["x"].tolist() == list(np.arange(300.0))


def test_tables_kept_for_a_run_stay_within_its_memory_budget(tmp_path, duckdb_reads):
    """The least recently used table goes first; a table larger than the budget is not kept; a budget
    of 0 reads every input from DuckDB."""
    reads = duckdb_reads
    rows = pd.DataFrame({"x": np.arange(1000.0)})  # 8,000 bytes

    @dg.asset(key=["s", "first"])
    def first() -> pd.DataFrame:
        return rows

    @dg.asset(key=["s", "second"], deps=[first])
    def second() -> pd.DataFrame:
        return pd.concat([rows, rows], ignore_index=True)  # 16,000 bytes

    @dg.asset(key=["s", "reads_second"], ins={"second": dg.AssetIn(key=["s", "second"])})
    def reads_second(second: pd.DataFrame) -> None:
        assert len(second) == 2000

    @dg.asset(key=["s", "reads_first"], ins={"first": dg.AssetIn(key=["s", "first"])}, deps=[reads_second])
    def reads_first(first: pd.DataFrame) -> None:
        assert len(first) == 1000

    def run(budget: int) -> list[str]:
        reads.clear()
        io_manager = WarehouseIOManager(database=str(tmp_path / "warehouse.duckdb"), run_memory_bytes=budget)
        assert dg.materialize([first, second, reads_second, reads_first], resources={"io_manager": io_manager}).success
        return sorted(reads)

    assert run(24_000) == []
    assert run(20_000) == ["first"]  # keeping the second pushed the first out
    assert run(12_000) == ["second"]  # the second is larger than the budget: never kept
    assert run(0) == ["first", "second"]


def test_the_model_records_the_fingerprint_of_the_stored_training_set(completed_pipeline, caravan):
    """The model step trains on the training set its run kept in memory; the fingerprint it records
    is that of the table in DuckDB, so what was kept and what was stored are the same data."""
    with _warehouse(completed_pipeline) as connection:
        stored = connection.execute("select * exclude (load_id) from caravan.training_set").fetchdf()
        recorded = connection.execute("select training_set_fingerprint from caravan.propensity_model").fetchone()[0]
    assert recorded == dataset_fingerprint(stored)
    assert completed_pipeline.latest_metadata("caravan/training_set")["fingerprint"] == recorded


def test_publication_is_gated_on_one_score_per_customer_of_the_latest_load_from_one_model(completed_pipeline, tmp_path):
    """`scores_are_complete` owns these rules (the GX suite checks values only): a score table with a
    customer twice, one customer missing and a second model version fails it, naming each problem."""
    platform = copy_of_first_run(completed_pipeline, tmp_path / "home")
    check = platform.defs.get_asset_checks_def(
        dg.AssetCheckKey(dg.AssetKey(["caravan", "customer_scores"]), "scores_are_complete")
    )

    def evaluate() -> dg.AssetCheckResult:
        return check(warehouse=platform.defs.resources["warehouse"])

    assert evaluate().passed
    with duckdb.connect(str(platform.settings.duckdb_path)) as connection:
        twice, dropped = [
            r[0]
            for r in connection.execute("select customer_id from caravan.customer_scores order by 1 limit 2").fetchall()
        ]
        connection.execute(
            "insert into caravan.customer_scores select * replace ('other-model' as model_version) "
            "from caravan.customer_scores where customer_id = ?",
            [twice],
        )
        connection.execute("delete from caravan.customer_scores where customer_id = ?", [dropped])
    failed = evaluate()
    assert not failed.passed
    for problem in ("1 customers scored more than once", f"not scored, e.g. ['{dropped}']", "from 2 model versions"):
        assert problem in failed.description, (problem, failed.description)


def test_a_failed_blocking_score_check_stops_the_publication(completed_pipeline, tmp_path, monkeypatch):
    """published_scores copies the warehouse's score table (a dependency, not an input): a blocking
    check failing on customer_scores must still stop it, and the last good scores stay published."""
    import mlops_assets.defs.scoring as scoring_defs

    platform = copy_of_first_run(completed_pipeline, tmp_path / "home")
    published = platform.settings.published_dir / "caravan.duckdb"
    before = read_published(published, "select * from publication")
    with _warehouse(platform) as connection:
        history_before = connection.execute("select count(*) from caravan.score_history").fetchone()[0]

    def scored_twice(*arguments, **keywords):  # one customer twice: scores_are_complete fails
        table = score_table(*arguments, **keywords)
        return pd.concat([table, table.head(1)], ignore_index=True)

    score_table = scoring_defs.score_table
    monkeypatch.setattr(scoring_defs, "score_table", scored_twice)
    result = platform.defs.resolve_job_def("caravan_scoring").execute_in_process(
        instance=platform.instance, raise_on_error=False
    )

    assert not result.success
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks["scores_are_complete"] is False
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "caravan/customer_scores" in materialized
    assert "caravan/published_scores" not in materialized
    assert read_published(published, "select * from publication").equals(before)
    with _warehouse(platform) as connection:
        assert connection.execute("select count(*) from caravan.score_history").fetchone()[0] == history_before


def test_the_score_suite_reads_only_its_columns_and_still_names_a_bad_score(
    completed_pipeline, caravan, tmp_path, monkeypatch
):
    """The score suite's check loads the columns its expectations read (not the twelve reason columns)
    and checks the header against the table's full column list: a score above 1 fails valid_scores
    naming the customer, a missing column fails the schema check, and nothing is published."""
    import mlops_assets.defs.scoring as scoring_defs

    read = columns_read(load_suite(caravan, "customer_scores"))
    assert "score" in read and not any(column.startswith("reason_") for column in read)
    platform = copy_of_first_run(completed_pipeline, tmp_path / "home")
    published = platform.settings.published_dir / "caravan.duckdb"
    before = read_published(published, "select * from publication")

    def out_of_range(*arguments, **keywords):
        table = score_table(*arguments, **keywords)
        table.loc[0, "score"] = 1.5
        return table.drop(columns=["scored_at"])

    score_table = scoring_defs.score_table
    monkeypatch.setattr(scoring_defs, "score_table", out_of_range)
    result = platform.defs.resolve_job_def("caravan_scoring").execute_in_process(
        instance=platform.instance, raise_on_error=False
    )

    evaluations = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    with _warehouse(platform) as connection:
        worst = connection.execute("select customer_id from caravan.customer_scores where score > 1").fetchone()[0]
    assert not evaluations["valid_scores"].passed
    assert worst in evaluations["valid_scores"].description, evaluations["valid_scores"].description
    assert not evaluations["schema"].passed and "scored_at" in evaluations["schema"].description
    assert read_published(published, "select * from publication").equals(before)


def test_assets_report_row_counts_and_schemas(completed_pipeline):
    for key in [
        "caravan/raw_customers",
        "caravan/stg_customers",
        "caravan/customer_features",
        "caravan/training_set",
        "caravan/customer_scores",
    ]:
        metadata = completed_pipeline.latest_metadata(key)
        assert metadata["dagster/row_count"] == 5822, key
        assert len(metadata["dagster/column_schema"].columns) >= 6, key


def test_missing_source_fails_clearly_and_keeps_published_scores(completed_pipeline, tmp_path):
    published = completed_pipeline.settings.published_dir / "caravan.duckdb"
    before = read_published(published, "select * from publication")
    result = completed_pipeline.run(
        run_config={"ops": {"caravan__raw_customers": {"config": {"source_path": str(tmp_path / "gone.csv")}}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "gone.csv: source file not found" in str(failure.step_failure_data.error.cause.message)
    assert read_published(published, "select * from publication").equals(before)
    with _warehouse(completed_pipeline) as connection:
        assert connection.execute("select count(*) from caravan.raw_customers").fetchone()[0] == 5822


def test_quality_floor_gate_blocks_scoring_when_the_model_is_too_weak(caravan, tmp_path):
    strict = caravan.model_copy(update={"thresholds": caravan.thresholds.model_copy(update={"min_test_roc_auc": 0.99})})
    harness = make_harness(tmp_path, use_cases=(strict,))
    result = harness.run(raise_on_error=False)
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks["meets_quality_floor"] is False
    materialized = (
        {key.to_user_string() for key in result.get_asset_materialization_events_by_key()}
        if hasattr(result, "get_asset_materialization_events_by_key")
        else {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    )
    assert "caravan/propensity_model" in materialized
    assert "caravan/customer_scores" not in materialized
    assert not (harness.settings.published_dir / "caravan.duckdb").exists()


def test_committed_suites_are_what_the_dictionary_builds(caravan):
    for asset, suite in build_suites(caravan).items():
        assert json.loads(json.dumps(suite)) == load_suite(caravan, asset), asset


def test_the_unit_change_reference_is_the_first_accepted_load(completed_pipeline, caravan):
    with _warehouse(completed_pipeline) as connection:
        staged = connection.execute("select * from caravan.stg_customers").fetchdf()
        recorded = connection.execute(
            "select asset, kind, reference, load_id from caravan.quality_reference"
        ).fetchall()
    assert [(asset, kind) for asset, kind, _, _ in recorded] == [("stg_customers", "scale")]
    # Quartiles computed in DuckDB are numpy's on the same rows.
    reference = json.loads(recorded[0][2])
    expected = scale_reference(staged, numeric_features(caravan))
    assert reference.keys() == expected.keys() and len(reference) >= 20
    assert all(reference[c] == pytest.approx(expected[c]) for c in expected)
    assert recorded[0][3] == staged["load_id"].iloc[0]


def test_every_expectation_result_is_recorded_and_all_pass_on_good_data(completed_pipeline, caravan):
    with _warehouse(completed_pipeline) as connection:
        results = connection.execute(
            "select asset, count(*) n, count(*) filter (where not success) failed "
            "from caravan.validation_results group by asset order by asset"
        ).fetchall()
    # One row per GX expectation (the first load has no unit-change results: it is the reference
    # later loads are compared with) and one per dbt test (structural rules, ids, targets).
    expected = Counter({f"caravan/{asset}": len(load_suite(caravan, asset)["expectations"]) for asset in SUITE_ASSETS})
    manifest = json.loads(dbt_project.manifest_path.read_text())
    for node in manifest["nodes"].values():
        parent = manifest["nodes"].get(node.get("attached_node") or "")
        if node["resource_type"] == "test" and parent and parent["schema"] == "caravan":
            expected[f"caravan/{parent['alias']}"] += 1
    assert expected["caravan/stg_customers"] >= 7  # 4 dictionary rule families, unique, not_null, target
    assert {asset: n for asset, n, _ in results} == {asset: n for asset, n in expected.items() if n}
    assert all(failed == 0 for _, _, failed in results)


def test_suites_see_every_row_without_gx_hashing_the_frame(completed_pipeline, caravan):
    """GX's per-batch md5 of every row (most of the suites' time at 1M customers) is not computed;
    the expectations still read every row and name the one that breaks a rule."""
    with _warehouse(completed_pipeline) as connection:
        mart = connection.execute("select * from caravan.customer_features").fetchdf()
    suite = load_suite(caravan, "customer_features")
    assert all(outcome.success for outcome in validate(mart, suite))
    column = next(e["kwargs"]["column"] for e in suite["expectations"] if "not_be_null" in e["type"])
    broken_id = mart["customer_id"].iloc[-1]
    mart.loc[mart.index[-1], column] = None
    failed = [outcome for outcome in validate(mart, suite) if not outcome.success]
    assert [(o.column, o.unexpected_count, o.sample_ids) for o in failed] == [(column, 1, [str(broken_id)])]
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": mart})
    assert "pandas_data_fingerprint" not in batch.batch_markers
