"""Scale benchmark: the synthetic Swiss bank use case at 100k and 1M customers, and scoring 10M.

    .venv/bin/python benchmarks/scale.py [--customers 100000 1000000] [--score-10m]

For each size, in separate processes (so each peak RSS is its own):
- pipeline: the Dagster job `swiss_bank_pipeline` (ingest with row rules, dbt features, Great
  Expectations suites, training, validation against the champion with fairness, registry, scoring
  with SHAP reasons for the top decile, drift, publication), run three times:
  1. first run: a new warehouse and the first export (dbt parses its project from scratch);
  2. rerun: the same file again. Ingestion skips a file it has loaded (same sha256), so this run
     does all but the ingestion: not the bare script's work, shown for reference;
  3. next export, in a new process as a daily `mlops run` is: the next day's full export of the
     same customers (another seed) replaces the file, and the run ingests it: the bare script's work
     on the same export, plus the history the platform keeps. The run compared with the bare script.
- bare script: the same work in one process with DuckDB, pandas and LightGBM and no Dagster or dbt,
  calling the same plain-Python functions (ingestion with row rules, the feature mart suite, training,
  scoring, SHAP reasons, drift, publication) on the export of run 3; features in plain SQL.
Prints per-stage times, the ratio pipeline / bare and peak RSS. `--score-10m` scores 10M customers
in chunks (the platform's predict_proba and score_table) and prints time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_pipeline(home: str | Path, customers: int, exports: list[int | None]) -> dict:
    """One run per entry of `exports`: an export of `customers` with that seed written as the source
    file first, or None to run on the file as it is."""
    home = Path(home)
    import dagster as dg

    from mlops_assets.definitions import build_definitions
    from mlops_assets.settings import Settings
    from mlops_assets.synthetic.swiss_bank import write_parquet
    from mlops_assets.use_cases import get_use_case

    # Only this use case's definitions, as `mlops run --use-case swiss_bank` builds them.
    use_case = get_use_case("swiss_bank")
    defs = build_definitions(Settings.under(home), use_cases=(use_case,))
    instance = dg.DagsterInstance.ephemeral()
    results = []
    for seed in exports:
        if seed is not None:
            write_parquet(use_case.source_path, customers, seed=seed)
        started = time.perf_counter()
        result = defs.resolve_job_def("swiss_bank_pipeline").execute_in_process(instance=instance)
        steps = {
            e.step_key.removeprefix("swiss_bank__"): e.event_specific_data.duration_ms / 1000
            for e in result.all_events
            if e.event_type_value == "STEP_SUCCESS"
        }
        results.append({"seconds": time.perf_counter() - started, "steps": steps, "success": result.success})
    return {"runs": results, "peak_rss_mb": peak_rss_mb()}


# The typing of dbt's stg_swiss_bank__customers, inline.
STAGING_SQL = """
    select cast(customer_id as varchar) as customer_id, cast(age as integer) as age,
           case when age < 30 then '18-29' when age < 45 then '30-44' when age < 60 then '45-59'
                else '60+' end as age_band,
           cast(settlement as varchar) as settlement, cast(canton as varchar) as canton,
           cast(relationship_years as integer) as relationship_years,
           cast(products_held as integer) as products_held, cast(balance_chf as double) as balance_chf,
           cast(digital_logins_per_month as integer) as digital_logins_per_month,
           cast(has_mortgage as integer) as has_mortgage,
           cast(has_investment_account as integer) as has_investment_account,
           cast(salary_account as integer) as salary_account,
           cast(interest_rate as double) as interest_rate, cast(unemployment_rate as double) as unemployment_rate,
           cast(consumer_confidence as double) as consumer_confidence,
           cast(contact_month as integer) as contact_month, cast(contact_weekday as integer) as contact_weekday,
           cast(bought_product_a as integer) as bought_product_a,
           _outlier_columns as outlier_columns, _load_id as load_id, _loaded_at as loaded_at
    from swiss_bank.raw_customers where _quarantine_reason is null
"""


def run_bare(home: str | Path) -> dict:
    home = Path(home)
    from datetime import UTC, datetime

    import duckdb

    from mlops_assets.ingestion import load_source
    from mlops_assets.ml.datasets import assign_splits
    from mlops_assets.ml.drift import build_reference_profile, build_score_profile, compare_to_reference
    from mlops_assets.ml.evaluation import classification_metrics
    from mlops_assets.ml.explanations import explain_top_share
    from mlops_assets.ml.scoring import score_table
    from mlops_assets.ml.training import predict_proba, train_propensity_model
    from mlops_assets.publishing import publish_tables
    from mlops_assets.quality.expectations import load_suite, validate
    from mlops_assets.use_cases import get_use_case

    os.environ["MLOPS_HOME"] = str(home)
    use_case = get_use_case("swiss_bank")
    stages: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        stages[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    connection = duckdb.connect(str(home / "bare.duckdb"))
    load_source(
        connection,
        path=use_case.source_path,
        source_format="parquet",
        table="swiss_bank.raw_customers",
        rules=use_case.row_rules(),
        load_id="bare",
        id_column="customer_id",
    )
    lap("ingest (row rules)")
    staged = connection.execute(STAGING_SQL).fetchdf()
    features = staged.assign(balance_per_product=staged["balance_chf"] / staged["products_held"])
    lap("features (SQL)")
    # The staging table's structural rules are dbt SQL tests in the pipeline; the bare script runs
    # the GX suite that remains on the feature mart (features present and complete, both classes).
    validate(features, load_suite(use_case, "customer_features"))
    lap("validation (feature mart suite)")
    labelled = features.sort_values("customer_id", ignore_index=True)
    labelled["split"] = assign_splits(labelled["customer_id"], labelled[use_case.target], seed=42)
    parts = {name: part for name, part in labelled.groupby("split")}
    model = train_propensity_model(
        parts["train"], parts["validation"], use_case.features, use_case.target, use_case.training
    )
    test_scores = predict_proba(model.booster, parts["test"], use_case.features, model.score_offset)
    classification_metrics(parts["test"][use_case.target], test_scores)
    profile = {
        "features": build_reference_profile(labelled, use_case.features),
        "scores": build_score_profile(test_scores),
    }
    lap("train + evaluate")
    scores = predict_proba(model.booster, features, use_case.features, model.score_offset)
    table = score_table(features["customer_id"], scores, "bare", datetime.now(UTC).replace(tzinfo=None))
    explained = explain_top_share(model.booster, features, use_case.features, scores, use_case.readable_names())
    lap("score + SHAP reasons (top decile)")
    compare_to_reference(profile["features"], features, use_case.monitoring.drift)
    lap("drift check")
    publish_tables(home / "bare_published.duckdb", {"customer_scores": table})
    lap("publish")
    connection.close()
    return {
        "stages": stages,
        "seconds": sum(stages.values()),
        "explained": explained.explained,
        "peak_rss_mb": peak_rss_mb(),
    }


def score_10m(home: str | Path, customers: int) -> dict:
    home = Path(home)
    """Score `customers` from Parquet in chunks with the platform's functions; bounded memory."""
    from datetime import UTC, datetime

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from mlops_assets.ml.scoring import score_table
    from mlops_assets.ml.training import predict_proba, train_propensity_model
    from mlops_assets.synthetic.swiss_bank import iter_customers, write_parquet
    from mlops_assets.use_cases import get_use_case

    os.environ["MLOPS_HOME"] = str(home)
    use_case = get_use_case("swiss_bank")
    path = write_parquet(home / "customers_10m.parquet", customers, seed=1)

    def typed(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        for column in ("has_mortgage", "has_investment_account", "salary_account"):
            frame[column] = frame[column].astype("int8")
        frame["balance_per_product"] = frame["balance_chf"] / frame["products_held"]
        frame["customer_id"] = frame["customer_id"].astype(str)
        return frame

    train = typed(pd.concat(iter_customers(300_000, seed=2)))
    train["bought_product_a"] = train["bought_product_a"].astype(int)
    model = train_propensity_model(
        train.iloc[:200_000], train.iloc[200_000:], use_case.features, use_case.target, use_case.training
    )
    started = time.perf_counter()
    ids, scores = [], np.empty(customers, dtype=np.float64)
    position = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=use_case.scoring.chunk_size):
        chunk = typed(batch.to_pandas())
        scores[position : position + len(chunk)] = predict_proba(
            model.booster, chunk, use_case.features, model.score_offset
        )
        ids.append(chunk["customer_id"].to_numpy())
        position += len(chunk)
    table = score_table(pd.Series(np.concatenate(ids)), scores, "benchmark", datetime.now(UTC).replace(tzinfo=None))
    table.to_parquet(home / "scores_10m.parquet")
    return {"customers": len(table), "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def in_child(function: str, *arguments) -> dict:
    """Run `function(*arguments)` of this module in a fresh process; its peak RSS is its own."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import scale; "
        f"print('RESULT ' + json.dumps(scale.{function}(*json.loads(sys.argv[1]))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, json.dumps(arguments)], capture_output=True, text=True, cwd=ROOT
    )
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{function} failed:\n{output.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--score-10m", action="store_true", help="also score 10M customers in chunks")
    parser.add_argument("--scoring-customers", type=int, default=10_000_000)
    args = parser.parse_args()

    from mlops_assets.synthetic.swiss_bank import write_parquet

    for customers in args.customers:
        with tempfile.TemporaryDirectory() as pipeline_home, tempfile.TemporaryDirectory() as bare_home:
            write_parquet(Path(pipeline_home) / "synthetic" / "swiss_bank" / "customers.parquet", customers, seed=0)
            os.environ["MLOPS_HOME"] = pipeline_home
            # The first export (seed 0) and the same file again; then, in a new process as a daily
            # `mlops run` is, the next export (seed 1). See the docstring.
            pipeline = in_child("run_pipeline", pipeline_home, customers, [None, None])
            daily = in_child("run_pipeline", pipeline_home, customers, [1])
            write_parquet(Path(bare_home) / "synthetic" / "swiss_bank" / "customers.parquet", customers, seed=1)
            bare = in_child("run_bare", bare_home)
        (first, rerun), (next_export,) = pipeline["runs"], daily["runs"]
        print(f"\n== {customers:,} customers ==")
        print(
            "pipeline (Dagster, in-process executor):\n"
            f"  first run (new warehouse) {first['seconds']:.1f} s, rerun on the same file (ingestion "
            f"skipped) {rerun['seconds']:.1f} s, both in one process: peak RSS {pipeline['peak_rss_mb']:.0f} MB\n"
            f"  next export (ingested) {next_export['seconds']:.1f} s in a new process: peak RSS "
            f"{daily['peak_rss_mb']:.0f} MB"
        )
        print("  steps of the next-export run (rerun in brackets):")
        for step, seconds in sorted(next_export["steps"].items(), key=lambda item: -item[1]):
            print(f"    {step:50s} {seconds:6.2f} s  ({rerun['steps'].get(step, 0.0):.2f})")
        print(
            f"bare script: {bare['seconds']:.1f} s, peak RSS {bare['peak_rss_mb']:.0f} MB "
            f"({bare['explained']:,} customers explained)"
        )
        for stage, seconds in bare["stages"].items():
            print(f"    {stage:50s} {seconds:6.2f} s")
        print(
            f"ratio pipeline / bare: {next_export['seconds'] / bare['seconds']:.2f} (next export: the same "
            f"work), {first['seconds'] / bare['seconds']:.2f} (first run), "
            f"{rerun['seconds'] / bare['seconds']:.2f} (rerun without ingestion)"
        )

    if args.score_10m:
        with tempfile.TemporaryDirectory() as home:
            result = in_child("score_10m", home, args.scoring_customers)
        print(
            f"\nscoring {result['customers']:,} customers in chunks: {result['seconds']:.1f} s, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB (target <= 8192 MB)"
        )


if __name__ == "__main__":
    main()
