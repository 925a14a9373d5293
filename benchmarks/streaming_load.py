"""A 2 GB customer export through the platform's ingestion: wall time and peak RSS (goal: < 3 GB RSS).

    nice .venv/bin/python benchmarks/streaming_load.py [--gigabytes 2] [--keep DIR]

1. Writes a CSV of synthetic Swiss bank customers (`mlops_assets/synthetic/swiss_bank.py`, with its
   `customer_id` column) of about `--gigabytes` into a temporary folder: the generator streams chunks
   to Parquet and DuckDB converts that to CSV, so writing the file never holds it in memory either.
2. In a separate process (its peak RSS is its own), loads the CSV into a new warehouse with
   `mlops_assets.ingestion.load_source`, the function the asset `<use case>/raw_customers` runs, on a
   connection opened as the platform opens it (`warehouse_connection`), with the use case's row rules:
   strict parsing of every value as text, row quarantine, duplicate ids, outliers, the load log and
   the ingestion ledger.
Prints the file's size and rows, the load's wall time, the loader's peak RSS and where DuckDB spilled.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_export(folder: Path, gigabytes: float) -> tuple[Path, int]:
    import duckdb

    from mlops_assets.synthetic.swiss_bank import write_parquet

    sample = folder / "sample.parquet"
    write_parquet(sample, 100_000)
    with duckdb.connect() as connection:
        connection.execute(f"copy (select * from read_parquet('{sample}')) to '{folder / 'sample.csv'}' (header)")
    per_customer = (folder / "sample.csv").stat().st_size / 100_000
    sample.unlink()
    (folder / "sample.csv").unlink()
    customers = int(gigabytes * 1e9 / per_customer)
    parquet = folder / "customers.parquet"
    write_parquet(parquet, customers)
    csv_path = folder / "customers.csv"
    with duckdb.connect(config={"memory_limit": "1GB", "preserve_insertion_order": "true"}) as connection:
        connection.execute(f"copy (select * from read_parquet('{parquet}')) to '{csv_path}' (header)")
    parquet.unlink()
    return csv_path, customers


def load(csv_path: Path, home: Path) -> None:
    """The child process: the platform's ingestion of the export, then its figures as JSON."""
    from mlops_assets.ingestion import load_source
    from mlops_assets.use_cases import get_use_case
    from mlops_assets.warehouse import warehouse_connection

    use_case = get_use_case("swiss_bank")
    started = time.perf_counter()
    with warehouse_connection(str(home / "warehouse.duckdb")) as connection:
        result = load_source(
            connection,
            path=csv_path,
            source_format="csv",
            table="swiss_bank.raw_customers",
            rules=use_case.row_rules(),
            load_id="load-benchmark",
            id_column=use_case.source.id_column,
            id_prefix=use_case.source.id_prefix,
        )
        settings = dict(
            connection.execute(
                "select name, value from duckdb_settings() where name in ('memory_limit', 'temp_directory')"
            ).fetchall()
        )
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": result.row_count,
                "quarantined_rows": result.quarantined_rows,
                "seconds": seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "duckdb": settings,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--keep", help="write the export here and keep it (default: a temporary folder)")
    parser.add_argument("--load", nargs=2, metavar=("CSV", "HOME"), help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.load:
        load(Path(args.load[0]), Path(args.load[1]))
        return
    with tempfile.TemporaryDirectory(prefix="mlops-streaming-") as temporary:
        folder = Path(args.keep or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        csv_path, customers = write_export(folder, args.gigabytes)
        size = csv_path.stat().st_size
        print(
            f"export: {csv_path} {size / 1e9:.2f} GB, {customers:,} customers, written in "
            f"{time.perf_counter() - started:.0f} s"
        )
        home = Path(temporary) / "home"
        home.mkdir()
        child = subprocess.run(
            [sys.executable, __file__, "--load", str(csv_path), str(home)], capture_output=True, text=True
        )
        if child.returncode != 0:
            sys.exit(f"the load failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        verdict = "met" if figures["peak_rss_mb"] < 3 * 1024 else "NOT met"
        print(
            f"load: {figures['rows']:,} rows ({figures['quarantined_rows']} quarantined) in {figures['seconds']:.0f} s "
            f"({size / 1e6 / figures['seconds']:.0f} MB/s), peak RSS {figures['peak_rss_mb']:,.0f} MB "
            f"(goal < 3 GB: {verdict}); DuckDB {figures['duckdb']}"
        )


if __name__ == "__main__":
    main()
