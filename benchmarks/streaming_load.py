"""A 2 GB customer export through the platform's ingestion: wall time and peak RSS (goal: < 3 GB RSS).

    nice .venv/bin/python benchmarks/streaming_load.py [--gigabytes 2] [--keep DIR] [--export CSV]

1. Writes a CSV of synthetic Swiss bank customers (`mlops_assets/synthetic/swiss_bank.py`, with its
   `customer_id` column) of about `--gigabytes` into a temporary folder: the generator streams chunks
   to Parquet and DuckDB converts that to CSV, so writing the file never holds it in memory either.
2. In a separate process (its peak RSS is its own), loads the CSV into a new warehouse with
   `mlops_assets.ingestion.load_source`, the function the asset `<use case>/raw_customers` runs, on a
   connection opened as the platform opens it (`warehouse_connection`), with the use case's row rules:
   strict parsing of every value as text, row quarantine, duplicate ids, outliers, the load log and
   the ingestion ledger.
Prints the file's size and rows, the load's wall time, the loader's peak RSS, DuckDB's spill folder
and its largest size (sampled every 2 s), and the machine's load average before and after (the
machine may be shared: a busy one slows the load, not its memory). `--export CSV` loads an export
written before (by `--keep`) instead of writing one.
"""

from __future__ import annotations

import argparse
import contextlib
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
    from mlops_assets import warehouse
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
        stored = connection.execute("select count(*) from swiss_bank.raw_customers").fetchall()[0][0]
        settings = {
            "load memory_limit": warehouse.LOAD_MEMORY_LIMIT,  # the load's; reset to DuckDB's default after it
            "temp_directory": connection.execute("select current_setting('temp_directory')").fetchall()[0][0],
        }
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": result.row_count,
                "rows_stored": stored,
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
    parser.add_argument("--export", help="load this CSV (written by an earlier --keep) instead of writing one")
    parser.add_argument("--load", nargs=2, metavar=("CSV", "HOME"), help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.load:
        load(Path(args.load[0]), Path(args.load[1]))
        return
    with tempfile.TemporaryDirectory(prefix="mlops-streaming-") as temporary:
        if args.export:
            csv_path = Path(args.export)
            print(f"export: {csv_path} {csv_path.stat().st_size / 1e9:.2f} GB (written before)")
        else:
            folder = Path(args.keep or temporary)
            folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            csv_path, customers = write_export(folder, args.gigabytes)
            print(
                f"export: {csv_path} {csv_path.stat().st_size / 1e9:.2f} GB, {customers:,} customers, written in "
                f"{time.perf_counter() - started:.0f} s"
            )
        size = csv_path.stat().st_size
        home = Path(temporary) / "home"
        home.mkdir()
        load_before = os.getloadavg()
        child = subprocess.Popen(
            [sys.executable, __file__, "--load", str(csv_path), str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        spill_peak = 0
        while child.poll() is None:
            spill_peak = max(spill_peak, _folder_bytes(home / "warehouse.duckdb.tmp"))
            time.sleep(2)
        stdout, stderr = child.communicate()
        load_after = os.getloadavg()
        machine = (
            f"load average (1/5/15 min) before {'/'.join(f'{v:.1f}' for v in load_before)}, "
            f"after {'/'.join(f'{v:.1f}' for v in load_after)} on {os.cpu_count()} cores"
        )
        if child.returncode != 0:
            sys.exit(f"the load failed (exit {child.returncode}; {machine}):\n{stderr[-3000:]}")
        figures = json.loads(stdout.strip().splitlines()[-1])
        verdict = "met" if figures["peak_rss_mb"] < 3 * 1024 else "NOT met"
        print(
            f"load: {figures['rows']:,} rows read, {figures['rows_stored']:,} in swiss_bank.raw_customers "
            f"({figures['quarantined_rows']} quarantined) in {figures['seconds']:.0f} s "
            f"({size / 1e6 / figures['seconds']:.0f} MB/s), peak RSS {figures['peak_rss_mb']:,.0f} MB "
            f"(goal < 3 GB: {verdict}); DuckDB {figures['duckdb']}, spilled up to {spill_peak / 1e9:.1f} GB; {machine}"
        )


def _folder_bytes(folder: Path) -> int:
    """The size of DuckDB's spill folder now (files come and go while it runs)."""
    total = 0
    for entry in folder.glob("*") if folder.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            total += entry.stat().st_size
    return total


if __name__ == "__main__":
    main()
