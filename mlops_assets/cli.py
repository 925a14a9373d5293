"""Command line: `mlops run` materializes a use case's whole graph, as `make run` does."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlops_assets.settings import PROJECT_ROOT


def _instance():
    import dagster as dg

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    return dg.DagsterInstance.get()


def run_pipeline(args: argparse.Namespace) -> int:
    from mlops_assets.definitions import defs
    from mlops_assets.defs.jobs import pipeline_job_name
    from mlops_assets.defs.scoring import MARKETING_QUERY
    from mlops_assets.settings import Settings
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    if args.source:
        ingestion_config = {"source_path": os.path.abspath(args.source)}
        if args.format:
            ingestion_config["source_format"] = args.format
        run_config["ops"] = {f"{use_case.name}__raw_customers": {"config": ingestion_config}}
    job = defs.resolve_job_def(pipeline_job_name(use_case))
    result = job.execute_in_process(instance=_instance(), run_config=run_config, raise_on_error=False)
    settings = Settings.from_env()
    if not result.success:
        failed = [event for event in result.all_events if event.is_step_failure]
        print(f"\nRun {result.run_id} failed.", file=sys.stderr)
        for event in failed:
            error = event.step_failure_data.error
            print(f"  step {event.step_key}: {error.message.strip() if error else 'failed'}", file=sys.stderr)
        print("The last published scores, if any, were left untouched.", file=sys.stderr)
        return 1
    published = settings.published_dir / f"{use_case.name}.duckdb"
    duckdb_cli = Path(sys.executable).with_name("duckdb")
    print(
        f"""
Run {result.run_id} succeeded.
  Warehouse (DuckDB):   {settings.duckdb_path}
  Score table:          {use_case.name}.customer_scores in the warehouse
  Published for marketing (safe to read while pipelines run):
                        {published}  (table customer_scores, model info in table publication)
  Try:
    {duckdb_cli} -readonly {published} "{MARKETING_QUERY} LIMIT 20"
"""
    )
    return 0


def generate_quality_suites(args: argparse.Namespace) -> int:
    import duckdb

    from mlops_assets.quality.expectations import build_suites, write_suite
    from mlops_assets.settings import Settings
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    database = args.warehouse or str(Settings.from_env().duckdb_path)
    with duckdb.connect(database, read_only=True) as connection:
        staged = connection.execute(f"select * from {use_case.name}.stg_customers").fetchdf()
        mart = connection.execute(f"select * from {use_case.name}.{use_case.feature_mart}").fetchdf()
    for asset, suite in build_suites(use_case, staged, mart).items():
        path = write_suite(use_case.name, asset, suite)
        print(f"{path}: {len(suite['expectations'])} expectations")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialize a use case end to end and publish its scores")
    run.add_argument("--use-case", default="caravan")
    run.add_argument("--source", help="load this CSV or Parquet export instead of the use case's default")
    run.add_argument("--format", choices=["csv", "parquet"], help="format of --source")
    run.set_defaults(handler=run_pipeline)
    suites = commands.add_parser(
        "quality-suites",
        help="(re)generate a use case's Great Expectations suites from its data dictionary and the "
        "accepted data in the warehouse (run the pipeline on reference data first)",
    )
    suites.add_argument("--use-case", default="caravan")
    suites.add_argument("--warehouse", help="DuckDB file to profile (default: the local warehouse)")
    suites.set_defaults(handler=generate_quality_suites)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
