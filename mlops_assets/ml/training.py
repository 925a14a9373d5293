"""Training a LightGBM propensity model: plain functions over DataFrames."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.ml.calibration import apply_calibration, fit_calibration

if TYPE_CHECKING:
    import lightgbm as lgb

    from mlops_assets.ml.search import SearchResult

# LightGBM, scikit-learn and SciPy are imported where a model is trained, scored or searched (here and in
# ml/search.py, calibration.py, evaluation.py, artifacts.py), not when the code location loads: importing
# mlops_assets.definitions took 4.7-5.9 s of CPU without them and 5.8-8.8 s with them (3 alternating
# pairs, 2026-11-26, load about 2), in every `dagster dev`, code-server start and `mlops` command.


class FeatureSpec(BaseModel):
    """One model input column of the feature mart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: Literal["numeric", "categorical"] = "numeric"


class TrainingParams(BaseModel):
    """LightGBM hyperparameters, the imbalance strategy, the search budget and the calibration.

    Defaults come from the use case (`training:` in its YAML); every field is Launchpad config too.
    """

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(0.03, gt=0, le=1)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(40, ge=1)
    feature_fraction: float = Field(0.7, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(5.0, ge=0)
    max_rounds: int = Field(2000, ge=1)
    min_rounds: int = Field(
        30, ge=1, description="Boosting rounds before early stopping may pick a best round (capped at max_rounds)."
    )
    early_stopping_rounds: int = Field(
        100, ge=1, description="Patience: stop when the cross-validated metric has not improved for this many rounds."
    )
    early_stopping_metric: Literal["auc", "average_precision", "binary_logloss"] = "auc"
    cv_folds: int = Field(3, ge=2, le=10, description="Stratified folds of the training split for CV.")
    search_trials: int = Field(
        1,
        ge=1,
        description="Parameter sets tried by the cross-validated search; 1 = the configured parameters only.",
    )
    search_max_seconds: float = Field(60, gt=0, description="No new search trial starts after this many seconds.")
    search_max_rows: int = Field(
        100_000, ge=1_000, description="Above this many training rows the search runs on a stratified sample."
    )
    calibration: Literal["sigmoid", "isotonic"] = Field(
        "sigmoid",
        description="How raw scores become probabilities, fitted on the validation split (ml/calibration.py).",
    )
    class_weighting: Literal["none", "balanced", "sqrt_balanced"] = Field(
        "sqrt_balanced",
        description=(
            "Weight of buyers relative to non-buyers: none = 1, balanced = non-buyers/buyers, "
            "sqrt_balanced = its square root. Scores are calibrated back to probabilities."
        ),
    )
    num_threads: int = Field(2, ge=1)
    seed: int = 42


@dataclass
class TrainedModel:
    booster: lgb.Booster
    best_iteration: int
    scale_pos_weight: float
    # Raw score -> probability, fitted on the validation split (ml/calibration.py); JSON-ready data.
    calibration: dict
    # The LightGBM parameters the model was trained with (the search's best trial).
    lgb_params: dict
    search: SearchResult
    # Metric per round on the validation split (the plot in the UI) and the CV fold-mean curve.
    validation_curve: list[float] = field(default_factory=list)
    # Only the prior shift of the class weight: kept for old callers, NOT a calibration (see calibration.py).
    score_offset: float = 0.0

    def predict(self, frame: pd.DataFrame, features: list[FeatureSpec], chunk_size: int = 250_000) -> np.ndarray:
        """Calibrated purchase probabilities."""
        return predict_proba(self.booster, frame, features, chunk_size=chunk_size, calibration=self.calibration)


def prepare_features(frame: pd.DataFrame, features: list[FeatureSpec]) -> pd.DataFrame:
    """Select the model's columns in order; categoricals become pandas categories for LightGBM.

    Numeric features whose columns already hold numbers (integers, floats, booleans, also pandas'
    nullable types) become float64 as one block; others go through `pd.to_numeric` column by column.
    One call per column costs about 0.2 ms whatever the row count, which made this most of the time of
    scoring a single record in the scoring service (~90 features: 20 ms against 3 ms as one block).
    """
    missing = [f.name for f in features if f.name not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from the input data: {', '.join(missing)}")
    names = [f.name for f in features]
    dtypes = dict(zip(frame.columns, frame.dtypes, strict=True))
    if list(frame.columns) == names and all(
        isinstance(dtypes[f.name], pd.CategoricalDtype) if f.type == "categorical" else dtypes[f.name] == np.float64
        for f in features
    ):
        return frame  # prepared already (e.g. by the scoring service, once for scores and reasons)
    in_block = [f.name for f in features if f.type != "categorical" and pd.api.types.is_numeric_dtype(dtypes[f.name])]
    block = frame[in_block].to_numpy(dtype=np.float64, na_value=np.nan)
    prepared = pd.DataFrame(block, columns=in_block, index=frame.index)
    taken = set(in_block)
    for feature in features:
        if feature.name in taken:
            continue
        column = frame[feature.name]
        if feature.type == "categorical":
            prepared[feature.name] = column.astype("category")
        else:
            prepared[feature.name] = pd.to_numeric(column, errors="raise").astype("float64")
    return prepared[names]


def model_matrix(booster: lgb.Booster, prepared: pd.DataFrame) -> np.ndarray:
    """The float64 matrix LightGBM predicts from, for a frame from `prepare_features`.

    This is what `Booster.predict` does itself with a DataFrame (lightgbm.basic._data_from_pandas):
    each category column is recoded to the positions of the categories the model was trained with
    (stored in the model file as `pandas_categorical`), unseen or missing values become NaN, and the
    frame becomes one float64 matrix. Spelled out here, with the same pandas calls, because LightGBM's
    version makes a handful of pandas calls per column, costing 2-10 ms per predict call for one row,
    which the scoring service pays twice per record (score and SHAP reasons); the batch path uses it
    too, so both feed LightGBM the same numbers. tests/test_training.py checks it against LightGBM's
    own conversion (scores and contributions, unseen and missing categories included).
    """
    category_columns = [
        name
        for name, dtype in zip(prepared.columns, prepared.dtypes, strict=True)
        if isinstance(dtype, pd.CategoricalDtype)
    ]
    trained_categories = booster.pandas_categorical
    if trained_categories is None:  # no categories stored: LightGBM takes the frame's own
        trained_categories = [list(prepared[name].cat.categories) for name in category_columns]
    numbers = prepared.copy(deep=False)
    for name, categories in _categories_by_column(category_columns, trained_categories).items():
        numbers[name] = category_codes(prepared[name], categories)
    # One conversion of the whole frame: 5x faster than filling a matrix column by column at 1M rows.
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def matrix_of_values(booster: lgb.Booster, features: list[FeatureSpec], values: Callable[[str], list]) -> np.ndarray:
    """`model_matrix` for plain Python values (`values(name)`: a feature's values, None = missing), as
    the scoring service fetches a request's few feature rows from DuckDB. Same numbers as
    `model_matrix(booster, prepare_features(frame, features))` for the same rows (tests/test_training.py):
    numbers as float64, categories as positions among the trained ones (`category_codes`). Scoring one
    record with reasons took 19.7 ms of CPU through the DataFrame path (fetch as a DataFrame, prepare,
    encode twice) and 10.9 ms this way (in process, 200 records, this 2-core machine)."""
    category_columns = [f.name for f in features if f.type == "categorical"]
    if category_columns and booster.pandas_categorical is None:
        raise ValueError("the model stores no categories for its categorical features; score it from a DataFrame")
    categories = _categories_by_column(category_columns, booster.pandas_categorical or [])
    columns = [values(f.name) for f in features]
    matrix = np.empty((len(columns[0]) if columns else 0, len(features)), dtype=np.float64)
    for position, (feature, column) in enumerate(zip(features, columns, strict=True)):
        if feature.type == "categorical":
            matrix[:, position] = category_codes(column, categories[feature.name])
        else:
            matrix[:, position] = np.asarray(column, dtype=np.float64)  # None -> NaN, Decimal -> float
    return matrix


def _categories_by_column(category_columns: list[str], trained_categories: list) -> dict[str, list]:
    if len(trained_categories) != len(category_columns):
        raise ValueError(
            f"the model was trained with {len(trained_categories)} categorical feature(s), "
            f"the data has {len(category_columns)}: {', '.join(category_columns) or 'none'}"
        )
    return dict(zip(category_columns, trained_categories, strict=True))


def category_codes(values, categories: list) -> np.ndarray:
    """Positions of `values` among `categories` as float64; missing or unseen values are NaN."""
    codes = pd.Categorical(values, categories=categories).codes.astype(np.float64)
    codes[codes == -1] = np.nan
    return codes


def positive_class_weight(labels: np.ndarray, strategy: str) -> float:
    positives = float(np.sum(labels == 1))
    negatives = float(np.sum(labels == 0))
    if positives == 0 or negatives == 0:
        raise ValueError("training data needs both buyers and non-buyers")
    ratio = negatives / positives
    return {"none": 1.0, "balanced": ratio, "sqrt_balanced": math.sqrt(ratio)}[strategy]


# Below this many training rows LightGBM runs on one thread: a tree then takes well under a
# millisecond, and OpenMP's thread hand-off costs more than it saves (measured on a busy 2-core
# machine: 82 ms per tree with 2 threads against under 1 ms with one, 4,000 rows).
SINGLE_THREAD_ROWS = 20_000


def lightgbm_params(params: TrainingParams, scale_pos_weight: float, rows: int) -> dict:
    return {
        "objective": "binary",
        "metric": params.early_stopping_metric,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_child_samples": params.min_child_samples,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": params.bagging_freq,
        "lambda_l2": params.lambda_l2,
        "scale_pos_weight": scale_pos_weight,
        "num_threads": 1 if rows < SINGLE_THREAD_ROWS else params.num_threads,
        "seed": params.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


def train_propensity_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    features: list[FeatureSpec],
    target: str,
    params: TrainingParams,
) -> TrainedModel:
    """Search parameters and rounds by cross-validation on the training split, fit the best on the
    whole training split, and calibrate its scores on the validation split."""
    import lightgbm as lgb

    from mlops_assets.ml.search import search

    y_train = train[target].to_numpy()
    y_validation = validation[target].to_numpy()
    weight = positive_class_weight(y_train, params.class_weighting)
    categorical = [f.name for f in features if f.type == "categorical"]
    train_features = prepare_features(train, features)
    result = search(
        train_features,
        y_train,
        categorical,
        lightgbm_params(params, weight, len(train)),
        trials=params.search_trials,
        folds=params.cv_folds,
        max_rounds=params.max_rounds,
        min_rounds=params.min_rounds,
        patience=params.early_stopping_rounds,
        max_seconds=params.search_max_seconds,
        max_rows=params.search_max_rows,
        seed=params.seed,
    )
    # Recency weights of the training window (ml/windows.py), if the window sets them; the search's
    # cross-validation compares parameters unweighted.
    sample_weight = train["sample_weight"].to_numpy() if "sample_weight" in train.columns else None
    train_set = lgb.Dataset(
        train_features, label=y_train, weight=sample_weight, categorical_feature=categorical or "auto"
    )
    validation_set = lgb.Dataset(prepare_features(validation, features), label=y_validation, reference=train_set)
    history: dict = {}
    booster = lgb.train(
        result.best.params,
        train_set,
        num_boost_round=result.best.best_rounds,
        valid_sets=[validation_set],
        valid_names=["validation"],
        callbacks=[lgb.record_evaluation(history)],
    )
    raw_validation = raw_scores(booster, validation, features)
    curve = history.get("validation", {}).get(params.early_stopping_metric, [])
    return TrainedModel(
        booster=booster,
        best_iteration=result.best.best_rounds,
        scale_pos_weight=weight,
        calibration=fit_calibration(raw_validation, y_validation, params.calibration),
        lgb_params=result.best.params,
        search=result,
        validation_curve=[float(v) for v in curve],
        score_offset=-math.log(weight),
    )


def raw_scores(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    features: list[FeatureSpec],
    chunk_size: int = 250_000,
    num_threads: int = 0,
):
    """The booster's raw scores (log-odds scale, before calibration), in chunks. num_threads 0 = all
    cores; the scoring service passes 1 (a few records: OpenMP's hand-off costs more than it saves)."""
    raw = np.empty(len(frame), dtype=np.float64)
    for start, chunk, scores in predict_in_chunks(booster, frame, features, chunk_size, num_threads, raw_score=True):
        raw[start : start + len(chunk)] = scores
    return raw


def predict_in_chunks(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    features: list[FeatureSpec],
    chunk_size: int,
    num_threads: int,
    **predict_options,
) -> Iterator[tuple[int, pd.DataFrame, np.ndarray]]:
    """(start row, prepared chunk, `booster.predict` of it) per chunk: the one way scores and SHAP
    reasons, in batch and in the service, feed LightGBM, so reasons explain the very scores published."""
    for start in range(0, len(frame), chunk_size):
        chunk = prepare_features(frame.iloc[start : start + chunk_size], features)
        yield start, chunk, booster.predict(model_matrix(booster, chunk), num_threads=num_threads, **predict_options)


def predict_proba(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    features: list[FeatureSpec],
    score_offset: float = 0.0,
    chunk_size: int = 250_000,
    calibration: dict | None = None,
    num_threads: int = 0,
) -> np.ndarray:
    """Purchase probabilities, computed in chunks so memory stays bounded for millions of rows.

    With a `calibration` (every model trained since calibration exists) the raw score goes through
    it; without one, through the logistic function after `score_offset` (models from before).
    """
    return probabilities(raw_scores(booster, frame, features, chunk_size, num_threads), score_offset, calibration)


def probabilities(raw: np.ndarray, score_offset: float = 0.0, calibration: dict | None = None) -> np.ndarray:
    """Raw scores (log-odds) as probabilities: through the calibration, or the logistic function."""
    if calibration:
        return apply_calibration(calibration, raw)
    return 1.0 / (1.0 + np.exp(-(raw + score_offset)))
