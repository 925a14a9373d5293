"""The daily job as the customer history grows: one full export a day, the same customers each time.

    .venv/bin/python benchmarks/history_growth.py [--customers 500000] [--exports 8]

The platform keeps every accepted record (`<use case>.int_customer_history`), so after n daily full
exports of N customers the history holds n x N rows. Runs the swiss_bank job (Dagster, in process,
as `mlops run`) on `--exports` successive exports of `--customers` synthetic customers (another seed
each day) in one temporary home, and prints per export the history's rows, the marts step (the
latest records, the feature mart and its tests), the training set and the whole run. What the daily
job costs should not grow with the history it keeps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale import run_pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--exports", type=int, default=8)
    args = parser.parse_args()
    import os

    import duckdb

    with tempfile.TemporaryDirectory() as home:
        os.environ["MLOPS_HOME"] = home
        print(f"swiss_bank, {args.customers:,} customers, one full export a day (seconds)")
        print(f"{'export':>6} {'history rows':>13} {'dbt_marts':>10} {'training_set':>13} {'run':>7}")
        marts = []
        for day in range(args.exports):
            run = run_pipeline(home, args.customers, [day])["runs"][0]
            if not run["success"]:
                raise SystemExit(f"the run of export {day + 1} failed")
            with duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True) as connection:
                rows = connection.execute("select count(*) from swiss_bank.int_customer_history").fetchone()[0]
            steps = run["steps"]
            marts.append(steps["dbt_marts"])
            print(
                f"{day + 1:>6} {rows:>13,} {steps['dbt_marts']:>10.2f} {steps['training_set']:>13.2f}"
                f" {run['seconds']:>7.1f}"
            )
        print(f"marts_last_over_second={marts[-1] / marts[1]:.2f}")


if __name__ == "__main__":
    main()
