"""How fast the drift checks notice a persona shift, and how often they cry wolf on stationary data.

    .venv/bin/python benchmarks/drift_detection.py [--seeds 20] [--batches 10] [--ramp 5]

For each seed, a champion is trained on the bundled customers (as the pipeline does) and replayed
batches of 2,000 customers are checked with the same functions and thresholds as the Dagster checks
`feature_drift` and `score_drift` (use case `monitoring:`). persona_shift grows linearly to its
strength over `--ramp` batches (a customer base that changes gradually). Prints, per scenario:
detection delay (batches until a check fails) and, for stationary replays, the false-alarm rate.
The typing below mirrors the dbt staging and portfolio models, so the benchmark needs no warehouse.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.ml.datasets import assign_splits  # noqa: E402
from mlops_assets.ml.drift import build_reference_profile, build_score_profile, compare_to_reference, score_drift  # noqa: E402
from mlops_assets.ml.training import predict_proba, train_propensity_model  # noqa: E402
from mlops_assets.replay import make_batch, ramped_strength, read_source  # noqa: E402
from mlops_assets.use_cases import get_use_case  # noqa: E402


def typed_features(export: pd.DataFrame, use_case) -> pd.DataFrame:
    """Source columns -> readable feature names and the dbt portfolio summaries."""
    dictionary = use_case.load_data_dictionary()
    frame = export.rename(columns=dict(zip(dictionary["source_column"], dictionary["feature_name"], strict=True)))
    counts = [c for c in frame.columns if c.startswith("num_") and c.endswith("_policies")]
    contributions = [c for c in frame.columns if c.startswith("contribution_")]
    frame["total_policies"] = frame[counts].sum(axis=1)
    frame["policy_types_held"] = (frame[counts] > 0).sum(axis=1)
    frame["total_contribution_class"] = frame[contributions].sum(axis=1)
    if use_case.target in frame:
        frame[use_case.target] = (frame[use_case.target] == "Yes").astype(int)
    return frame


def champion(use_case, source: pd.DataFrame):
    frame = typed_features(source, use_case)
    frame["customer_id"] = [f"CV{i:07d}" for i in range(1, len(frame) + 1)]
    frame["split"] = assign_splits(frame["customer_id"], frame[use_case.target], seed=use_case.split.seed)
    parts = {name: part for name, part in frame.groupby("split")}
    model = train_propensity_model(
        parts["train"], parts["validation"], use_case.features, use_case.target, use_case.training
    )
    scores = predict_proba(model.booster, frame, use_case.features, model.score_offset)
    profile = {"features": build_reference_profile(frame, use_case.features), "scores": build_score_profile(scores)}
    return model, profile


def check_batch(use_case, model, profile, batch_export: pd.DataFrame) -> tuple[bool, bool]:
    """(feature_drift failed, score_drift failed) for one batch, as the Dagster checks decide."""
    features = typed_features(batch_export, use_case)
    report = compare_to_reference(profile["features"], features, use_case.monitoring.drift)
    feature_failed = int(report["drifted"].sum()) > use_case.monitoring.max_drifted_features
    scores = predict_proba(model.booster, features, use_case.features, model.score_offset)
    score_failed = bool(score_drift(profile["scores"], scores, use_case.monitoring.drift)["drifted"])
    return feature_failed, score_failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--ramp", type=int, default=5)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.8])
    args = parser.parse_args()

    use_case = get_use_case("caravan")
    source = read_source(use_case.source_path)
    started = time.perf_counter()
    model, profile = champion(use_case, source)

    alarms = evaluations = 0
    for seed in range(args.seeds):
        for batch in range(1, args.batches + 1):
            export = make_batch(source, "stationary", batch_number=batch, seed=seed).customers
            alarms += any(check_batch(use_case, model, profile, export))
            evaluations += 1
    print(
        f"stationary: {alarms} false alarm(s) in {evaluations} batch checks ({alarms / evaluations:.1%}; target <= 5%)"
    )

    for strength in args.strengths:
        delays, missed = [], 0
        for seed in range(args.seeds):
            delay = None
            for batch in range(1, args.batches + 1):
                shift = ramped_strength(strength, batch, args.ramp)
                export = make_batch(source, "persona_shift", batch_number=batch, seed=seed, strength=shift).customers
                if any(check_batch(use_case, model, profile, export)):
                    delay = batch
                    break
            if delay is None:
                missed += 1
            else:
                delays.append(delay)
        detected = f"median {statistics.median(delays):g}, range {min(delays)}-{max(delays)}" if delays else "never"
        at_strength = np.mean([ramped_strength(strength, d, args.ramp) for d in delays]) if delays else float("nan")
        print(
            f"persona_shift strength {strength} (reached at batch {args.ramp}): detection delay {detected} "
            f"batches; detected in {len(delays)}/{args.seeds} replays within {args.batches} batches; "
            f"first alarm at effective strength {at_strength:.2f} on average"
        )
    print(f"({args.seeds} seeds, batches of 2,000 customers, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
