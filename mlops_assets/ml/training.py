"""Training a LightGBM propensity model: plain functions over DataFrames."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field


class FeatureSpec(BaseModel):
    """One model input column of the feature mart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: Literal["numeric", "categorical"] = "numeric"


class TrainingParams(BaseModel):
    """LightGBM hyperparameters and the imbalance strategy. Defaults come from the use case."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(0.03, gt=0, le=1)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(40, ge=1)
    feature_fraction: float = Field(0.7, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(5.0, ge=0)
    max_rounds: int = Field(2000, ge=1)
    early_stopping_rounds: int = Field(100, ge=1)
    early_stopping_metric: Literal["auc", "average_precision", "binary_logloss"] = "auc"
    class_weighting: Literal["none", "balanced", "sqrt_balanced"] = Field(
        "sqrt_balanced",
        description=(
            "Weight of buyers relative to non-buyers: none = 1, balanced = non-buyers/buyers, "
            "sqrt_balanced = its square root. Scores are corrected back to probabilities."
        ),
    )
    num_threads: int = Field(2, ge=1)
    seed: int = 42


@dataclass
class TrainedModel:
    booster: lgb.Booster
    best_iteration: int
    scale_pos_weight: float
    # Weighted training inflates the log-odds by log(weight); adding this offset undoes it.
    score_offset: float
    validation_curve: list[float] = field(default_factory=list)


def prepare_features(frame: pd.DataFrame, features: list[FeatureSpec]) -> pd.DataFrame:
    """Select the model's columns in order; categoricals become pandas categories for LightGBM."""
    missing = [f.name for f in features if f.name not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from the input data: {', '.join(missing)}")
    prepared = {}
    for feature in features:
        column = frame[feature.name]
        if feature.type == "categorical":
            prepared[feature.name] = column.astype("category")
        else:
            prepared[feature.name] = pd.to_numeric(column, errors="raise").astype("float64")
    return pd.DataFrame(prepared, index=frame.index)


def positive_class_weight(labels: np.ndarray, strategy: str) -> float:
    positives = float(np.sum(labels == 1))
    negatives = float(np.sum(labels == 0))
    if positives == 0 or negatives == 0:
        raise ValueError("training data needs both buyers and non-buyers")
    ratio = negatives / positives
    return {"none": 1.0, "balanced": ratio, "sqrt_balanced": math.sqrt(ratio)}[strategy]


def train_propensity_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    features: list[FeatureSpec],
    target: str,
    params: TrainingParams,
) -> TrainedModel:
    """Fit a binary LightGBM classifier with early stopping on the validation split."""
    y_train = train[target].to_numpy()
    y_validation = validation[target].to_numpy()
    weight = positive_class_weight(y_train, params.class_weighting)
    categorical = [f.name for f in features if f.type == "categorical"]

    lgb_params = {
        "objective": "binary",
        "metric": params.early_stopping_metric,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_child_samples": params.min_child_samples,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": params.bagging_freq,
        "lambda_l2": params.lambda_l2,
        "scale_pos_weight": weight,
        "num_threads": params.num_threads,
        "seed": params.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    # Recency weights of the training window (ml/windows.py), if the window sets them.
    sample_weight = train["sample_weight"].to_numpy() if "sample_weight" in train.columns else None
    train_set = lgb.Dataset(
        prepare_features(train, features),
        label=y_train,
        weight=sample_weight,
        categorical_feature=categorical or "auto",
    )
    validation_set = lgb.Dataset(prepare_features(validation, features), label=y_validation, reference=train_set)
    history: dict = {}
    booster = lgb.train(
        lgb_params,
        train_set,
        num_boost_round=params.max_rounds,
        valid_sets=[validation_set],
        valid_names=["validation"],
        callbacks=[
            lgb.early_stopping(params.early_stopping_rounds, verbose=False),
            lgb.record_evaluation(history),
        ],
    )
    curve = history.get("validation", {}).get(params.early_stopping_metric, [])
    return TrainedModel(
        booster=booster,
        best_iteration=booster.best_iteration or booster.current_iteration(),
        scale_pos_weight=weight,
        score_offset=-math.log(weight),
        validation_curve=[float(v) for v in curve],
    )


def predict_proba(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    features: list[FeatureSpec],
    score_offset: float = 0.0,
    chunk_size: int = 250_000,
) -> np.ndarray:
    """Purchase probabilities, computed in chunks so memory stays bounded for millions of rows."""
    scores = np.empty(len(frame), dtype=np.float64)
    for start in range(0, len(frame), chunk_size):
        chunk = prepare_features(frame.iloc[start : start + chunk_size], features)
        raw = booster.predict(chunk, raw_score=True)
        scores[start : start + len(chunk)] = 1.0 / (1.0 + np.exp(-(raw + score_offset)))
    return scores
