"""Time drift profiling and comparison at a million rows.

    .venv/bin/python benchmarks/drift_benchmark.py [--rows N] [--features N] [--repeats N] [--consolidate]

Generates a seeded reference and a current batch of numeric features, half continuous (normal,
log-normal, uniform; some with 1% missing) and half integer-coded with heavy ties (0..9 codes with 70%
zeros, 1..6 ordinal classes, 0/1 flags) like the caravan export. A few current features are shifted
so the report has something to find. Times build_reference_profile and compare_to_reference (median
of the repeats) and prints seconds, rows/s, each call's working memory and the peak resident memory.
Targets: profile <= 5 s, compare <= 2 s at 1M rows x 40 features.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.ml.drift import build_reference_profile, compare_to_reference, summarize_drift  # noqa: E402
from mlops_assets.ml.training import FeatureSpec  # noqa: E402


def synthetic_features(rows: int, features: int, seed: int, shifted: set[str]) -> pd.DataFrame:
    """Feature k cycles through six generators; columns named in `shifted` move noticeably."""
    rng = np.random.default_rng(seed)
    columns = {}
    for k in range(features):
        name = f"f{k:02d}"
        shift = name in shifted
        kind = k % 6
        if kind == 0:
            values = rng.normal(0.5 if shift else 0.0, 1.0, rows)
        elif kind == 1:
            values = rng.lognormal(0.5 if shift else 0.0, 1.0, rows)
            values[rng.random(rows) < 0.01] = np.nan
        elif kind == 2:
            values = rng.uniform(0.0, 1.3 if shift else 1.0, rows)
        elif kind == 3:  # 0..9 codes, 70% zeros (50% when shifted)
            values = np.where(rng.random(rows) < (0.5 if shift else 0.7), 0, rng.integers(1, 10, rows))
        elif kind == 4:  # 1..6 ordinal classes centred on 3
            values = np.clip(np.rint(rng.normal(2.5 if shift else 3.0, 1.0, rows)), 1, 6).astype(np.int64)
        else:  # 0/1 flag
            values = (rng.random(rows) < (0.5 if shift else 0.3)).astype(np.int64)
        columns[name] = values
    return pd.DataFrame(columns, copy=False)  # no second copy, so the data sets the memory baseline


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def working_memory_mib(run) -> float:
    """Peak memory a call allocates beyond what exists already (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def median_seconds(run, repeats: int) -> tuple[float, object]:
    timings, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--consolidate",
        action="store_true",
        help="hold the columns in one 2-D block per dtype (as DataFrame.copy does); somewhat slower to read",
    )
    args = parser.parse_args()

    shifted = {f"f{k:02d}" for k in range(0, args.features, 7)}
    reference = synthetic_features(args.rows, args.features, seed=1, shifted=set())
    current = synthetic_features(args.rows, args.features, seed=2, shifted=shifted)
    if args.consolidate:
        reference, current = reference.copy(), current.copy()
    specs = [FeatureSpec(name=name) for name in reference.columns]
    rss_with_data = peak_rss_mib()

    profile_seconds, profile = median_seconds(lambda: build_reference_profile(reference, specs), args.repeats)
    compare_seconds, report = median_seconds(lambda: compare_to_reference(profile, current), args.repeats)
    summary = summarize_drift(report)
    profile_memory = working_memory_mib(lambda: build_reference_profile(reference, specs))
    compare_memory = working_memory_mib(lambda: compare_to_reference(profile, current))

    cells = args.rows * args.features
    print(f"{args.rows:,} rows x {args.features} numeric features, median of {args.repeats} runs")
    print(
        f"build_reference_profile  {profile_seconds:6.3f} s  {args.rows / profile_seconds:12,.0f} rows/s"
        f"  {cells / profile_seconds:14,.0f} values/s  {profile_memory:5.0f} MiB working memory"
    )
    print(
        f"compare_to_reference     {compare_seconds:6.3f} s  {args.rows / compare_seconds:12,.0f} rows/s"
        f"  {cells / compare_seconds:14,.0f} values/s  {compare_memory:5.0f} MiB working memory"
    )
    print(f"profile JSON size        {len(json.dumps(profile)) / 1024:6.1f} KiB")
    print(f"peak RSS                 {peak_rss_mib():6.0f} MiB ({rss_with_data:.0f} MiB holding the data)")
    print(f"drifted features         {summary['drifted_features']} (shifted: {sorted(shifted)})")


if __name__ == "__main__":
    main()
