"""Hyperparameter search with cross-validation, and a number of boosting rounds noise cannot pick.

Each trial is one parameter set, scored by stratified k-fold cross-validation on the training split
(`lightgbm.cv` with scikit-learn's `StratifiedKFold`); the candidates come from scikit-learn's
`ParameterSampler`. Trial 0 is always the use case's configured parameters, so the search can only
keep or improve on them (in CV terms). These two well-kept libraries, already pinned, do the job;
a dedicated tuner (Optuna, hyperopt) would add a dependency for little gain at a budget of a few
trials.

Why cross-validated rounds: early stopping on one validation split of ~70 buyers stopped after 3
rounds on noise (measured on main, README "Model lifecycle"); the fold-mean curve is much smoother,
and rounds before `min_rounds` never count as the best. LightGBM's own `early_stopping` callback has
no minimum, hence the small callback below.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import lightgbm as lgb

# LightGBM, scikit-learn and SciPy are imported in the functions that use them (see ml/training.py).

TUNED = ("learning_rate", "num_leaves", "min_child_samples", "feature_fraction", "bagging_fraction", "lambda_l2")


def search_space() -> dict:
    """Where the search looks (values of TUNED). Wide enough for 5k to 1M customers; each trial is
    cross-validated."""
    from scipy.stats import loguniform

    values = (
        loguniform(0.01, 0.15),
        [3, 5, 7, 15, 31, 63],
        [10, 20, 40, 80, 160, 320],
        [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        [0.6, 0.7, 0.8, 0.9, 1.0],
        loguniform(0.1, 50.0),
    )
    return dict(zip(TUNED, values, strict=True))


@dataclass
class Trial:
    trial: int
    params: dict
    cv_metric: str
    cv_mean: float
    cv_std: float
    best_rounds: int
    seconds: float
    curve: list[float] = field(default_factory=list)  # fold-mean metric per round


@dataclass
class SearchResult:
    trials: list[Trial]
    best: Trial
    folds: int
    search_rows: int
    stopped_by_time: bool

    def table(self) -> pd.DataFrame:
        """One row per trial: the tuned parameters, the CV metric and the rounds it chose."""
        rows = [
            {
                "trial": t.trial,
                **{name: t.params.get(name) for name in TUNED},
                "cv_metric": t.cv_metric,
                "cv_mean": t.cv_mean,
                "cv_std": t.cv_std,
                "best_rounds": t.best_rounds,
                "seconds": t.seconds,
                "is_best": t.trial == self.best.trial,
            }
            for t in self.trials
        ]
        return pd.DataFrame(rows)


def early_stopping_after(min_rounds: int, patience: int, curve: list[float]):
    """Early stopping on the first metric that ignores rounds before `min_rounds` and records the curve."""
    import lightgbm as lgb

    state: dict = {}

    def callback(env: lgb.callback.CallbackEnv) -> None:
        _, _, score, higher_is_better, *_ = env.evaluation_result_list[0]
        curve.append(float(score))
        if env.iteration + 1 < min_rounds:
            return
        better = "score" not in state or (score > state["score"] if higher_is_better else score < state["score"])
        if better:
            state.update(score=score, iteration=env.iteration, results=env.evaluation_result_list)
        elif env.iteration - state["iteration"] >= patience:
            raise lgb.callback.EarlyStopException(state["iteration"], state["results"])

    callback.order = 30  # like lightgbm.early_stopping: after the evaluation is recorded
    return callback


def cross_validate(
    dataset: lgb.Dataset, params: dict, *, folds: int, max_rounds: int, min_rounds: int, patience: int, seed: int
) -> tuple[float, float, int, list[float]]:
    """(fold-mean metric at the chosen round, its fold std, chosen rounds, fold-mean curve)."""
    import lightgbm as lgb
    from sklearn.model_selection import StratifiedKFold

    curve: list[float] = []
    labels = dataset.get_label()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    results = lgb.cv(
        params,
        dataset,
        num_boost_round=max_rounds,
        folds=list(splitter.split(np.zeros(len(labels)), labels)),
        callbacks=[early_stopping_after(min(min_rounds, max_rounds), patience, curve)],
        seed=seed,
    )
    mean_key = next(k for k in results if k.endswith("-mean"))
    means, stds = results[mean_key], results[mean_key.replace("-mean", "-stdv")]
    return float(means[-1]), float(stds[-1]), len(means), curve


def search(
    features: pd.DataFrame,
    labels: np.ndarray,
    categorical: list[str],
    base_params: dict,
    *,
    trials: int,
    folds: int,
    max_rounds: int,
    min_rounds: int,
    patience: int,
    max_seconds: float,
    max_rows: int,
    seed: int,
) -> SearchResult:
    """Cross-validate the base parameters and up to `trials - 1` sampled alternatives; the best trial
    has the best fold-mean metric. Stops starting trials after `max_seconds` (trial 0 always runs).
    Above `max_rows` training rows the search runs on a stratified sample of that size."""
    import lightgbm as lgb
    from sklearn.model_selection import ParameterSampler, train_test_split

    if len(features) > max_rows:
        features, _, labels, _ = train_test_split(
            features, labels, train_size=max_rows, stratify=labels, random_state=seed
        )
    buyers = int(np.sum(labels))
    folds = max(2, min(folds, buyers, len(labels) - buyers))
    dataset = lgb.Dataset(
        features,
        label=labels,
        categorical_feature=categorical or "auto",
        params={"feature_pre_filter": False},  # min_child_samples changes between trials
        free_raw_data=False,
    )
    candidates = [dict(base_params)]
    if trials > 1:
        sampler = ParameterSampler(search_space(), n_iter=trials - 1, random_state=seed)
        candidates += [{**base_params, **{k: _plain(v) for k, v in sampled.items()}} for sampled in sampler]
    started, done, stopped_by_time = time.perf_counter(), [], False
    for number, params in enumerate(candidates):
        if number > 0 and time.perf_counter() - started > max_seconds:
            stopped_by_time = True
            break
        trial_start = time.perf_counter()
        mean, std, rounds, curve = cross_validate(
            dataset, params, folds=folds, max_rounds=max_rounds, min_rounds=min_rounds, patience=patience, seed=seed
        )
        done.append(
            Trial(number, params, base_params["metric"], mean, std, rounds, time.perf_counter() - trial_start, curve)
        )
    higher_is_better = base_params["metric"] != "binary_logloss"
    best = (max if higher_is_better else min)(done, key=lambda t: t.cv_mean)
    return SearchResult(done, best, folds, len(labels), stopped_by_time)


def _plain(value):
    """numpy scalars from the sampler as plain Python numbers (JSON, LightGBM params)."""
    return value.item() if hasattr(value, "item") else value
