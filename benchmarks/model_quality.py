"""Model quality of the platform's training against a bare, untuned LightGBM script, on the same split.

For each bundled use case (caravan: the CoIL 2000 export; swiss_bank: the synthetic generator at a
modest size) and several seeds (split seed and training seed), prints on the test split:
top-decile capture, top-20% capture, ROC AUC, PR AUC, Brier score against the base rate's, ECE and
the mean score against the realized rate, and the training time, for

- `platform`: ml/training.py with the use case's parameters and search budget (search, CV rounds,
  sigmoid calibration on the validation split);
- `no search`: the same with `search_trials: 1` (only the configured parameters, CV rounds);
- `isotonic`: the platform's booster with isotonic instead of sigmoid calibration;
- `old: val. ES`: the training before this change: one validation split for early stopping (patience
  100) and the log-weight offset instead of a calibration;
- `bare script`: `lightgbm.LGBMClassifier()` with default parameters fitted on train + validation
  (all the data the platform used), no weighting, no calibration.

Features are computed here as the dbt mart does (caravan's three portfolio sums, swiss_bank's
balance per product). Timing figures are distorted by other load on the machine; compare ratios.

    .venv/bin/python benchmarks/model_quality.py [--seeds 0 1 2] [--swiss-customers 50000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightgbm as lgb  # noqa: E402
import pandas as pd  # noqa: E402

from mlops_assets.ml.calibration import apply_calibration, fit_calibration  # noqa: E402
from mlops_assets.ml.datasets import assign_splits  # noqa: E402
from mlops_assets.ml.evaluation import classification_metrics  # noqa: E402
from mlops_assets.ml.training import (  # noqa: E402
    lightgbm_params,
    positive_class_weight,
    predict_proba,
    prepare_features,
    raw_scores,
    train_propensity_model,
)
from mlops_assets.use_cases import get_use_case  # noqa: E402


def caravan_frame(use_case) -> pd.DataFrame:
    dictionary = use_case.load_data_dictionary()
    frame = pd.read_csv(use_case.source_path).rename(
        columns=dict(zip(dictionary["source_column"], dictionary["feature_name"], strict=True))
    )
    frame[use_case.target] = (frame[use_case.target] == "Yes").astype(int)
    policies = [c for c in frame.columns if c.startswith("num_") and c.endswith("_policies")]
    contributions = [c for c in frame.columns if c.startswith("contribution_")]
    frame["total_policies"] = frame[policies].sum(axis=1)
    frame["policy_types_held"] = (frame[policies] > 0).sum(axis=1)
    frame["total_contribution_class"] = frame[contributions].sum(axis=1)
    frame["customer_id"] = [f"CV{i:07d}" for i in range(1, len(frame) + 1)]
    return frame


def swiss_bank_frame(use_case, customers: int) -> pd.DataFrame:
    from mlops_assets.synthetic.swiss_bank import iter_customers

    frame = pd.concat(list(iter_customers(customers, seed=0)), ignore_index=True)
    frame[use_case.target] = frame[use_case.target].astype(int)
    frame["balance_per_product"] = frame["balance_chf"] / frame["products_held"]
    frame["customer_id"] = frame["customer_id"].astype(str)
    return frame


def old_training(train, validation, features, target, params):
    """Before this change: early stopping on the validation split, log-weight offset."""
    weight = positive_class_weight(train[target].to_numpy(), params.class_weighting)
    categorical = [f.name for f in features if f.type == "categorical"]
    train_set = lgb.Dataset(prepare_features(train, features), train[target], categorical_feature=categorical or "auto")
    validation_set = lgb.Dataset(prepare_features(validation, features), validation[target], reference=train_set)
    booster = lgb.train(
        lightgbm_params(params, weight, len(train)),
        train_set,
        num_boost_round=params.max_rounds,
        valid_sets=[validation_set],
        callbacks=[lgb.early_stopping(100, verbose=False)],
    )
    return booster, -math.log(weight)


def row(case, seed, model, seconds, rounds, y, scores) -> dict:
    m = classification_metrics(y, scores)
    return {
        "use case": case,
        "seed": seed,
        "model": model,
        "top10% capture": m["top_decile_capture_rate"],
        "top20% capture": m["top_20pct_capture_rate"],
        "ROC AUC": m["roc_auc"],
        "PR AUC": m["pr_auc"],
        "Brier": m["brier_score"],
        "base Brier": m["base_rate_brier"],
        "ECE": m["ece"],
        "mean score": m["mean_score"],
        "buyer rate": m["realized_rate"],
        "rounds": rounds,
        "train s": seconds,
    }


def evaluate(case: str, use_case, frame: pd.DataFrame, seed: int) -> list[dict]:
    target, features = use_case.target, use_case.features
    frame = frame.assign(split=assign_splits(frame["customer_id"], frame[target], use_case.split.fractions, seed))
    parts = {name: part for name, part in frame.groupby("split")}
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    y = test[target].to_numpy()
    params = use_case.training.model_copy(update={"seed": seed})
    rows = []

    started = time.perf_counter()
    platform = train_propensity_model(train, validation, features, target, params)
    seconds = time.perf_counter() - started
    rows.append(row(case, seed, "platform", seconds, platform.best_iteration, y, platform.predict(test, features)))
    isotonic = fit_calibration(raw_scores(platform.booster, validation, features), validation[target], "isotonic")
    isotonic_scores = apply_calibration(isotonic, raw_scores(platform.booster, test, features))
    rows.append(row(case, seed, "isotonic", seconds, platform.best_iteration, y, isotonic_scores))

    started = time.perf_counter()
    plain = train_propensity_model(train, validation, features, target, params.model_copy(update={"search_trials": 1}))
    seconds = time.perf_counter() - started
    rows.append(row(case, seed, "no search", seconds, plain.best_iteration, y, plain.predict(test, features)))

    started = time.perf_counter()
    booster, offset = old_training(train, validation, features, target, params)
    seconds = time.perf_counter() - started
    old_scores = predict_proba(booster, test, features, offset)
    rows.append(row(case, seed, "old: val. ES", seconds, booster.best_iteration, y, old_scores))

    started = time.perf_counter()
    fit_on = pd.concat([train, validation])
    bare = lgb.LGBMClassifier(random_state=seed, verbose=-1, n_jobs=1 if len(fit_on) < 20_000 else 2)
    bare.fit(prepare_features(fit_on, features), fit_on[target])
    seconds = time.perf_counter() - started
    bare_scores = bare.predict_proba(prepare_features(test, features))[:, 1]
    rows.append(row(case, seed, "bare script", seconds, bare.n_estimators, y, bare_scores))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--swiss-customers", type=int, default=50_000)
    args = parser.parse_args()
    caravan, swiss_bank = get_use_case("caravan"), get_use_case("swiss_bank")
    frames = {
        "caravan": (caravan, caravan_frame(caravan)),
        f"swiss_bank {args.swiss_customers // 1000}k": (swiss_bank, swiss_bank_frame(swiss_bank, args.swiss_customers)),
    }
    rows = []
    for case, (use_case, frame) in frames.items():
        for seed in args.seeds:
            rows.extend(evaluate(case, use_case, frame, seed))
            print(f"done: {case} seed {seed}", file=sys.stderr)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nMean over seeds:")
    means = table.drop(columns=["seed"]).groupby(["use case", "model"], sort=False).mean()
    print(means.to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nPlatform minus bare script, top-20% capture, per seed:")
    for case in frames:
        part = table[table["use case"] == case].set_index(["seed", "model"])["top20% capture"].unstack()
        print(f"  {case}: " + ", ".join(f"{d:+.4f}" for d in (part["platform"] - part["bare script"])))


if __name__ == "__main__":
    main()
