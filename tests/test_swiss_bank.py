"""The second use case: synthetic Swiss bank customers through the same pipeline code."""

import duckdb
from conftest import make_harness

from mlops_assets.publishing import read_published
from mlops_assets.synthetic.swiss_bank import write_parquet
from mlops_assets.use_cases import get_use_case


def test_swiss_bank_assets_appear_under_their_own_prefix(harness):
    keys = {key.to_user_string() for key in harness.defs.resolve_asset_graph().get_all_asset_keys()}
    caravan = {key.split("/", 1)[1] for key in keys if key.startswith("caravan/")}
    swiss_bank = {key.split("/", 1)[1] for key in keys if key.startswith("swiss_bank/")}
    # Every pipeline asset of caravan exists for swiss_bank too; only use-case dbt models differ
    # (caravan's code-list seed and its portfolio summaries).
    assert caravan - {"code_labels", "int_policy_portfolio"} == swiss_bank
    jobs = {job.name for job in harness.defs.jobs}
    assert {"swiss_bank_pipeline", "swiss_bank_batch", "swiss_bank_retrain"} <= jobs


def test_swiss_bank_pipeline_runs_end_to_end_on_synthetic_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    use_case = get_use_case("swiss_bank")
    write_parquet(use_case.source_path, 20_000, seed=3)
    harness = make_harness(tmp_path)
    result = harness.run("swiss_bank_pipeline")
    assert result.success
    published = read_published(
        harness.settings.published_dir / "swiss_bank.duckdb",
        "select count(*) as n, count(distinct customer_id) as ids, min(score) as low, max(score) as high, "
        "count(reason_1) as explained from customer_scores",
    ).iloc[0]
    assert published["n"] == published["ids"] == 20_000
    assert 0 <= published["low"] <= published["high"] <= 1
    assert published["explained"] == 2_000  # the top decile carries reasons
    with duckdb.connect(str(harness.settings.duckdb_path), read_only=True) as connection:
        roc_auc, fairness = connection.execute(
            "select cast(json_extract(metrics, '$.roc_auc') as double), fairness from swiss_bank.model_validations"
        ).fetchone()
    assert roc_auc > 0.70  # against a known ground-truth propensity
    assert '"attribute": "age_band"' in fairness
