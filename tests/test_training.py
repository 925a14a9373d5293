import json
from datetime import datetime

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.artifacts import ArtifactIntegrityError, ModelArtifact
from mlops_assets.ml.calibration import apply_calibration, fit_calibration, is_calibrated
from mlops_assets.ml.evaluation import classification_metrics
from mlops_assets.ml.training import (
    FeatureSpec,
    TrainingParams,
    matrix_of_values,
    model_matrix,
    predict_proba,
    prepare_features,
    raw_scores,
    train_propensity_model,
)

FEATURES = [
    FeatureSpec(name="age", type="numeric"),
    FeatureSpec(name="region", type="categorical"),
    FeatureSpec(name="noise", type="numeric"),
]


def synthetic_customers(n: int, seed: int) -> pd.DataFrame:
    """Young customers in region B buy more; `noise` carries no signal. ~8% buyers."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    region = rng.choice(["A", "B", "C"], n)
    logit = -3.2 - 0.06 * (age - 45) + 1.5 * (region == "B")
    bought = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "age": age,
            "region": region,
            "noise": rng.normal(size=n),
            "bought": bought.astype(int),
            "true_logit": logit,
        }
    )


@pytest.fixture(scope="module")
def trained():
    params = TrainingParams(
        num_leaves=7, min_child_samples=30, class_weighting="balanced", max_rounds=300, search_trials=3
    )
    model = train_propensity_model(
        synthetic_customers(6000, 1), synthetic_customers(2000, 2), FEATURES, "bought", params
    )
    return model


def test_model_learns_the_signal(trained):
    holdout = synthetic_customers(4000, 3)
    scores = trained.predict(holdout, FEATURES)
    metrics = classification_metrics(holdout["bought"], scores)
    oracle = classification_metrics(holdout["bought"], 1 / (1 + np.exp(-holdout["true_logit"])))
    assert metrics["roc_auc"] > oracle["roc_auc"] - 0.03
    assert metrics["top_decile_lift"] > 2.0
    assert 30 <= trained.best_iteration < 300  # cross-validated early stopping did stop, after min_rounds


def test_weighted_training_is_calibrated_back_to_probabilities(trained):
    holdout = synthetic_customers(4000, 3)
    calibrated = classification_metrics(holdout["bought"], trained.predict(holdout, FEATURES))
    uncorrected = predict_proba(trained.booster, holdout, FEATURES, 0.0)
    assert trained.scale_pos_weight > 5
    assert calibrated["brier_score"] < calibrated["base_rate_brier"]
    assert abs(calibrated["mean_score"] - calibrated["realized_rate"]) < 0.2 * calibrated["realized_rate"]
    assert is_calibrated(calibrated, max_ece=0.03, max_relative_mean_gap=0.2)[0]
    assert uncorrected.mean() > 2 * holdout["bought"].mean()


def test_a_deliberately_short_model_is_still_calibrated():
    """Three boosting rounds with a balanced class weight: the log-weight offset is far off (boosting has
    not absorbed the weight), the calibration fitted on the validation split is not."""
    params = TrainingParams(
        num_leaves=7,
        min_child_samples=30,
        class_weighting="balanced",
        max_rounds=3,
        min_rounds=3,
        search_trials=1,
    )
    short = train_propensity_model(
        synthetic_customers(6000, 1), synthetic_customers(2000, 2), FEATURES, "bought", params
    )
    assert short.best_iteration == 3
    holdout = synthetic_customers(6000, 7)
    calibrated = classification_metrics(holdout["bought"], short.predict(holdout, FEATURES))
    passed, summary = is_calibrated(calibrated, max_ece=0.03, max_relative_mean_gap=0.2)
    assert passed, summary
    # The old correction (subtract log(weight) from the raw score) on the same trees: the check fails.
    offset_only = predict_proba(short.booster, holdout, FEATURES, short.score_offset)
    passed, summary = is_calibrated(classification_metrics(holdout["bought"], offset_only), 0.03, 0.2)
    assert not passed and "mean score" in summary


def test_calibration_check_fails_for_miscalibrated_scores_and_passes_for_true_probabilities():
    holdout = synthetic_customers(6000, 8)
    truth = 1 / (1 + np.exp(-holdout["true_logit"].to_numpy()))
    assert is_calibrated(classification_metrics(holdout["bought"], truth), 0.03, 0.2)[0]
    for distorted in (truth / 3, np.minimum(truth * 3, 1.0), np.full(len(truth), holdout["bought"].mean())):
        passed, summary = is_calibrated(classification_metrics(holdout["bought"], distorted), 0.03, 0.2)
        assert not passed, summary


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_stored_calibration_reproduces_scikit_learn(trained, method):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    from mlops_assets.ml.calibration import _raw_score_estimator

    validation = synthetic_customers(2000, 2)
    raw = raw_scores(trained.booster, validation, FEATURES).reshape(-1, 1)
    stored = fit_calibration(raw, validation["bought"], method)
    json.dumps(stored)  # plain data
    reference = CalibratedClassifierCV(
        FrozenEstimator(_raw_score_estimator()().fit(raw, None)), method=method, ensemble=False
    )
    reference.fit(raw, validation["bought"])
    holdout_raw = raw_scores(trained.booster, synthetic_customers(500, 9), FEATURES)
    np.testing.assert_allclose(
        apply_calibration(stored, holdout_raw), reference.predict_proba(holdout_raw.reshape(-1, 1))[:, 1], atol=1e-12
    )


def test_search_records_every_trial_starts_from_the_configured_params_and_honours_min_rounds():
    params = TrainingParams(num_leaves=7, min_child_samples=30, max_rounds=200, min_rounds=40, search_trials=4)
    noise = synthetic_customers(3000, 11).assign(bought=lambda f: np.random.default_rng(0).permutation(f["bought"]))
    model = train_propensity_model(noise, synthetic_customers(1000, 12), FEATURES, "bought", params)
    table = model.search.table()
    assert len(table) == 4 and table["is_best"].sum() == 1
    assert table.iloc[0]["num_leaves"] == 7 and table.iloc[0]["min_child_samples"] == 30
    assert (table["best_rounds"] >= 40).all()  # pure noise: no trial stops before min_rounds
    best = table[table["is_best"]].iloc[0]
    assert best["cv_mean"] == table["cv_mean"].max() and model.best_iteration == best["best_rounds"]
    assert len(model.validation_curve) == model.best_iteration


def test_search_stops_starting_trials_after_its_time_budget():
    params = TrainingParams(num_leaves=7, max_rounds=100, search_trials=20, search_max_seconds=0.01)
    model = train_propensity_model(
        synthetic_customers(2000, 13), synthetic_customers(800, 14), FEATURES, "bought", params
    )
    assert len(model.search.trials) == 1 and model.search.stopped_by_time


def test_categories_unseen_in_training_score_without_error(trained):
    frame = synthetic_customers(10, 4).assign(region="Z")
    scores = trained.predict(frame, FEATURES)
    assert np.isfinite(scores).all()


def test_missing_feature_column_is_named():
    with pytest.raises(KeyError, match="region"):
        prepare_features(pd.DataFrame({"age": [1], "noise": [0.0]}), FEATURES)


def _prepared_column_by_column(frame: pd.DataFrame, features: list[FeatureSpec]) -> pd.DataFrame:
    """prepare_features as it was before numeric columns went through as one block (the reference)."""
    prepared = {}
    for feature in features:
        column = frame[feature.name]
        if feature.type == "categorical":
            prepared[feature.name] = column.astype("category")
        else:
            prepared[feature.name] = pd.to_numeric(column, errors="raise").astype("float64")
    return pd.DataFrame(prepared, index=frame.index)


def test_prepared_features_equal_column_by_column_conversion_for_every_kind_of_column(trained):
    features = [
        FeatureSpec(name="small", type="numeric"),
        FeatureSpec(name="region", type="categorical"),
        FeatureSpec(name="nullable", type="numeric"),
        FeatureSpec(name="flag", type="numeric"),
        FeatureSpec(name="maybe", type="numeric"),
        FeatureSpec(name="text_number", type="numeric"),
        FeatureSpec(name="code", type="categorical"),
        FeatureSpec(name="big", type="numeric"),
        FeatureSpec(name="ratio", type="numeric"),
    ]
    frame = pd.DataFrame(
        {
            "ratio": [0.5, np.nan, -1e300, 2.0],
            "small": np.array([1, -2, 3, 2**31 - 1], dtype=np.int32),
            "region": ["A", None, "Z", "B"],
            "nullable": pd.array([1, None, 3, -4], dtype="Int32"),
            "flag": [True, False, True, False],
            "maybe": pd.array([True, None, False, True], dtype="boolean"),
            "text_number": ["1.5", "2", None, "-3e2"],
            "code": np.array([5, 7, 5, 41], dtype=np.int32),
            "big": np.array([2**53, -(2**40), 0, 1], dtype=np.int64),
            "unused": ["x", "y", "z", "w"],
        },
        index=[10, 11, 12, 13],
    )
    pd.testing.assert_frame_equal(prepare_features(frame, features), _prepared_column_by_column(frame, features))
    one_row = frame.iloc[[2]]
    pd.testing.assert_frame_equal(prepare_features(one_row, features), _prepared_column_by_column(one_row, features))
    with pytest.raises(ValueError, match="Unable to parse"):
        prepare_features(frame.assign(text_number="abc"), features)
    # The model's own scores are unchanged, also for unseen and missing categories.
    scored = synthetic_customers(50, 6)
    scored.loc[:4, "region"] = ["Z", None, "A", "B", "C"]
    expected = trained.booster.predict(_prepared_column_by_column(scored, FEATURES), raw_score=True)
    assert np.array_equal(raw_scores(trained.booster, scored, FEATURES), expected)
    assert np.array_equal(raw_scores(trained.booster, scored, FEATURES, num_threads=1), expected)
    # model_matrix is LightGBM's own conversion of a DataFrame: same contributions too.
    prepared = prepare_features(scored, FEATURES)
    assert np.array_equal(
        trained.booster.predict(model_matrix(trained.booster, prepared), pred_contrib=True),
        trained.booster.predict(prepared, pred_contrib=True),
    )
    with pytest.raises(ValueError, match="trained with 1 categorical feature"):
        model_matrix(trained.booster, prepared.assign(noise=prepared["noise"].astype("category")))


def test_plain_values_encode_to_the_same_matrix_as_the_prepared_frame(trained):
    """The service's rows (Python values as DuckDB fetches them: int, float, Decimal, None) give LightGBM
    the numbers the batch path's DataFrame gives it, unseen and missing categories included."""
    from decimal import Decimal

    scored = synthetic_customers(40, 7)
    scored.loc[:4, "region"] = ["Z", None, "A", "B", "C"]
    scored.loc[5:6, "age"] = np.nan
    rows = {
        "age": [None if np.isnan(v) else int(v) for v in scored["age"]],
        "region": [None if v is None or v != v else str(v) for v in scored["region"]],
        "noise": [Decimal(str(round(v, 6))) for v in scored["noise"]],
    }
    frame = pd.DataFrame({name: pd.array(values, dtype=object) for name, values in rows.items()})
    frame["age"] = pd.to_numeric(frame["age"])
    frame["noise"] = frame["noise"].astype(float)
    expected = model_matrix(trained.booster, prepare_features(frame, FEATURES))
    matrix = matrix_of_values(trained.booster, FEATURES, rows.__getitem__)
    assert np.array_equal(matrix, expected, equal_nan=True)
    assert np.isnan(matrix[:2, 1]).all() and np.isnan(matrix[5:7, 0]).all()  # unseen/missing, missing age
    assert np.array_equal(trained.booster.predict(matrix, raw_score=True), raw_scores(trained.booster, frame, FEATURES))
    with pytest.raises(ValueError, match="could not convert"):
        matrix_of_values(trained.booster, FEATURES, {**rows, "age": ["old"] * 40}.__getitem__)


def _artifact(trained) -> ModelArtifact:
    return ModelArtifact.from_booster(
        trained.booster,
        model_version="t-1",
        use_case="test",
        target="bought",
        features=FEATURES,
        params={},
        metrics={"roc_auc": 0.8},
        trained_at=datetime(2026, 1, 1),
        calibration=trained.calibration,
    )


def test_artifact_is_lightgbm_text_and_round_trips_to_identical_scores(trained):
    artifact = _artifact(trained)
    assert artifact.model_text.startswith("tree\n")
    restored = ModelArtifact.from_record(artifact.to_record())
    frame = synthetic_customers(500, 5)
    assert np.array_equal(restored.predict(frame), artifact.predict(frame))
    assert np.array_equal(artifact.predict(frame), trained.predict(frame, FEATURES))
    assert isinstance(restored.load_booster(), lgb.Booster)
    assert restored.calibration == trained.calibration and "method" in json.loads(artifact.to_record()["calibration"])


def test_tampered_artifact_is_refused(trained):
    record = _artifact(trained).to_record()
    record["model_text"] = record["model_text"].replace("shrinkage=", "shrinkage=9", 1)
    tampered = ModelArtifact.from_record(record)
    with pytest.raises(ArtifactIntegrityError, match="checksum mismatch"):
        tampered.predict(synthetic_customers(5, 6))


def test_tampered_calibration_is_refused(trained):
    record = _artifact(trained).to_record()
    calibration = json.loads(record["calibration"])
    calibration["b"] = calibration["b"] - 1.0  # every score up: same ranking, wrong probabilities
    record["calibration"] = json.dumps(calibration)
    with pytest.raises(ArtifactIntegrityError, match="checksum mismatch"):
        ModelArtifact.from_record(record).predict(synthetic_customers(5, 6))
