"""Time the top-three reasons (LightGBM pred_contrib) for the contacted top decile of a large population.

    .venv/bin/python benchmarks/explanations_benchmark.py [--rows 1000000] [--features 50]
        [--rounds 200] [--leaves 31] [--top-share 0.1] [--sweep-rows 20000] [--skip-sweep]

A synthetic population (numeric features plus a few categoricals) and a model of fixed size: trees x
leaves set the TreeSHAP cost, so the model is trained without early stopping on a sample of the rows.
Times: scoring every customer, reasons for the top share (the headline figure), then a sweep of
chunk_size and num_threads on a smaller slice, and an extrapolation to explaining everyone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlops_assets.ml.explanations import explain_top_share, top_reasons  # noqa: E402
from mlops_assets.ml.training import FeatureSpec, predict_proba, prepare_features  # noqa: E402


def synthetic_population(rows: int, features: int, seed: int = 0) -> tuple[pd.DataFrame, list[FeatureSpec]]:
    """Numeric features x0.. and every tenth feature categorical (12 levels); a ~6% buyer rate."""
    rng = np.random.default_rng(seed)
    specs, columns = [], {}
    logit = np.full(rows, -3.2)
    for j in range(features):
        name = f"f{j:02d}"
        if j % 10 == 9:
            codes = rng.integers(0, 12, rows)
            columns[name] = pd.Categorical.from_codes(codes, categories=[f"seg_{c}" for c in range(12)])
            logit += np.where(codes % 3 == 0, 0.4, -0.1)
            specs.append(FeatureSpec(name=name, type="categorical"))
        else:
            values = rng.normal(size=rows).astype(np.float64)
            columns[name] = values
            logit += (0.5 / (1 + j // 5)) * values + (0.2 * values**2 if j % 7 == 0 else 0.0)
            specs.append(FeatureSpec(name=name, type="numeric"))
    frame = pd.DataFrame(columns)
    frame["bought"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return frame, specs


def train_fixed_size(frame: pd.DataFrame, specs: list[FeatureSpec], rounds: int, leaves: int) -> lgb.Booster:
    params = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": leaves,
        "min_child_samples": 20,
        "feature_fraction": 0.7,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "num_threads": os.cpu_count(),
        "force_row_wise": True,
        "verbosity": -1,
        "seed": 42,
    }
    categorical = [f.name for f in specs if f.type == "categorical"]
    data = lgb.Dataset(prepare_features(frame, specs), label=frame["bought"], categorical_feature=categorical)
    return lgb.train(params, data, num_boost_round=rounds)


def tree_shape(booster: lgb.Booster) -> tuple[float, float]:
    """Mean leaves and mean leaf depth per tree: TreeSHAP costs about trees x leaves x depth^2 per row."""
    trees = booster.trees_to_dataframe()
    leaves = trees[trees["left_child"].isna()]
    return leaves.groupby("tree_index").size().mean(), leaves["node_depth"].sub(1).mean()


def timed(label: str, rows: int, run) -> tuple[float, object]:
    """Wall seconds and rows/s; CPU seconds (all threads) show parallelism and contention."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = run()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(
        f"{label:<58} {rows:>9,} rows {seconds:8.2f} s {rows / seconds:>8,.0f} rows/s  "
        f"cpu {cpu:7.2f} s ({rows / cpu:,.0f} rows per cpu-s)",
        flush=True,
    )
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--leaves", type=int, default=31)
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--top-share", type=float, default=0.1)
    parser.add_argument("--sweep-rows", type=int, default=20_000)
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()
    print(f"lightgbm {lgb.__version__}, {os.cpu_count()} cores")

    started = time.perf_counter()
    frame, specs = synthetic_population(args.rows, args.features)
    print(f"population: {args.rows:,} rows x {args.features} features in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    booster = train_fixed_size(frame.iloc[: args.train_rows], specs, args.rounds, args.leaves)
    leaves, depth = tree_shape(booster)
    print(
        f"model: {booster.num_trees()} trees, {leaves:.1f} leaves and leaf depth {depth:.1f} on average, "
        f"trained on {args.train_rows:,} rows in {time.perf_counter() - started:.1f} s"
    )
    names = {f.name: f"Readable name of {f.name}" for f in specs}

    _, scores = timed("score everyone (predict_proba)", args.rows, lambda: predict_proba(booster, frame, specs))
    explained_rows = int(args.top_share * args.rows)
    seconds, explained = timed(
        f"reasons for the top {args.top_share:.0%} (explain_top_share, defaults)",
        explained_rows,
        lambda: explain_top_share(booster, frame, specs, scores, names, top_share=args.top_share),
    )
    print(f"  -> {explained.explained:,} customers explained, coverage {explained.coverage:.1%}")
    print(f"  -> all {args.rows:,} customers would take ~{seconds * args.rows / explained_rows:,.0f} s")
    print(explained.reasons.head(3).T.to_string())

    if args.skip_sweep:
        return
    sample = frame.iloc[: args.sweep_rows]
    print(f"\nsweep on {len(sample):,} rows (num_threads 0 = all cores):")
    for num_threads in (1, 2, 0):
        for chunk_size in (2_000, 10_000, 50_000):
            if chunk_size > len(sample) and chunk_size != 50_000:
                continue
            timed(
                f"  top_reasons num_threads={num_threads} chunk_size={chunk_size:,}",
                len(sample),
                lambda n=num_threads, c=chunk_size: top_reasons(
                    booster, sample, specs, names, chunk_size=c, num_threads=n
                ),
            )
    # What part of the time is TreeSHAP itself, and what part the top-k and text around it.
    prepared = prepare_features(sample, specs)
    timed(
        "  bare booster.predict(pred_contrib=True), all cores",
        len(sample),
        lambda: booster.predict(prepared, pred_contrib=True, num_threads=0),
    )


if __name__ == "__main__":
    main()
