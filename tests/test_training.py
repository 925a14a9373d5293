from datetime import datetime

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.artifacts import ArtifactIntegrityError, ModelArtifact
from mlops_assets.ml.evaluation import classification_metrics
from mlops_assets.ml.training import (
    FeatureSpec,
    TrainingParams,
    predict_proba,
    prepare_features,
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
    params = TrainingParams(num_leaves=7, min_child_samples=30, class_weighting="balanced", max_rounds=300)
    model = train_propensity_model(
        synthetic_customers(6000, 1), synthetic_customers(2000, 2), FEATURES, "bought", params
    )
    return model


def test_model_learns_the_signal(trained):
    holdout = synthetic_customers(4000, 3)
    scores = predict_proba(trained.booster, holdout, FEATURES, trained.score_offset)
    metrics = classification_metrics(holdout["bought"], scores)
    oracle = classification_metrics(holdout["bought"], 1 / (1 + np.exp(-holdout["true_logit"])))
    assert metrics["roc_auc"] > oracle["roc_auc"] - 0.03
    assert metrics["top_decile_lift"] > 2.0
    assert trained.best_iteration < 300  # early stopping on the validation split did stop


def test_weighted_training_is_corrected_back_to_probabilities(trained):
    holdout = synthetic_customers(4000, 3)
    corrected = predict_proba(trained.booster, holdout, FEATURES, trained.score_offset)
    uncorrected = predict_proba(trained.booster, holdout, FEATURES, 0.0)
    base_rate = holdout["bought"].mean()
    assert trained.scale_pos_weight > 5
    assert abs(corrected.mean() - base_rate) < 0.03
    assert uncorrected.mean() > 2 * base_rate


def test_categories_unseen_in_training_score_without_error(trained):
    frame = synthetic_customers(10, 4).assign(region="Z")
    scores = predict_proba(trained.booster, frame, FEATURES, trained.score_offset)
    assert np.isfinite(scores).all()


def test_missing_feature_column_is_named():
    with pytest.raises(KeyError, match="region"):
        prepare_features(pd.DataFrame({"age": [1], "noise": [0.0]}), FEATURES)


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
        score_offset=trained.score_offset,
    )


def test_artifact_is_lightgbm_text_and_round_trips_to_identical_scores(trained):
    artifact = _artifact(trained)
    assert artifact.model_text.startswith("tree\n")
    restored = ModelArtifact.from_record(artifact.to_record())
    frame = synthetic_customers(500, 5)
    assert np.array_equal(restored.predict(frame), artifact.predict(frame))
    assert isinstance(restored.load_booster(), lgb.Booster)


def test_tampered_artifact_is_refused(trained):
    record = _artifact(trained).to_record()
    record["model_text"] = record["model_text"].replace("shrinkage=", "shrinkage=9", 1)
    tampered = ModelArtifact.from_record(record)
    with pytest.raises(ArtifactIntegrityError, match="checksum mismatch"):
        tampered.predict(synthetic_customers(5, 6))
