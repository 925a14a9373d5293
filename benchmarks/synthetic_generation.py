"""Time writing synthetic Swiss bank customers to Parquet, and show that memory stays bounded.

    .venv/bin/python benchmarks/synthetic_generation.py [--customers 1000000 3000000] [--ten-million]

Each size runs in a fresh child process, so its peak RSS (getrusage ru_maxrss) is its own and not
the high-water mark of an earlier, bigger run. The file goes to a temporary folder that is removed
afterwards. Peak RSS should be about the same for every size: the writer holds one chunk at a time.
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def measure(n_customers: int, seed: int, chunk_size: int, persona_shift: float) -> dict:
    """Generate n_customers into a temporary Parquet file in this process; figures as a dict."""
    import pyarrow.parquet as pq

    from mlops_assets.synthetic.swiss_bank import write_parquet

    after_imports = peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="synthetic-bench-") as folder:
        started = time.perf_counter()
        path = write_parquet(
            Path(folder) / "customers.parquet",
            n_customers,
            seed=seed,
            chunk_size=chunk_size,
            persona_shift=persona_shift,
        )
        seconds = time.perf_counter() - started
        rows = pq.ParquetFile(path).metadata.num_rows
        size = path.stat().st_size
    assert rows == n_customers
    return {
        "customers": n_customers,
        "seconds": seconds,
        "rows_per_second": n_customers / seconds,
        "file_mb": size / 1e6,
        "bytes_per_row": size / n_customers,
        "rss_after_imports_mb": after_imports,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--ten-million", action="store_true", help="also run 10,000,000 customers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=250_000)
    parser.add_argument("--persona-shift", type=float, default=0.0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one measurement, JSON to stdout
    args = parser.parse_args()

    if args.child is not None:
        print(json.dumps(measure(args.child, args.seed, args.chunk_size, args.persona_shift)))
        return

    sizes = args.customers + ([10_000_000] if args.ten_million else [])
    common = ["--seed", str(args.seed), "--chunk-size", str(args.chunk_size)]
    common += ["--persona-shift", str(args.persona_shift)]
    print(f"chunk size {args.chunk_size:,}, persona shift {args.persona_shift}, seed {args.seed}")
    header = (
        f"{'customers':>12} {'seconds':>8} {'rows/s':>11} {'file MB':>8} {'B/row':>6} "
        f"{'RSS after imports MB':>21} {'peak RSS MB':>12}"
    )
    print(header)
    for n in sizes:
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(n), *common],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout
        r = json.loads(output.strip().splitlines()[-1])
        print(
            f"{r['customers']:>12,} {r['seconds']:>8.2f} {r['rows_per_second']:>11,.0f} {r['file_mb']:>8.1f} "
            f"{r['bytes_per_row']:>6.1f} {r['rss_after_imports_mb']:>21.0f} {r['peak_rss_mb']:>12.0f}"
        )


if __name__ == "__main__":
    main()
