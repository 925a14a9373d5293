"""Reasons behind a score: the top features by LightGBM's own SHAP values (TreeSHAP, pred_contrib).

For each explained customer, reason_1..k are the features with the largest *signed* contributions,
largest positive first: for the customers marketing contacts the useful answer is "what raised this
score". With `only_positive=True` (the default) a slot stays empty when fewer than k features pushed
the score up, so a reason never reads as an argument for contacting the customer when it lowered the
score.

Contributions are in log-odds of the booster's raw score. A model's `score_offset` (the correction for
class weighting) only shifts the expected value (bias), so it changes no contribution and no ranking.

TreeSHAP costs about trees x leaves x depth^2 per row, orders of magnitude more than scoring, so
reasons are computed only for the contacted top share (`explain_top_share`), in large chunks with all
threads, and the top k is found with argpartition over the whole contribution matrix, never per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlops_assets.ml.fairness import top_share_mask
from mlops_assets.ml.training import FeatureSpec, predict_in_chunks

if TYPE_CHECKING:
    import lightgbm as lgb

MISSING_VALUE_TEXT = "missing"


def _check_features(booster: lgb.Booster, feature_specs: list[FeatureSpec]) -> list[str]:
    names = [f.name for f in feature_specs]
    if booster.feature_name() != names:
        raise ValueError(
            "feature specs do not match the model's features (names and order): "
            f"model {booster.feature_name()}, specs {names}"
        )
    return names


def _contribution_chunks(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    feature_specs: list[FeatureSpec],
    chunk_size: int,
    num_threads: int,
) -> Iterator[tuple[int, pd.DataFrame, np.ndarray]]:
    """(start row, prepared chunk, contributions of shape (rows, features + 1), bias last) per chunk."""
    _check_features(booster, feature_specs)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for start, chunk, contributions in predict_in_chunks(
        booster, frame, feature_specs, chunk_size, num_threads, pred_contrib=True
    ):
        yield start, chunk, np.asarray(contributions, dtype=np.float64)


def shap_contributions(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    feature_specs: list[FeatureSpec],
    chunk_size: int = 50_000,
    num_threads: int = 0,
) -> pd.DataFrame:
    """All contributions, one column per feature plus `expected_value`; each row sums to the raw score.

    Meant for checks and small frames; `top_reasons` keeps only the top k per row.
    """
    names = _check_features(booster, feature_specs)
    matrix = np.empty((len(frame), len(names) + 1), dtype=np.float64)
    for start, _, contributions in _contribution_chunks(booster, frame, feature_specs, chunk_size, num_threads):
        matrix[start : start + len(contributions)] = contributions
    return pd.DataFrame(matrix, index=frame.index, columns=[*names, "expected_value"])


def top_k_indices(contributions: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values per row, largest first (argpartition, then sort only k)."""
    k = min(k, contributions.shape[1])
    if k < contributions.shape[1]:
        candidates = np.argpartition(-contributions, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(k), (len(contributions), k))
    order = np.argsort(-np.take_along_axis(contributions, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


def _format_numbers(values: np.ndarray) -> np.ndarray:
    """Numbers as short text: whole numbers without '.0', others to 4 decimals, NaN as 'missing'."""
    text = np.full(len(values), MISSING_VALUE_TEXT, dtype=object)
    present = ~np.isnan(values)
    whole = present & (values == np.round(values)) & (np.abs(values) < 1e15)
    text[whole] = values[whole].astype(np.int64).astype(str)
    fractional = present & ~whole
    text[fractional] = np.round(values[fractional], 4).astype(str)
    return text


def _value_text(chunk: pd.DataFrame, columns: np.ndarray) -> np.ndarray:
    """Row i's value of feature columns[i] (-1: no reason) as text; loops over features, not rows."""
    text = np.full(len(columns), None, dtype=object)
    for column in np.unique(columns[columns >= 0]):
        rows = np.flatnonzero(columns == column)
        series = chunk.iloc[rows, column]
        if isinstance(series.dtype, pd.CategoricalDtype):
            labels = series.astype(object).to_numpy()
            text[rows] = np.where(pd.isna(labels), MISSING_VALUE_TEXT, labels.astype(str))
        else:
            text[rows] = _format_numbers(series.to_numpy(dtype=np.float64))
    return text


def _top_contributions(contributions: np.ndarray, taken: int, only_positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the columns (-1: empty slot) and values of the `taken` largest feature contributions."""
    per_feature = contributions[:, :-1]  # the last column is the expected value, not a feature
    top = top_k_indices(per_feature, taken)
    top_values = np.take_along_axis(per_feature, top, axis=1)
    if only_positive:
        top = np.where(top_values > 0, top, -1)
        top_values = np.where(top_values > 0, top_values, np.nan)
    return top, top_values


def reasons_of_matrix(
    booster: lgb.Booster,
    matrix: np.ndarray,
    feature_specs: list[FeatureSpec],
    raw_values: Callable[[str], list],
    readable_names: dict[str, str],
    k: int = 3,
    num_threads: int = 0,
    only_positive: bool = True,
) -> list[list[dict]]:
    """`top_reasons` for rows given as a model matrix (`training.matrix_of_values`), as each row's list
    of reasons (feature, label, value, contribution; empty slots left out): the scoring service's path
    for a request's few rows, where pandas' per-call costs were most of the work. Same reasons as
    `top_reasons` on the same rows (tests/test_explanations.py). `raw_values(name)` gives a categorical
    feature's values as fetched, for their text (the matrix holds only their positions)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    names = _check_features(booster, feature_specs)
    contributions = np.asarray(booster.predict(matrix, pred_contrib=True, num_threads=num_threads), dtype=np.float64)
    top, top_values = _top_contributions(contributions, min(k, len(names)), only_positive)
    categorical = {position for position, spec in enumerate(feature_specs) if spec.type == "categorical"}
    reasons = []
    for row in range(len(matrix)):
        row_reasons = []
        for column, contribution in zip(top[row], top_values[row], strict=True):
            if column < 0:
                continue
            name = names[column]
            if column in categorical:
                value = raw_values(name)[row]
                text = MISSING_VALUE_TEXT if value is None or pd.isna(value) else str(value)
            else:
                text = str(_format_numbers(matrix[row : row + 1, column])[0])
            label = readable_names.get(name, name)
            row_reasons.append({"feature": name, "label": label, "value": text, "contribution": float(contribution)})
        reasons.append(row_reasons)
    return reasons


def reason_columns(k: int) -> list[str]:
    return [f"reason_{i}_{part}" for i in range(1, k + 1) for part in ("feature", "label", "value", "contribution")]


def top_reasons(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    feature_specs: list[FeatureSpec],
    readable_names: dict[str, str],
    k: int = 3,
    chunk_size: int = 50_000,
    num_threads: int = 0,
    only_positive: bool = True,
) -> pd.DataFrame:
    """The k features that raised each customer's score most, with readable labels and values.

    `frame` is the raw feature table (like `predict_proba`, it is prepared here with the feature specs;
    extra columns are ignored). Returns a frame indexed like `frame` with, for i = 1..k, columns
    reason_i_feature, reason_i_label (readable name from the data dictionary, the feature name when the
    dictionary has none), reason_i_value (the customer's value, as text) and reason_i_contribution
    (signed log-odds). Slots are empty (None / NaN) beyond the model's feature count and, with
    `only_positive`, where fewer than k features raised the score. num_threads 0 = all cores.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    names = np.array(_check_features(booster, feature_specs), dtype=object)
    labels = np.array([readable_names.get(name, name) for name in names], dtype=object)
    taken = min(k, len(names))

    feature_index = np.full((len(frame), k), -1, dtype=np.int64)
    contribution = np.full((len(frame), k), np.nan)
    value = np.full((len(frame), k), None, dtype=object)
    for start, chunk, contributions in _contribution_chunks(booster, frame, feature_specs, chunk_size, num_threads):
        top, top_values = _top_contributions(contributions, taken, only_positive)
        stop = start + len(chunk)
        feature_index[start:stop, :taken] = top
        contribution[start:stop, :taken] = top_values
        for slot in range(taken):
            value[start:stop, slot] = _value_text(chunk, top[:, slot])

    result = {}
    empty = feature_index < 0
    for slot in range(k):
        index = feature_index[:, slot]
        result[f"reason_{slot + 1}_feature"] = np.where(empty[:, slot], None, names[index])
        result[f"reason_{slot + 1}_label"] = np.where(empty[:, slot], None, labels[index])
        result[f"reason_{slot + 1}_value"] = value[:, slot]
        result[f"reason_{slot + 1}_contribution"] = contribution[:, slot]
    return pd.DataFrame(result, index=frame.index, columns=reason_columns(k))


@dataclass
class TopShareExplanations:
    reasons: pd.DataFrame  # indexed like the scored frame, only the explained customers, best score first
    customers: int  # all scored customers
    explained: int  # customers with reasons: the top share by score

    @property
    def coverage(self) -> float:
        """Share of all scored customers that carry reasons."""
        return self.explained / self.customers if self.customers else 0.0


def explain_top_share(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    feature_specs: list[FeatureSpec],
    scores: np.ndarray,
    readable_names: dict[str, str],
    top_share: float = 0.1,
    k: int = 3,
    chunk_size: int = 50_000,
    num_threads: int = 0,
    only_positive: bool = True,
) -> TopShareExplanations:
    """Reasons for the customers marketing will contact: the top `top_share` of `scores`.

    The selection is `fairness.top_share_mask`: floor(top_share * n) customers by rank, ties by
    position, the same customers as decile 1 of the score table for top_share = 0.1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(frame):
        raise ValueError(f"{len(scores)} scores for {len(frame)} customers")
    selected = np.flatnonzero(top_share_mask(scores, top_share))
    selected = selected[np.argsort(-scores[selected], kind="stable")]
    reasons = top_reasons(
        booster,
        frame.iloc[selected],
        feature_specs,
        readable_names,
        k=k,
        chunk_size=chunk_size,
        num_threads=num_threads,
        only_positive=only_positive,
    )
    return TopShareExplanations(reasons=reasons, customers=len(frame), explained=len(selected))
